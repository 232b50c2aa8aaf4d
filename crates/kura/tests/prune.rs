//! Forget and the two-phase prune, alone and beside running backups.
mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use kura_testkit::MotoServer;

fn pack_count(repo: &str) -> usize {
    let mut n = 0;
    for d in std::fs::read_dir(Path::new(repo).join("data")).unwrap().flatten() {
        n += std::fs::read_dir(d.path()).unwrap().count();
    }
    n
}

#[test]
fn forgotten_data_is_marked_then_deleted_and_the_rest_survives() {
    let k = Kura::new();
    k.init();
    let (a, b) = (k.path("a"), k.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("x.bin"), noise(3 << 20, 1)).unwrap();
    std::fs::write(b.join("y.bin"), noise(3 << 20, 2)).unwrap();
    let first = k.backup(&[&a]);
    let second = k.backup(&[&b]);
    let before = pack_count(&k.repo);
    k.ok(&["forget", &first[..8]]);
    let r1 = k.json(&["prune", "--grace", "0s"]);
    assert!(
        r1["packs_marked"].as_u64().unwrap() >= 2,
        "the data and tree packs of the forgotten snapshot: {r1}"
    );
    assert_eq!(r1["packs_deleted"], 0, "phase one only marks");
    assert_eq!(pack_count(&k.repo), before);
    let r2 = k.json(&["prune", "--grace", "0s"]);
    assert_eq!(r2["packs_deleted"], r1["packs_marked"], "{r2}");
    assert!(pack_count(&k.repo) < before);
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let target = k.path("out");
    k.ok(&["restore", &second, "--target", target.to_str().unwrap()]);
    assert_same_tree(&b, &restored(&target, &b));
    // A grace period that has not passed keeps everything.
    let r3 = k.json(&["prune", "--dry-run"]);
    assert_eq!(r3["packs_deleted"], 0);
}

