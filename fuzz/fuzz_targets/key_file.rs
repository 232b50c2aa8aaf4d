#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(k) = kura_format::key::KeyFile::decode(data) {
        // Decoding is what is fuzzed; unwrapping runs only at cheap KDF
        // costs (the decoder bounds the costs a crafted file may demand).
        if k.kdf.memory_kib <= 1024 && k.kdf.iterations <= 2 {
            let _ = k.unwrap_master(b"fuzz");
        }
    }
});
