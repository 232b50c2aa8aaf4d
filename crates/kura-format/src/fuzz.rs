//! The bodies of the fuzz targets, shared by `fuzz/` (cargo-fuzz, by hand)
//! and by the stable, time-bounded mutation run in `tests/fuzz_smoke.rs`
//! (in CI). Each takes arbitrary bytes; any panic is a bug, and so is
//! anything that decodes but breaks the invariant the target states.
use std::sync::OnceLock;

use crate::crypto::MasterKey;

/// The key that sealed inputs are opened with; the smoke run seals its
/// seeds with it so mutations reach the decoders behind the seal.
pub fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(MasterKey::random)
}

pub fn config(data: &[u8]) {
    if let Ok(c) = crate::config::RepoConfig::decode(data) {
        assert!(c.chunker.validate().is_ok(), "a decoded config has valid chunker bounds");
    }
}

pub fn index(data: &[u8]) {
    if let Ok(idx) = crate::index::IndexFile::decode(data) {
        // What decodes must encode back to the same bytes.
        assert_eq!(idx.encode(), data);
    }
}

pub fn key_file(data: &[u8]) {
    if let Ok(k) = crate::key::KeyFile::decode(data) {
        // Unwrapping runs only at cheap costs; the decoder bounds the costs
        // a crafted file may demand.
        if k.kdf.memory_kib <= 1024 && k.kdf.iterations <= 2 {
            let _ = k.unwrap_master(b"fuzz");
        }
    }
}

pub fn pack(data: &[u8]) {
    if let Ok(entries) = crate::pack::read_header(key(), data) {
        let used: u64 = entries.iter().map(|e| u64::from(e.length)).sum();
        assert!(used <= data.len() as u64, "a pack's blobs fit in the pack");
    }
}

pub fn pack_header(data: &[u8]) {
    let _ = crate::pack::decode_header(data);
}

pub fn sealed(data: &[u8]) {
    let k = key();
    let _ = k.open_object(data, "fuzz");
    let id = k.blob_id(data);
    let _ = k.open_blob(data, crate::BlobType::Data, &id, 1 << 20);
}

pub fn snapshot(data: &[u8]) {
    let _ = crate::snapshot::Snapshot::decode(data);
    let _ = crate::snapshot::Snapshot::open(key(), data);
}

pub fn tree(data: &[u8]) {
    if let Ok(tree) = crate::tree::Tree::decode(data) {
        for n in &tree.nodes {
            let name = n.name_bytes().expect("validated");
            assert!(!name.is_empty() && !name.contains(&b'/') && name != b".." && name != b".");
        }
    }
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("index", index),
    ("key_file", key_file),
    ("pack", pack),
    ("pack_header", pack_header),
    ("sealed", sealed),
    ("snapshot", snapshot),
    ("tree", tree),
];
