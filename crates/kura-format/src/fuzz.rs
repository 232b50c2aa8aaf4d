//! The bodies of the fuzz targets, shared by `fuzz/` (cargo-fuzz, by hand)
//! and by the stable, time-bounded mutation run in `tests/fuzz_smoke.rs`
//! (in CI). Each takes arbitrary bytes; any panic is a bug, and so is
//! anything that decodes but breaks the invariant the target states.
use std::sync::OnceLock;

use crate::config::{ChunkerParams, RepoConfig};
use crate::crypto::{KdfParams, MasterKey};
use crate::index::{IndexFile, IndexPack};
use crate::key::KeyFile;
use crate::pack::{encode_header, seal_trailer, PackEntry};
use crate::snapshot::Snapshot;
use crate::tree::{Node, NodeType, Tree};
use crate::BlobType;

/// The key that sealed inputs are opened with. It is fixed so that seeds
/// sealed by one process (the corpus `scripts/fuzz` writes) open in
/// another (the libFuzzer run), and mutations reach the decoders behind
/// the seal.
pub fn key() -> &'static MasterKey {
    static KEY: OnceLock<MasterKey> = OnceLock::new();
    KEY.get_or_init(|| MasterKey::from_bytes(&[0x5a; 96]).expect("96 bytes"))
}

pub fn config(data: &[u8]) {
    if let Ok(c) = crate::config::RepoConfig::decode(data) {
        assert!(c.chunker.validate().is_ok(), "a decoded config has valid chunker bounds");
    }
}

pub fn objects_manifest(data: &[u8]) {
    if let Ok(m) = crate::objects::Manifest::decode(data) {
        // What decodes holds only keys a store may write.
        assert!(m.objects.iter().all(|e| crate::objects::plain_key(&e.key)));
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

/// Valid encodings of every file type, by target name: the starting
/// corpus of both fuzz runs.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let key = key();
    let mut out =
        vec![("config", RepoConfig::new(ChunkerParams::default(), 16 << 20, 3, chrono::Utc::now()).encode())];
    out.push((
        "objects_manifest",
        br#"{"version":1,"source":"s3://exports/daily","objects":[{"key":"2026-11-22/orders.csv","path":"objects/2026-11-22/orders.csv","size":48213,"modified":1795312800,"content_type":"text/csv"},{"key":"a/b","path":"objects/a/b","size":0}]}"#.to_vec(),
    ));
    let content: Vec<&[u8]> = vec![b"hello", &[7u8; 3000], b""];
    let mut entries = Vec::new();
    let mut pack = Vec::new();
    for c in &content {
        let sealed = key.seal_blob(c, 3).expect("seed");
        entries.push(PackEntry {
            ty: BlobType::Data,
            id: key.blob_id(c),
            length: sealed.len() as u32,
            raw_length: c.len() as u32,
        });
        pack.extend_from_slice(&sealed);
        out.push(("sealed", sealed));
    }
    out.push(("pack_header", encode_header(&entries)));
    pack.extend_from_slice(&seal_trailer(key, &entries));
    out.push(("pack", pack));
    out.push(("index", IndexFile { packs: vec![IndexPack::of(key.blob_id(b"pack"), &entries)] }.encode()));
    let k = KeyFile::wrap(key, b"fuzz", KdfParams::insecure_for_tests(), "host", "user", chrono::Utc::now())
        .expect("seed");
    out.push(("key_file", k.encode()));
    let mut file = Node::new("a.txt", NodeType::File);
    file.size = Some(5);
    file.content = Some(vec![key.blob_id(b"hello")]);
    let mut dir = Node::new("dir", NodeType::Dir);
    dir.subtree = Some(key.blob_id(b"sub"));
    let mut link = Node::new("l", NodeType::Symlink);
    link.set_target_bytes(b"../x");
    let mut odd = Node::new("", NodeType::File);
    odd.set_name_bytes(b"\xffname");
    out.push(("tree", Tree { nodes: vec![file, dir, link, odd] }.encode()));
    let snap = Snapshot::new(key.blob_id(b"tree"), vec!["/srv/app".into()], chrono::Utc::now());
    out.push(("snapshot", serde_json::to_vec(&snap).expect("seed")));
    out.push(("snapshot", snap.seal(key).1));
    out
}

/// A fuzz target's body.
pub type Target = fn(&[u8]);

/// Every target by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("config", config),
    ("objects_manifest", objects_manifest),
    ("index", index),
    ("key_file", key_file),
    ("pack", pack),
    ("pack_header", pack_header),
    ("sealed", sealed),
    ("snapshot", snapshot),
    ("tree", tree),
];
