#![no_main]
use kura_format::crypto::MasterKey;
use std::sync::OnceLock;

// A whole pack: trailer length, sealed header, blob accounting.
static KEY: OnceLock<MasterKey> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = KEY.get_or_init(MasterKey::random);
    let _ = kura_format::pack::read_header(key, data);
});