#[test]
fn prune_repacks_partly_used_packs() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("keep.bin"), noise(1 << 20, 3)).unwrap();
    std::fs::write(src.join("drop.bin"), noise(4 << 20, 4)).unwrap();
    let first = k.backup(&[&src]);
    std::fs::remove_file(src.join("drop.bin")).unwrap();
    let second = k.backup(&[&src]);
    k.ok(&["forget", &first]);
    let r = k.json(&["prune", "--grace", "0s"]);
    assert_eq!(r["packs_repacked"], 1, "{r}");
    assert!(r["blobs_repacked"].as_u64().unwrap() >= 1, "{r}");
    k.json(&["prune", "--grace", "0s"]);
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let target = k.path("out");
    k.ok(&["restore", &second, "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

/// format.md §12.3–12.5: a backup that loaded the index before prune marked
/// a pack may still reference it; its live session holds the deletion back,
/// and once its snapshot exists the pack is used again and kept.
fn local() -> Kura {
    let k = Kura::new();
    k.init();
    k
}

#[test]
fn prune_keeps_pack_referenced_by_concurrent_backup() {
    concurrent_backup_is_held(&local(), 0, 0);
}

#[test]
fn a_backup_host_whose_clock_runs_an_hour_late_is_still_held() {
    // Judged by its own heartbeat, this backup's session would look an
    // hour stale, and the packs it reuses would be deleted under it.
    concurrent_backup_is_held(&local(), -3600, 0);
}

#[test]
fn a_prune_host_whose_clock_runs_an_hour_early_still_waits() {
    concurrent_backup_is_held(&local(), 0, 3600);
}

#[test]
fn clocks_an_hour_off_on_s3_lose_nothing() {
    // The S3 server's modification times are whole seconds: the same rules
    // on a coarser clock.
    let moto = MotoServer::start();
    moto.create_bucket("skew");
    for (backup_clock, prune_clock) in [(-3600, 0), (0, 3600)] {
        let k = Kura::with_repo(&format!("s3://skew/r{prune_clock}"), moto.env());
        k.init();
        concurrent_backup_is_held(&k, backup_clock, prune_clock);
    }
}

/// A slow backup reuses blobs of a pack that prune marks meanwhile; with the
/// backup's and prune's clocks off by the given seconds, the deletion still
/// waits for the backup, whose snapshot then verifies and restores.
fn concurrent_backup_is_held(k: &Kura, backup_clock: i64, prune_clock: i64) {
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let file = src.join("x.bin");
    std::fs::write(&file, noise(2 << 20, 7)).unwrap();
    let first = k.json(&["backup", "--stdin-name", "x.bin", "--command", &format!("cat {}", file.display())]);
    let first = first["id"].as_str().unwrap().to_string();
    let prune = || -> serde_json::Value {
        let out = k
            .cmd(&["prune", "--grace", "0s", "--json"])
            .env("KURA_TEST_CLOCK_OFFSET_SECS", prune_clock.to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // A slow backup of the same content: it loads the index now and finds
    // the blobs of x.bin there, but writes its snapshot only once the test
    // opens the gate, after both prunes below.
    let gate = k.path("gate");
    let slow = k
        .cmd(&[
            "backup",
            "--stdin-name",
            "x.bin",
            "--command",
            &format!("while [ ! -e {} ]; do sleep 0.05; done; cat {}", gate.display(), file.display()),
            "--json",
        ])
        .env("KURA_TEST_CLOCK_OFFSET_SECS", backup_clock.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until its session exists (it then loads the index at once), so
    // that the marking below happens after the backup has read the index.
    // On S3 there is no directory to watch: the session is written within
    // the process's first second.
    let sessions = Path::new(&k.repo).join("sessions");
    for _ in 0..200 {
        if k.repo.contains("://") || std::fs::read_dir(&sessions).map(|d| d.count() > 0).unwrap_or(false) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if k.repo.contains("://") {
        std::thread::sleep(Duration::from_millis(1500));
    }
    // Modification times may be whole seconds: keep the marking well after
    // the backup's start on any store's clock.
    std::thread::sleep(Duration::from_millis(2500));
    k.ok(&["forget", &first]);
    let mark = prune();
    assert!(mark["packs_marked"].as_u64().unwrap() >= 1, "{mark}");
    let held = prune();
    assert_eq!(held["packs_deleted"], 0, "the live backup session holds deletion back: {held}");
    assert!(held["markers_waiting"].as_u64().unwrap() >= 1, "{held}");

    std::fs::write(&gate, b"").unwrap();
    let out = slow.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = prune();
    assert!(r["packs_revived"].as_u64().unwrap() >= 1, "the reused pack is used again and kept: {r}");
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let dumped = k.cmd(&["dump", "latest", "x.bin"]).output().unwrap();
    assert!(dumped.stdout == std::fs::read(&file).unwrap());
}

#[test]
fn concurrent_backups_and_prune_lose_nothing() {
    let k = Kura::new();
    k.init();
    writers_and_pruner(&k);
}

#[test]
fn concurrent_backups_and_prune_on_s3_lose_nothing() {
    let moto = MotoServer::start();
    moto.create_bucket("busy");
    let k = Kura::with_repo("s3://busy/shared", moto.env());
    k.init();
    writers_and_pruner(&k);
}

/// Four hosts back up three times each while forget and prune run in a
/// loop; afterwards every snapshot verifies and restores byte for byte.
/// No two of them agree on the time: the hosts' clocks run an hour late,
/// ten minutes late, right, and half an hour early, and the pruning host's
/// an hour early, so every judgement of age must be made on the store's
/// clock (format.md §13).
fn writers_and_pruner(k: &Kura) {
    const CLOCKS: [i64; 4] = [-3600, -600, 0, 1800];
    const PRUNE_CLOCK: i64 = 3600;
    let dirs: Vec<_> = (0..4)
        .map(|i| {
            let d = k.path(&format!("host{i}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("own.bin"), noise(2 << 20, 10 + i)).unwrap();
            // Shared content: dedup across concurrent writers.
            std::fs::write(d.join("shared.bin"), noise(2 << 20, 99)).unwrap();
            d
        })
        .collect();
    let mut children = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let script = format!(
            "for n in 1 2 3; do {} backup {} --host host{i} --quiet || exit 1; done",
            env!("CARGO_BIN_EXE_kura"),
            d.display()
        );
        let mut c = std::process::Command::new("sh");
        c.args(["-c", &script]);
        for (key, val) in k.cmd(&[]).get_envs() {
            match val {
                Some(v) => c.env(key, v),
                None => c.env_remove(key),
            };
        }
        c.env("KURA_TEST_CLOCK_OFFSET_SECS", CLOCKS[i].to_string());
        children.push(c.spawn().unwrap());
    }
    // Prune (with forget of each host's oldest) while the backups run.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        let snaps = k.json(&["snapshots"]);
        if let Some(old) = snaps.as_array().unwrap().first() {
            let _ = k.run(&["forget", old["id"].as_str().unwrap()]);
        }
        let p = k
            .cmd(&["prune", "--grace", "0s"])
            .env("KURA_TEST_CLOCK_OFFSET_SECS", PRUNE_CLOCK.to_string())
            .output()
            .unwrap();
        assert!(p.status.success() || p.status.code() == Some(12), "{}", String::from_utf8_lossy(&p.stderr));
    }
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    k.ok(&["prune", "--grace", "0s"]);
    k.ok(&["prune", "--grace", "0s"]);
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let snaps = k.json(&["snapshots"]);
    assert!(snaps.as_array().unwrap().len() >= 8);
    for s in snaps.as_array().unwrap() {
        let id = s["id"].as_str().unwrap();
        let host: usize = s["hostname"].as_str().unwrap()[4..].parse().unwrap();
        let target = k.path(&format!("out-{id}"));
        k.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        assert_same_tree(&dirs[host], &restored(&target, &dirs[host]));
    }
}
