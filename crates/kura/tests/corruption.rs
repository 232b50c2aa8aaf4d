//! Damage to every kind of repository file is detected, traced to the
//! snapshots and files it affects, and never turns into wrong bytes on
//! restore.
mod common;

use std::path::{Path, PathBuf};

use common::*;

fn largest_pack(repo: &str) -> PathBuf {
    files_under(&Path::new(repo).join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap()
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let at = at.min(b.len() - 1);
    b[at] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

/// A repository with one snapshot of a big file and a small one.
fn setup() -> (Kura, PathBuf, String) {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), noise(6 << 20, 42)).unwrap();
    std::fs::write(src.join("small.txt"), b"intact").unwrap();
    let id = k.backup(&[&src]);
    (k, src, id)
}

fn verify_damaged(k: &Kura, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["verify", "--json"];
    a.extend_from_slice(args);
    let out = k.run(&a);
    assert_eq!(out.status.code(), Some(4), "verify must fail: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn affected_paths(v: &serde_json::Value) -> Vec<String> {
    v["report"]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["path"].as_str().unwrap().to_string())
        .collect()
}

fn assert_restore_skips_big_keeps_small(k: &Kura, src: &Path) {
    let target = k.path("out");
    let out = k.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("big.bin"), "the lost file is named: {}", stderr(&out));
    let root = restored(&target, src);
    assert!(!root.join("big.bin").exists(), "no wrong or partial bytes under the real name");
    assert_eq!(std::fs::read(root.join("small.txt")).unwrap(), b"intact");
}

#[test]
fn flipped_bit_in_a_pack_is_found_by_read_data_and_never_restored() {
    let (k, src, id) = setup();
    let pack = largest_pack(&k.repo);
    flip(&pack, std::fs::metadata(&pack).unwrap().len() as usize / 2);
    // Structure alone cannot see inside packs; reading the data does.
    let v = verify_damaged(&k, &["--read-data"]);
    let msg = v["report"]["errors"].to_string();
    assert!(msg.contains(pack.file_name().unwrap().to_str().unwrap()), "names the pack: {msg}");
    let affected = affected_paths(&v);
    assert!(affected.iter().any(|p| p.ends_with("src/big.bin")), "{affected:?}");
    assert!(!affected.iter().any(|p| p.ends_with("small.txt")), "{affected:?}");
    assert_eq!(v["report"]["affected"][0]["snapshot"], id[..8]);
    assert_restore_skips_big_keeps_small(&k, &src);
    // dump refuses too, and writes nothing wrong.
    let d = k.run(&["dump", "latest", &format!("{}/big.bin", src.display())]);
    assert!(!d.status.success());
}

#[test]
fn truncated_pack_is_found_by_structure_check() {
    let (k, src, _) = setup();
    let pack = largest_pack(&k.repo);
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(len / 3).unwrap();
    let v = verify_damaged(&k, &[]);
    assert!(v["report"]["errors"].to_string().contains("truncated"), "{v}");
    assert!(affected_paths(&v).iter().any(|p| p.ends_with("big.bin")));
    assert_restore_skips_big_keeps_small(&k, &src);
}

#[test]
fn missing_pack_is_found_by_structure_check() {
    let (k, _src, _) = setup();
    let pack = largest_pack(&k.repo);
    std::fs::remove_file(&pack).unwrap();
    let v = verify_damaged(&k, &[]);
    assert!(v["report"]["errors"].to_string().contains("pack missing"), "{v}");
    let affected = affected_paths(&v);
    assert!(affected.iter().any(|p| p.ends_with("big.bin")), "{affected:?}");
}

#[test]
fn corrupt_index_file_is_reported_with_what_it_hides() {
    let (k, _src, _) = setup();
    let idx = files_under(&Path::new(&k.repo).join("index"));
    for f in &idx {
        flip(f, 30);
    }
    let v = verify_damaged(&k, &[]);
    let errors = v["report"]["errors"].to_string();
    assert!(errors.contains("index/"), "{errors}");
    assert!(errors.contains("failed authentication") || errors.contains("does not match"), "{errors}");
    let out = k.run(&["prune", "--grace", "0s"]);
    assert_eq!(out.status.code(), Some(1), "prune refuses to guess with an unreadable index");
    assert!(stderr(&out).contains("will not delete anything"), "{}", stderr(&out));
    assert_eq!(files_under(&Path::new(&k.repo).join("data")).len(), 2, "no pack was deleted");
    // What reads the index says the fix: rebuild it from the packs.
    let out = k.run(&["restore", "latest", "--target", k.path("out").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(stderr(&out).contains("kura repair index"), "{}", stderr(&out));
}

#[test]
fn corrupt_snapshot_is_named_and_others_still_list() {
    let (k, src, first) = setup();
    std::fs::write(src.join("small.txt"), b"second version").unwrap();
    let second = k.backup(&[&src]);
    let path = Path::new(&k.repo).join("snapshots").join(&first);
    flip(&path, 40);
    let out = k.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(stderr(&out).contains(&first[..8]), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&second[..8]));
    let v = verify_damaged(&k, &[]);
    assert!(v["report"]["errors"].to_string().contains(&first), "{v}");
    let p = k.run(&["prune"]);
    assert_eq!(p.status.code(), Some(1), "prune refuses while a snapshot is unreadable");
}

#[test]
fn corrupt_tree_blob_names_the_directory() {
    let (k, src, _) = setup();
    // Trees live in their own, small packs; the first tree written is the
    // deepest directory's, `src`.
    let packs = files_under(&Path::new(&k.repo).join("data"));
    let tree_pack = packs.iter().min_by_key(|p| std::fs::metadata(p).unwrap().len()).unwrap();
    flip(tree_pack, 30);
    let v = verify_damaged(&k, &["--read-data"]);
    assert!(v["report"]["errors"].to_string().contains("tree"), "{v}");
    assert_eq!(affected_paths(&v), vec![src.display().to_string()], "the damaged directory is named: {v}");
    // An unreadable tree is damage: exit 4, as README says.
    let out = k.run(&["restore", "latest", "--target", k.path("out").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
}

#[test]
fn corrupt_key_file_and_config_fail_clearly() {
    let (k, _src, _) = setup();
    let key = files_under(&Path::new(&k.repo).join("keys")).pop().unwrap();
    let original = std::fs::read(&key).unwrap();
    std::fs::write(&key, &original[..original.len() / 2]).unwrap();
    let out = k.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(11), "{}", stderr(&out));
    assert!(stderr(&out).contains("unreadable key file"), "{}", stderr(&out));
    std::fs::write(&key, &original).unwrap();
    k.ok(&["snapshots"]);

    std::fs::write(Path::new(&k.repo).join("config"), b"{ not json").unwrap();
    let out = k.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("config is corrupt"), "{}", stderr(&out));
}

#[test]
fn repair_index_rebuilds_a_damaged_index_from_the_packs() {
    let (k, src, _) = setup();
    let index_dir = Path::new(&k.repo).join("index");
    for f in files_under(&index_dir) {
        flip(&f, 30);
    }
    verify_damaged(&k, &[]);
    let r = k.json(&["repair", "index"]);
    assert!(r["packs_read"].as_u64().unwrap() >= 2, "{r}");
    assert!(r["index_files_removed"].as_u64().unwrap() >= 1, "{r}");
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let target = k.path("out");
    k.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}
