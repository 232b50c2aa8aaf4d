#![no_main]
// The body lives in kura_format::fuzz, shared with the stable smoke run.
kura_fuzz::target!(objects_manifest);
