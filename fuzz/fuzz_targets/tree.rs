#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tree) = kura_format::tree::Tree::decode(data) {
        for n in &tree.nodes {
            let name = n.name_bytes().expect("validated");
            assert!(!name.is_empty() && !name.contains(&b'/') && name != b".." && name != b".");
        }
    }
});
