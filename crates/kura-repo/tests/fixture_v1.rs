//! A repository written by kura's format version 1, kept in the tree
//! (tests/fixtures/repo-v1): every later kura must open it, list it,
//! restore it byte for byte and verify it clean. If this test fails, a
//! change broke users' existing backups.
//!
//! The fixture was made once by `write_the_fixture` below (ignored; run it
//! with `--ignored` only to make a fixture for a new format version, never
//! to "fix" this one).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kura_format::clock::ManualClock;
use kura_format::crypto::KdfParams;
use kura_repo::backup::{backup, BackupOptions};
use kura_repo::restore::{restore, RestoreOptions};
use kura_repo::verify::{verify, ReadData, VerifyOptions};
use kura_repo::{InitOptions, Repository};
use kura_store::LocalStore;

const PASSWORD: &[u8] = b"kura-fixture-v1";
/// Where the fixture's files were when they were backed up: the snapshot
/// records this path.
const SOURCE: &str = "/tmp/kura-fixture-v1-src";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repo-v1")
}

/// The files the fixture holds, by path under [`SOURCE`].
fn files() -> Vec<(&'static str, Vec<u8>)> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let noise: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    vec![
        ("etc/app.conf", b"workers = 4\nlisten = 127.0.0.1:8080\n".to_vec()),
        ("data/blob.bin", noise.clone()),
        ("data/again.bin", noise),
        ("data/empty", Vec::new()),
        ("logs/app.log", "GET / 200\n".repeat(5000).into_bytes()),
    ]
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn a_version_1_repository_opens_restores_byte_for_byte_and_verifies_clean() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("repo");
    copy_dir(&fixture(), &copy);
    let repo = Arc::new(Repository::open(Arc::new(LocalStore::new(&copy)), PASSWORD).await.unwrap());
    assert_eq!(repo.config().version, 1);

    let (snaps, bad) = repo.snapshots().await.unwrap();
    assert!(bad.is_empty(), "{bad:?}");
    let [(_, snap)] = snaps.as_slice() else { panic!("one snapshot: {snaps:?}") };
    assert_eq!(snap.hostname, "fixture");
    assert_eq!(snap.paths, [SOURCE]);
    assert_eq!(snap.time, "2026-12-01T02:00:00Z".parse::<DateTime<Utc>>().unwrap());

    let out = dir.path().join("out");
    let r = restore(&repo, snap.tree, &out, &RestoreOptions::default(), Default::default()).await.unwrap();
    assert!(r.failed.is_empty(), "{:?}", r.failed);
    let base = out.join(SOURCE.trim_start_matches('/'));
    for (name, content) in files() {
        assert_eq!(std::fs::read(base.join(name)).unwrap(), content, "{name}");
    }

    let checked =
        verify(&repo, &VerifyOptions { read_data: ReadData::All }, Default::default()).await.unwrap();
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    assert_eq!(checked.snapshots, 1);
}

#[tokio::test]
#[ignore = "makes the fixture; run only for a new format version"]
async fn write_the_fixture() {
    let src = Path::new(SOURCE);
    let _ = std::fs::remove_dir_all(src);
    for (name, content) in files() {
        std::fs::create_dir_all(src.join(name).parent().unwrap()).unwrap();
        std::fs::write(src.join(name), content).unwrap();
    }
    let dest = fixture();
    assert!(!dest.exists(), "{} exists: a kept fixture is never rewritten", dest.display());
    let clock = Arc::new(ManualClock::new("2026-12-01T02:00:00Z".parse().unwrap()));
    // The smallest packs, so that the fixture has several.
    let opts = InitOptions { kdf: KdfParams::insecure_for_tests(), pack_size: 1 << 20, ..Default::default() };
    let repo = Repository::init(Arc::new(LocalStore::new(&dest)), PASSWORD, &opts).await.unwrap();
    let repo = Arc::new(repo.with_clock(clock));
    let opts = BackupOptions { hostname: "fixture".into(), username: "kura".into(), ..Default::default() };
    backup(&repo, &[src.to_path_buf()], &opts, Default::default()).await.unwrap();
    std::fs::remove_dir_all(src).unwrap();
}
