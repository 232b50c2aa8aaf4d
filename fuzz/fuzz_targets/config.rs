#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kura_format::config::RepoConfig::decode(data);
});
