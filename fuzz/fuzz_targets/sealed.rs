#![no_main]
use kura_format::crypto::MasterKey;
use std::sync::OnceLock;

static KEY: OnceLock<MasterKey> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let key = KEY.get_or_init(MasterKey::random);
    let _ = key.open_object(data, "fuzz");
    let id = key.blob_id(data);
    let _ = key.open_blob(data, kura_format::BlobType::Data, &id, 1 << 20);
});
