#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(idx) = kura_format::index::IndexFile::decode(data) {
        // What decodes must encode back to the same bytes.
        assert_eq!(idx.encode(), data);
    }
});
