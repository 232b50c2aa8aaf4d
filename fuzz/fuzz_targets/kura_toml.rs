#![no_main]
//! kura.toml as a user (or a careless operator) writes it: the parser and
//! the secret scan must return errors, never panic or allocate without
//! bound, whatever the text.
#[global_allocator]
static ALLOC: kura_fuzz::Bounded = kura_fuzz::Bounded;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = |k: &str| (k == "PW" || k == "R2_KEY_ID").then(|| "value".to_string());
        if let Ok(cfg) = kura_policy::Config::parse(text, &env) {
            for (name, t) in &cfg.targets {
                // Unless its repository names a variable that is not set:
                // then using the target is the error that says so.
                let waiting = cfg.unresolved_named("repository", &t.repository).is_some();
                assert!(cfg.target(name).is_ok() || waiting, "a parsed target is found by its name");
            }
        }
        let _ = kura_policy::literal_secrets(text);
    }
});
