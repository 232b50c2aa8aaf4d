#![no_main]
// The body lives in kura_format::fuzz, shared with the stable smoke run.
libfuzzer_sys::fuzz_target!(|data: &[u8]| kura_format::fuzz::snapshot(data));
