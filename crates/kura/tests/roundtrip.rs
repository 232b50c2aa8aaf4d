//! Backup and restore round trips through the real binary, compared byte for
//! byte and by metadata.
mod common;

use common::*;

#[test]
fn backup_restore_round_trip_preserves_everything() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    let id = k.backup(&[&src]);
    let target = k.path("out");
    k.ok(&["restore", &id[..8], "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn files_spread_over_many_packs_and_shared_blobs_restore_exactly() {
    // Small chunks and 1 MiB packs: big files span several packs, the two
    // duplicate files share every blob, and restore, which goes pack by
    // pack, must put each blob at its offset in every file that holds it.
    let k = Kura::new();
    k.ok(&["init", "--pack-mib", "1", "--chunk-avg-kib", "64"]);
    let src = k.path("src");
    make_tree(&src);
    std::fs::write(src.join("data/huge.bin"), noise(9_000_000, 7)).unwrap();
    let id = k.backup(&[&src]);
    let packs = files_under(&std::path::Path::new(&k.repo).join("data")).len();
    assert!(packs >= 8, "the data spreads over many packs: {packs}");
    let target = k.path("out");
    k.ok(&["restore", &id[..8], "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn second_backup_skips_unchanged_files_and_stores_only_changes() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    let first = k.json(&["backup", src.to_str().unwrap()]);
    assert_eq!(first["summary"]["files_unchanged"], 0);
    let stored_first = first["summary"]["bytes_stored"].as_u64().unwrap();
    assert!(stored_first > 0);
    // The duplicate file is stored once: less than the sum of sizes.
    assert!(stored_first < first["summary"]["bytes"].as_u64().unwrap());

    std::fs::write(src.join("small.txt"), b"changed content, same inode\n").unwrap();
    let second = k.json(&["backup", src.to_str().unwrap()]);
    let s = &second["summary"];
    assert_eq!(s["files_changed"], 2, "small.txt and its hard link: {s}");
    assert!(s["files_unchanged"].as_u64().unwrap() >= 10, "{s}");
    // The changed file plus the trees on its path (a few KiB of JSON).
    assert!(s["bytes_new"].as_u64().unwrap() < 10_000, "only the change is new: {s}");

    let third = k.json(&["backup", src.to_str().unwrap()]);
    // Nothing under src changed, so no file and no tree of src is new. The
    // synthetic trees above src record their directories' metadata, and
    // /tmp's mtime moves whenever a concurrent test makes a temp dir: at
    // most one new tree per ancestor level.
    let ancestors = src.ancestors().count() as u64 - 1;
    let new = third["summary"]["blobs_new"].as_u64().unwrap();
    assert!(new <= ancestors, "nothing changed under src: {new} new blobs, {ancestors} ancestor levels");
    assert_eq!(third["summary"]["files_unchanged"], second["summary"]["files"], "{}", third["summary"]);

    let target = k.path("out");
    k.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn excludes_and_exclude_file_apply() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    let ex = k.path("excludes");
    std::fs::write(&ex, "# comment\n*.bin\n").unwrap();
    let deep = format!("{}/deep/**", src.display());
    k.ok(&[
        "backup",
        src.to_str().unwrap(),
        "-e",
        "*.sh",
        "-e",
        &deep,
        "--exclude-file",
        ex.to_str().unwrap(),
    ]);
    let listing = k.ok(&["ls", "latest"]);
    assert!(listing.contains("small.txt"));
    assert!(!listing.contains(".bin"), "{listing}");
    assert!(!listing.contains("tool.sh"), "{listing}");
    assert!(!listing.contains("deep/a"), "{listing}");
}

#[test]
fn ls_dump_and_include() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    k.backup(&[&src]);
    let big = format!("{}/data/big.bin", src.display());
    let out = k.cmd(&["dump", "latest", &big]).output().unwrap();
    assert!(out.status.success());
    assert!(out.stdout == std::fs::read(src.join("data/big.bin")).unwrap(), "dump gives the exact bytes");

    let entries = k.json(&["ls", "latest", &format!("{}/text", src.display())]);
    let paths: Vec<&str> = entries.as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.iter().any(|p| p.ends_with("text/log.txt")), "{paths:?}");

    let target = k.path("partial");
    k.ok(&[
        "restore",
        "latest",
        "--target",
        target.to_str().unwrap(),
        "--include",
        &format!("{}/text", src.display()),
    ]);
    let root = restored(&target, &src);
    assert!(root.join("text/log.txt").exists());
    assert!(!root.join("data").exists(), "only the included path is restored");

    let missing = k.run(&["dump", "latest", "/no/such/file"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not in snapshot"));
}

#[test]
fn restore_refuses_to_overwrite_unless_asked() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    k.backup(&[&src]);
    let target = k.path("out");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("precious"), b"keep me").unwrap();
    let out = k.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not empty"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"keep me");
    k.ok(&["restore", "latest", "--target", target.to_str().unwrap(), "--overwrite"]);
    assert_same_tree(&src, &restored(&target, &src));
    assert_eq!(std::fs::read(target.join("precious")).unwrap(), b"keep me", "unrelated files stay");
}

#[test]
fn stdin_and_command_streams() {
    let k = Kura::new();
    k.init();
    let data = noise(3_000_000, 9);
    let mut child = k
        .cmd(&["backup", "--stdin", "--stdin-name", "dump.sql", "--json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&data).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dumped = k.cmd(&["dump", "latest", "dump.sql"]).output().unwrap();
    assert!(dumped.stdout == data);

    k.ok(&["backup", "--command", "printf 'line one\\nline two\\n'", "--stdin-name", "cmd.txt"]);
    assert_eq!(k.cmd(&["dump", "latest", "cmd.txt"]).output().unwrap().stdout, b"line one\nline two\n");

    let before = k.snapshot_ids().len();
    let failed = k.run(&["backup", "--command", "echo partial; exit 3", "--stdin-name", "bad.txt"]);
    assert_eq!(failed.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("exited with"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
    assert_eq!(k.snapshot_ids().len(), before, "a failed command records no snapshot");
}

#[test]
fn json_listings_parse_and_carry_ids() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), b"a").unwrap();
    k.ok(&["backup", src.to_str().unwrap(), "--tag", "daily", "--host", "web-1"]);
    let snaps = k.json(&["snapshots"]);
    let s = &snaps[0];
    assert_eq!(s["hostname"], "web-1");
    assert_eq!(s["tags"][0], "daily");
    assert_eq!(s["id"].as_str().unwrap().len(), 64);
    assert!(k.json(&["snapshots", "--tag", "weekly"]).as_array().unwrap().is_empty());
    let keys = k.json(&["key", "list"]);
    assert_eq!(keys[0]["current"], true);
    let v = k.json(&["verify"]);
    assert_eq!(v["ok"], true);
}

#[test]
fn one_file_system_stays_on_the_first_filesystem() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(src.join("mnt")).unwrap();
    std::fs::write(src.join("here.txt"), b"same filesystem").unwrap();
    let _m = tmpfs(&src.join("mnt"), "1m");
    std::fs::write(src.join("mnt/elsewhere.txt"), b"another filesystem").unwrap();
    k.ok(&["backup", src.to_str().unwrap(), "-x"]);
    let listing = k.ok(&["ls", "latest"]);
    assert!(listing.contains("here.txt"), "{listing}");
    assert!(!listing.contains("elsewhere.txt"), "-x does not cross into the tmpfs: {listing}");
    k.ok(&["backup", src.to_str().unwrap()]);
    assert!(k.ok(&["ls", "latest"]).contains("elsewhere.txt"), "without -x it does");
}

#[test]
fn compression_choices_trade_size_and_mix_in_one_repository() {
    // Text-like data: words drawn at random, so each level compresses it
    // differently.
    let words =
        ["backup", "restore", "kura", "storehouse", "pack", "index", "chunk", "snapshot", "tree", "blob"];
    let mut rand = rng(0x5EED);
    let text: String =
        (0..600_000).map(|_| words[rand(words.len() as u64) as usize]).collect::<Vec<_>>().join(" ");
    let mut sizes = Vec::new();
    for choice in ["off", "fast", "auto", "max"] {
        let k = Kura::new();
        k.init();
        let src = k.path("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("words.txt"), &text).unwrap();
        let out = k
            .cmd(&["backup", src.to_str().unwrap(), "--quiet"])
            .env("KURA_COMPRESSION", choice)
            .output()
            .unwrap();
        assert!(out.status.success(), "{choice}: {}", stderr(&out));
        let data = std::path::Path::new(&k.repo).join("data");
        sizes.push(files_under(&data).iter().map(|f| std::fs::metadata(f).unwrap().len()).sum::<u64>());
        let target = k.path("out");
        k.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
        assert_same_tree(&src, &restored(&target, &src));
    }
    eprintln!("off, fast, auto, max: {sizes:?}");
    assert!(sizes[0] > text.len() as u64, "off stores the bytes as they are: {sizes:?}");
    assert!(sizes[0] > sizes[1] && sizes[1] > sizes[2] && sizes[2] > sizes[3], "{sizes:?}");

    // Blobs of different levels live side by side in one repository.
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    let first = k.ok(&["backup", src.to_str().unwrap(), "--compression", "fast", "--json"]);
    std::fs::write(src.join("words.txt"), &text).unwrap();
    k.ok(&["backup", src.to_str().unwrap(), "--compression", "19"]);
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    let out = k.path("first");
    k.ok(&["restore", first["id"].as_str().unwrap(), "--target", out.to_str().unwrap()]);
    std::fs::remove_file(src.join("words.txt")).unwrap();
    assert_same_tree(&src, &restored(&out, &src));

    let bad = k.run(&["backup", src.to_str().unwrap(), "--compression", "turbo"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--compression (or KURA_COMPRESSION): \"turbo\" is not a compression (use auto, off, fast, max, or a level from 1 to 22)"),
        "{}",
        stderr(&bad)
    );
}
