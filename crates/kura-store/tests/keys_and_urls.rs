//! Property tests of what a repository or an object_store manifest hands a
//! store: keys can never name a place outside the store's root, and no
//! repository URL makes the parser panic.
use std::path::{Component, Path};

use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just(".".to_string()),
        Just("..".to_string()),
        "[a-z0-9%._-]{1,6}",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    /// A key the stores accept, joined onto any root, stays below it.
    #[test]
    fn an_accepted_key_never_leaves_the_root(parts in prop::collection::vec(segment(), 1..6), lead in any::<bool>()) {
        let key = format!("{}{}", if lead { "/" } else { "" }, parts.join("/"));
        if kura_store::check_key(&key).is_ok() {
            let root = Path::new("/srv/bucket");
            let joined = root.join(&key);
            prop_assert!(joined.starts_with(root), "{key:?}");
            prop_assert!(
                joined.components().skip(root.components().count()).all(|c| matches!(c, Component::Normal(_))),
                "{key:?}"
            );
        }
    }

    #[test]
    fn repository_urls_never_panic_the_parser(s in any::<String>()) {
        let _ = kura_store::StoreUrl::parse(&s);
    }

    #[test]
    fn url_shaped_garbage_never_panics_the_parser(
        scheme in prop_oneof![Just("s3"), Just("gcs"), Just("azblob"), Just("file"), Just("")],
        rest in "[a-z0-9/?&=:@%.#-]{0,40}",
    ) {
        let _ = kura_store::StoreUrl::parse(&format!("{scheme}://{rest}"));
    }
}

#[test]
fn keys_that_would_escape_are_refused() {
    for bad in ["../outside/x", "a/../../x", "/etc/cron.d/x", "a//b", "./c", "", "a/.", "x\0y"] {
        assert!(kura_store::check_key(bad).is_err(), "{bad:?}");
    }
    for good in ["exports/daily/2025-11-03.json", "a", "a/b.c/..d", "%2E%2E"] {
        assert!(kura_store::check_key(good).is_ok(), "{good:?}");
    }
}
