//! Attacks on kura, each named for what it tries (docs/reliability.md,
//! "Threat model and attacks tried"): a hostile repository writer, a local
//! user racing a root backup or restore, and awkward but legitimate inputs.
//! Every test runs the real binary; races are made deterministic with the
//! restore's test gate, and tried by a real racing process where feasible.
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Writes a snapshot of an object_store target whose manifest names `keys`,
/// as someone holding the repository's password could.
fn forge_object_snapshot(k: &Kura, target: &str, keys: &[&str]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store: Arc<dyn kura_store::Store> = Arc::new(kura_store::LocalStore::new(&k.repo));
        let repo = Arc::new(kura_repo::Repository::open(store, PASSWORD.as_bytes()).await.unwrap());
        let objects: Vec<serde_json::Value> = keys
            .iter()
            .enumerate()
            .map(|(i, key)| serde_json::json!({ "key": key, "path": format!("objects/o{i}"), "size": 6 }))
            .collect();
        let manifest = serde_json::json!({ "version": 1, "source": "forged", "objects": objects });
        let mut streams = vec![kura_repo::backup::Stream::new(
            "objects.json",
            Box::new(std::io::Cursor::new(serde_json::to_vec(&manifest).unwrap())),
        )];
        for i in 0..keys.len() {
            streams.push(kura_repo::backup::Stream::new(
                format!("objects/o{i}"),
                Box::new(std::io::Cursor::new(b"pwned\n".to_vec())),
            ));
        }
        let opts = kura_repo::backup::BackupOptions {
            target: Some(target.into()),
            source: Some("object_store".into()),
            hostname: "attacker".into(),
            ..Default::default()
        };
        kura_repo::backup::backup_streams(&repo, streams, &opts, Default::default()).await.unwrap();
    });
}

#[test]
fn hostile_manifest_keys_never_leave_the_destination() {
    let mut k = Kura::new();
    let bucket = k.path("bucket");
    std::fs::create_dir_all(bucket.join("exports")).unwrap();
    config(&mut k, &format!("[target.exports]\ntype = \"object_store\"\nurl = \"{}\"\n", bucket.display()));
    k.init();
    let outside = k.path("outside");
    let abs = k.path("abs-target");
    let keys = ["../outside/x", "exports/../../outside/y", &format!("{}/z", abs.display()), "a//b", "./c"];
    forge_object_snapshot(&k, "exports", &keys);
    let into = k.path("copy");
    for args in [
        vec!["restore", "--target", "exports", "--dry-run"],
        vec!["restore", "--target", "exports", "--yes"],
        vec!["restore", "--target", "exports", "--into", into.to_str().unwrap(), "--yes"],
    ] {
        let out = k.run(&args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "a hostile manifest is damage: {args:?}: {e}");
        assert!(e.contains("object keys that would leave the destination"), "{args:?}: {e}");
        assert!(e.contains("../outside/x"), "the keys are named: {e}");
    }
    assert!(!outside.exists() && !abs.exists(), "nothing was written outside the destination");
    assert!(!into.exists() || std::fs::read_dir(&into).unwrap().next().is_none(), "nothing written at all");
    let listed: Vec<_> = walk(&bucket);
    assert!(listed.iter().all(|p| !p.ends_with("x")), "{listed:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// A tree with a directory `sub` holding files, and a place outside it.
fn victim_tree(k: &Kura) -> std::path::PathBuf {
    let src = k.path("src");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("sub/authorized_keys"), b"ssh-ed25519 AAAA restored\n").unwrap();
    std::fs::write(src.join("sub/deeper/cron"), b"* * * * * restored\n").unwrap();
    std::fs::write(src.join("top.txt"), b"top\n").unwrap();
    src
}

/// A restore of the victim tree into an empty target, started and held
/// at the gate once its directories exist: (kura, source, target, an
/// outside directory, the gate, the running restore).
fn restore_held_at_gate() -> (Kura, PathBuf, PathBuf, PathBuf, PathBuf, std::process::Child) {
    let k = Kura::new();
    k.init();
    let src = victim_tree(&k);
    let id = k.backup(&[&src]);
    let target = k.path("target");
    let outside = k.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let gate = k.path("gate");
    let child = k
        .cmd(&["restore", &id, "--target", target.to_str().unwrap()])
        .env("KURA_TEST_RESTORE_GATE", &gate)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    (k, src, target, outside, gate, child)
}

#[test]
fn directory_swapped_for_a_symlink_mid_restore_is_never_written_through() {
    let (k, src, target, outside, gate, child) = restore_held_at_gate();
    // The restore made its directories and waits: the racing user swaps
    // one for a symlink to a place of their choosing.
    wait_at_gate(&gate);
    let sub = restored(&target, &src).join("sub");
    std::fs::rename(&sub, k.path("moved-away")).unwrap();
    std::os::unix::fs::symlink(&outside, &sub).unwrap();
    std::fs::write(&gate, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let e = stderr(&out);
    assert!(walk(&outside).is_empty(), "nothing was written through the symlink: {:?}", walk(&outside));
    // The files went into the directory restore made (through its handle),
    // wherever the user moved it, or are reported as not restored; the
    // directory is still restore's own, private until the end.
    let moved = k.path("moved-away");
    let landed = moved.join("authorized_keys").exists();
    match out.status.code() {
        Some(0) => assert!(landed, "{e}"),
        Some(5) => assert!(e.contains("authorized_keys"), "the file is named as not restored: {e}"),
        other => panic!("exit {other:?}: {e}"),
    }
    assert!(walk(&moved).iter().all(|p| !p.to_string_lossy().contains(".kura-restore")));
    assert_eq!(std::fs::read(restored(&target, &src).join("top.txt")).unwrap(), b"top\n");
}

#[test]
fn names_planted_in_an_empty_target_mid_restore_are_replaced_never_written_through() {
    // Into an empty target files are created straight under their real
    // names, never over anything: a name a racing user took since is
    // written aside and renamed over, as into a full target.
    let (_k, src, target, outside, gate, child) = restore_held_at_gate();
    std::fs::write(outside.join("victim"), b"not yours\n").unwrap();
    wait_at_gate(&gate);
    assert!(target.join(".kura-restore-incomplete").is_file(), "the marker stands while files are written");
    let base = restored(&target, &src);
    std::os::unix::fs::symlink(outside.join("victim"), base.join("top.txt")).unwrap();
    std::fs::hard_link(outside.join("victim"), base.join("sub/authorized_keys")).unwrap();
    std::fs::write(&gate, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"not yours\n");
    assert!(!std::fs::symlink_metadata(base.join("top.txt")).unwrap().file_type().is_symlink());
    assert_same_tree(&src, &base);
    assert!(!target.join(".kura-restore-incomplete").exists(), "the marker goes when the restore ends");
}

#[test]
fn a_racing_process_swapping_symlinks_never_gets_a_write_outside() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    for d in 0..20 {
        std::fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..20 {
            std::fs::write(src.join(format!("d{d}/f{f}")), noise(2000, (d * 100 + f) as u64)).unwrap();
        }
    }
    let id = k.backup(&[&src]);
    let outside = k.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    for round in 0..6 {
        let target = k.path(&format!("t{round}"));
        let base = restored(&target, &src);
        let stop = Arc::new(AtomicBool::new(false));
        let racer = {
            let (stop, base, outside) = (stop.clone(), base.clone(), outside.clone());
            std::thread::spawn(move || {
                let mut swaps = 0;
                while !stop.load(Ordering::Relaxed) {
                    for d in 0..20 {
                        let dir = base.join(format!("d{d}"));
                        let aside = base.join(format!(".aside{d}"));
                        if std::fs::rename(&dir, &aside).is_ok() {
                            let _ = std::os::unix::fs::symlink(&outside, &dir);
                            std::thread::yield_now();
                            let _ = std::fs::remove_file(&dir);
                            let _ = std::fs::rename(&aside, &dir);
                            swaps += 1;
                        }
                    }
                }
                swaps
            })
        };
        // Half the rounds under a low open-file limit: directory handles are
        // then dropped and opened again by name, which is what a racer aims at.
        let script = format!(
            "{}exec {} restore {id} --target {}",
            if round % 2 == 1 { "ulimit -n 40 && " } else { "" },
            env!("CARGO_BIN_EXE_kura"),
            target.display()
        );
        let out = sh(&k, &script);
        stop.store(true, Ordering::Relaxed);
        racer.join().unwrap();
        assert!(matches!(out.status.code(), Some(0) | Some(5)), "{}", stderr(&out));
        assert!(walk(&outside).is_empty(), "round {round}: written through a symlink: {:?}", walk(&outside));
    }
}

#[test]
fn a_directory_that_cannot_be_made_skips_its_whole_subtree() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/one"), b"1").unwrap();
    std::fs::create_dir_all(src.join("b/c/d")).unwrap();
    for i in 0..30 {
        std::fs::write(src.join(format!("b/c/d/f{i}")), b"x").unwrap();
    }
    let id = k.backup(&[&src]);
    // A filesystem with room for only a few inodes: some directory's
    // mkdir fails, and its subtree must be skipped and reported, not tried.
    let target = k.path("small");
    let _mount = tmpfs_with(&target, &format!("size=1m,nr_inodes={}", inodes_for(&src)));
    let out = k.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{e}");
    assert!(e.contains("cannot make the directory"), "{e}");
    assert!(e.contains("entries below it were skipped"), "{e}");
    assert!(!e.contains("f29"), "children of a lost directory are not tried one by one: {e}");
}

/// Inodes for a tmpfs that holds the path down to `src/b` but not `c`: its
/// root, one per component of `src`, then `a` and `b`.
fn inodes_for(src: &Path) -> usize {
    src.components().count() + 2
}

/// A repository, a root-only secret, and a user's folder with one file in
/// it, which the tests swap for a symlink to the secret.
fn root_secret_and_user_file() -> (Kura, std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let k = Kura::new();
    k.init();
    let secret = k.path("secret");
    std::fs::write(&secret, b"ROOT-ONLY-SECRET").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let src = k.path("home");
    std::fs::create_dir_all(&src).unwrap();
    let f = src.join("notes.txt");
    std::fs::write(&f, b"user notes").unwrap();
    (k, secret, src, f)
}

/// Waits until a test gate reports that the backup or restore is paused
/// at it.
fn wait_at_gate(gate: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !gate.with_extension("waiting").exists() {
        assert!(Instant::now() < deadline, "the run never reached its gate");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_file_swapped_for_a_symlink_to_a_root_only_file_never_leaks_it() {
    let (k, secret, src, f) = root_secret_and_user_file();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, f, secret) = (stop.clone(), f.clone(), secret.clone());
        std::thread::spawn(move || {
            let tmp = f.with_extension("swap");
            while !stop.load(Ordering::Relaxed) {
                let _ = std::os::unix::fs::symlink(&secret, &tmp);
                let _ = std::fs::rename(&tmp, &f);
                std::thread::yield_now();
                let _ = std::fs::write(&tmp, b"user notes");
                let _ = std::fs::rename(&tmp, &f);
            }
        })
    };
    let mut ids = Vec::new();
    for _ in 0..25 {
        let out = k.run(&["backup", src.to_str().unwrap(), "--json"]);
        assert!(matches!(out.status.code(), Some(0) | Some(3)), "{}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push(v["id"].as_str().unwrap().to_string());
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
    for id in ids {
        let dumped = k.cmd(&["dump", &id, f.to_str().unwrap()]).output().unwrap();
        assert!(
            !String::from_utf8_lossy(&dumped.stdout).contains("ROOT-ONLY-SECRET"),
            "snapshot {id} holds the root-only file's bytes"
        );
    }
}

#[test]
fn a_fifo_swapped_in_during_backup_does_not_hang_it() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = src.join("data.bin");
    std::fs::write(&f, b"data").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let racer = {
        let (stop, f) = (stop.clone(), f.clone());
        std::thread::spawn(move || {
            let tmp = f.with_extension("swap");
            while !stop.load(Ordering::Relaxed) {
                let _ = std::process::Command::new("mkfifo").arg(&tmp).status();
                let _ = std::fs::rename(&tmp, &f);
                let _ = std::fs::write(&tmp, b"data");
                let _ = std::fs::rename(&tmp, &f);
            }
        })
    };
    for _ in 0..15 {
        let mut child = k.cmd(&["backup", src.to_str().unwrap(), "--quiet"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the backup hung on a FIFO");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(matches!(status.code(), Some(0) | Some(3)), "{status}");
    }
    stop.store(true, Ordering::Relaxed);
    racer.join().unwrap();
}

#[test]
fn a_file_growing_while_read_is_recorded_with_a_warning_and_exit_3() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let log = src.join("app.log");
    std::fs::write(&log, noise(40 << 20, 5)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, log) = (stop.clone(), log.clone());
        std::thread::spawn(move || {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
            while !stop.load(Ordering::Relaxed) {
                f.write_all(b"a line of log\n").unwrap();
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let out = k.run(&["backup", src.to_str().unwrap()]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert!(e.contains("changed while it was read"), "{e}");
}

#[test]
fn fifos_and_sockets_in_a_healthy_snapshot_are_not_damage() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("plain"), b"plain").unwrap();
    assert!(std::process::Command::new("mkfifo").arg(src.join("pipe")).status().unwrap().success());
    let _sock = std::os::unix::net::UnixListener::bind(src.join("app.sock")).unwrap();
    let id = k.backup(&[&src]);
    let target = k.path("t");
    let out = k.run(&["restore", &id, "--target", target.to_str().unwrap()]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "skipped on purpose, with a warning, never damage: {e}");
    assert!(e.contains("app.sock") && e.contains("socket"), "{e}");
    let pipe = restored(&target, &src).join("pipe");
    let m = std::fs::symlink_metadata(&pipe).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()), "the FIFO is restored");
    assert_eq!(std::fs::read(restored(&target, &src).join("plain")).unwrap(), b"plain");
}

/// Runs a shell script with kura's test environment.
fn sh(k: &Kura, script: &str) -> std::process::Output {
    let mut c = std::process::Command::new("sh");
    c.args(["-c", script]);
    for (key, val) in k.cmd(&[]).get_envs() {
        match val {
            Some(v) => c.env(key, v),
            None => c.env_remove(key),
        };
    }
    c.output().unwrap()
}

#[test]
fn restore_of_many_files_under_a_low_open_file_limit() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..2000 {
        std::fs::write(src.join(format!("f{i:04}")), format!("file {i}\n")).unwrap();
    }
    let id = k.backup(&[&src]);
    let target = k.path("t");
    // Hard and soft limits of 64: kura cannot raise it, and must not need to.
    let script = format!(
        "ulimit -n 64 && exec {} restore {id} --target {}",
        env!("CARGO_BIN_EXE_kura"),
        target.display()
    );
    let out = sh(&k, &script);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn restore_temp_files_and_new_directories_are_private_until_done() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(src.join("open")).unwrap();
    std::fs::set_permissions(src.join("open"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("open/secret"), b"0600 bytes").unwrap();
    std::fs::set_permissions(src.join("open/secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let id = k.backup(&[&src]);
    let target = k.path("t");
    let gate = k.path("gate");
    let child = k
        .cmd(&["restore", &id, "--target", target.to_str().unwrap()])
        .env("KURA_TEST_RESTORE_GATE", &gate)
        .spawn()
        .unwrap();
    wait_at_gate(&gate);
    let open = restored(&target, &src).join("open");
    assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o777, 0o700, "private while files are written");
    std::fs::write(&gate, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(std::fs::metadata(&open).unwrap().mode() & 0o777, 0o755, "its own mode at the end");
    assert_eq!(std::fs::metadata(open.join("secret")).unwrap().mode() & 0o777, 0o600);
}

#[test]
fn a_local_repository_is_private_unless_its_directory_is_shared_with_a_group() {
    let k = Kura::new();
    k.init();
    let src = victim_tree(&k);
    k.backup(&[&src]);
    for p in walk(Path::new(&k.repo)).into_iter().chain([Path::new(&k.repo).to_path_buf()]) {
        let m = std::fs::metadata(&p).unwrap();
        let want = if m.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(m.mode() & 0o777, want, "{}", p.display());
    }
    // Shared: the repository directory grants its group access first.
    let shared = k.path("shared");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let g = Kura::with_repo(shared.to_str().unwrap(), vec![]);
    g.init();
    g.backup(&[&src]);
    for p in walk(&shared) {
        let m = std::fs::metadata(&p).unwrap();
        let want = if m.is_dir() { 0o770 } else { 0o660 };
        assert_eq!(m.mode() & 0o777, want, "{}", p.display());
    }
}

#[test]
fn kura_password_never_reaches_a_child_process() {
    let mut k = Kura::new();
    let marker = k.path("hook-env");
    config(
        &mut k,
        &format!(
            "[target.envdump]\ntype = \"command\"\nbackup = \"env\"\nrestore = \"cat > {}\"\npre_restore = \"env > {}.pre\"\n",
            marker.display(),
            marker.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--command", "env", "--stdin-name", "env.txt"]);
    let dumped = k.ok(&["dump", "latest", "env.txt"]);
    assert!(!dumped.contains(PASSWORD) && !dumped.contains("KURA_PASSWORD"), "{dumped}");
    k.ok(&["backup", "--target", "envdump"]);
    k.ok(&["restore", "--target", "envdump", "--yes"]);
    for f in [marker.clone(), marker.with_extension("pre")] {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(!text.contains(PASSWORD) && !text.contains("KURA_PASSWORD="), "{}: {text}", f.display());
    }
}

#[test]
fn an_explicit_password_file_wins_over_kura_password_and_empty_passwords_are_refused() {
    let k = Kura::new();
    let right = k.path("pw");
    std::fs::write(&right, b"the right one\n").unwrap();
    let init = k
        .cmd(&["init", "--password-file", right.to_str().unwrap()])
        .env("KURA_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(init.status.success(), "{}", stderr(&init));
    let opened = k
        .cmd(&["snapshots", "--password-file", right.to_str().unwrap()])
        .env("KURA_PASSWORD", "wrong")
        .output()
        .unwrap();
    assert!(opened.status.success(), "the flag wins: {}", stderr(&opened));
    let env_only = k.cmd(&["snapshots"]).env("KURA_PASSWORD", "wrong").output().unwrap();
    assert_eq!(env_only.status.code(), Some(11));
    assert!(stderr(&env_only).contains("the password came from KURA_PASSWORD"), "{}", stderr(&env_only));

    let e = Kura::new();
    let out = e.cmd(&["init"]).env("KURA_PASSWORD", "").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("KURA_PASSWORD is set but empty"), "{}", stderr(&out));
    assert!(!Path::new(&e.repo).join("config").exists(), "no repository was created");
}

#[test]
fn directories_nested_2000_deep_back_up_with_a_warning_not_a_crash() {
    let k = Kura::new();
    k.init();
    let src = k.path("deep");
    let mut p = src.clone();
    for _ in 0..2000 {
        p.push("d");
    }
    // Built relative to each level: the full path is longer than PATH_MAX.
    std::fs::create_dir_all(&src).unwrap();
    let mut script = format!(
        "cd {} && for i in $(seq 2000); do mkdir d && cd d || exit 1; done && echo bottom > f",
        src.display()
    );
    script.push('\n');
    assert!(std::process::Command::new("sh").args(["-c", &script]).status().unwrap().success());
    let out = k.run(&["backup", src.to_str().unwrap()]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert!(e.contains("nested deeper than 512 directories"), "{e}");
    let v = k.json(&["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let target = k.path("t");
    k.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
}

/// Forges a snapshot whose root tree `build` makes from the leaf's id.
fn forge(k: &Kura, build: impl FnOnce(kura_format::Id) -> Vec<Vec<&'static str>>) -> String {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use kura_format::tree::{Node, NodeType, Tree};
        let store: Arc<dyn kura_store::Store> = Arc::new(kura_store::LocalStore::new(&k.repo));
        let repo = Arc::new(kura_repo::Repository::open(store, PASSWORD.as_bytes()).await.unwrap());
        let f = kura_repo::forge::Forge::start(&repo).await.unwrap();
        let data = f.data(b"deep".to_vec()).await.unwrap();
        let mut file = Node::new("x", NodeType::File);
        file.size = Some(4);
        file.content = Some(vec![data]);
        let mut id = f.tree(Tree { nodes: vec![file] }).await.unwrap();
        // Each level: the names of directories that all hold the level below.
        for names in build(id) {
            let nodes = names
                .into_iter()
                .map(|n| {
                    let mut d = Node::new(n, NodeType::Dir);
                    d.mode = 0o755;
                    d.subtree = Some(id);
                    d
                })
                .collect();
            id = f.tree(Tree { nodes }).await.unwrap();
        }
        f.snapshot(id, vec!["/forged".into()]).await.unwrap().to_hex()
    })
}

#[test]
fn a_crafted_snapshot_10000_deep_is_refused_by_ls_restore_and_verify() {
    let k = Kura::new();
    k.init();
    let id = forge(&k, |_| vec![vec!["a"]; 10_000]);
    let t = k.path("t");
    for args in [vec!["ls", &id], vec!["restore", &id, "--target", t.to_str().unwrap()]] {
        let out = k.run(&args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains("nest deeper than 512 levels"), "{args:?}: {e}");
    }
    assert!(!t.exists() || walk(&t).is_empty(), "nothing restored");
    let v = k.run(&["verify", "--json"]);
    assert_eq!(v.status.code(), Some(4), "verify reports what restore refuses: {}", stderr(&v));
    let report = String::from_utf8_lossy(&v.stdout);
    assert!(report.contains("deeper than 512"), "{report}");
}

#[test]
fn a_snapshot_reusing_one_subtree_at_every_level_is_refused_not_expanded() {
    let k = Kura::new();
    k.init();
    // 40 levels, each holding the level below twice: 2^41 entries from 41
    // small trees.
    let id = forge(&k, |_| vec![vec!["a", "b"]; 40]);
    let started = Instant::now();
    for args in [vec!["ls", &id], vec!["restore", &id, "--target", k.path("t").to_str().unwrap()]] {
        let out = k.run(&args);
        let e = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {e}");
        assert!(e.contains("expands to more than 50000000 entries"), "{args:?}: {e}");
    }
    assert!(started.elapsed() < Duration::from_secs(30), "refused at once, not after expanding");
    let v = k.run(&["verify", "--json"]);
    assert_eq!(v.status.code(), Some(4), "{}", stderr(&v));
    assert!(String::from_utf8_lossy(&v.stdout).contains("expands to more than"));
}

#[test]
fn restore_latest_never_falls_back_silently_when_the_newest_is_damaged() {
    let k = Kura::new();
    k.init();
    let src = victim_tree(&k);
    let old = k.backup(&[&src]);
    std::fs::write(src.join("top.txt"), b"newer\n").unwrap();
    let new = k.backup(&[&src]);
    let snap = |id: &str| Path::new(&k.repo).join("snapshots").join(id);
    let damage = |id: &str| {
        let mut b = std::fs::read(snap(id)).unwrap();
        let n = b.len();
        b[n / 2] ^= 0x55;
        std::fs::write(snap(id), b).unwrap();
    };
    damage(&new);
    let t = k.path("t");
    let out = k.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(4), "{e}");
    assert!(e.contains(&new[..8]) && e.contains("may be the newest"), "the damaged snapshot is named: {e}");
    assert!(!t.exists(), "nothing restored");
    // Naming a snapshot still works.
    k.ok(&["restore", &old, "--target", t.to_str().unwrap()]);
    // An unreadable snapshot clearly older than the newest is only a warning.
    let k2 = Kura::new();
    k2.init();
    let first = k2.backup(&[&src]);
    let snap2 = Path::new(&k2.repo).join("snapshots").join(&first);
    let mut b = std::fs::read(&snap2).unwrap();
    b[10] ^= 1;
    std::fs::write(&snap2, b).unwrap();
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options().write(true).open(&snap2).unwrap().set_modified(day_ago).unwrap();
    k2.backup(&[&src]);
    let t2 = k2.path("t");
    let out = k2.run(&["restore", "latest", "--target", t2.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("an older snapshot is unreadable"), "{}", stderr(&out));
}

#[test]
fn a_backup_never_deduplicates_against_a_pack_that_is_gone() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), noise(3 << 20, 77)).unwrap();
    let first = k.backup(&[&src]);
    // Every pack is lost; the index still names them.
    for p in walk(&Path::new(&k.repo).join("data")) {
        if p.is_file() {
            std::fs::remove_file(p).unwrap();
        }
    }
    let out = k.run(&["backup", src.to_str().unwrap(), "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("not in the repository"), "the lost packs are reported: {}", stderr(&out));
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let second = second["id"].as_str().unwrap().to_string();
    let t = k.path("t");
    k.ok(&["restore", &second, "--target", t.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&t, &src));
    let v = k.run(&["verify", "--json"]);
    assert_eq!(v.status.code(), Some(4));
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    let hit: Vec<&str> = report["report"]["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["snapshot"].as_str().unwrap())
        .collect();
    assert!(hit.iter().all(|s| first.starts_with(s)), "only the first snapshot lost data: {report}");
    assert!(report.to_string().contains("pack missing"), "{report}");
}

#[test]
fn garbage_planted_in_the_store_never_blocks_the_repository() {
    let k = Kura::new();
    k.init();
    let src = victim_tree(&k);
    k.backup(&[&src]);
    let repo = Path::new(&k.repo);
    // Written by someone who can write the store but has no password: a
    // 7-byte deletion marker, and key files that sort before the real one
    // (garbage, and a well-formed one asking for 4 GiB × 64 iterations).
    let zeros = "0".repeat(64);
    std::fs::create_dir_all(repo.join("deletions")).unwrap();
    std::fs::write(repo.join("deletions").join(&zeros), b"garbage").unwrap();
    std::fs::write(repo.join("keys").join(&zeros), b"not a key").unwrap();
    let costly = serde_json::json!({
        "version": 1, "created": "2026-11-22T11:20:00Z", "hostname": "x", "username": "x",
        "kdf": { "algorithm": "argon2id", "memory_kib": 4u64 << 20, "iterations": 64, "parallelism": 1,
                 "salt": "q2xkx5ZP0H8pN3zC0bqf0g==" },
        "master": format!("{}==", "A".repeat(182))
    });
    std::fs::write(repo.join("keys").join(format!("{}1", "0".repeat(63))), costly.to_string()).unwrap();
    let started = Instant::now();
    k.backup(&[&src]);
    let p = k.run(&["prune", "--grace", "0s"]);
    assert!(p.status.success(), "{}", stderr(&p));
    assert!(started.elapsed() < Duration::from_secs(20), "no costly key derivation on every open");
    let v = k.run(&["verify", "--json"]);
    assert_eq!(v.status.code(), Some(4));
    let report = String::from_utf8_lossy(&v.stdout);
    assert!(report.contains("unreadable deletion marker"), "{report}");
    assert!(report.contains("unreadable key file"), "{report}");
}

#[test]
fn a_sparse_file_comes_back_sparse() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = std::fs::File::create(src.join("disk.img")).unwrap();
    f.set_len(512 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"boot sector", 0).unwrap();
    f.write_all_at(b"the end", (512 << 20) - 7).unwrap();
    drop(f);
    let id = k.backup(&[&src]);
    let t = k.path("t");
    k.ok(&["restore", &id, "--target", t.to_str().unwrap()]);
    let got = restored(&t, &src).join("disk.img");
    let m = std::fs::metadata(&got).unwrap();
    assert_eq!(m.len(), 512 << 20);
    assert!(m.blocks() * 512 < 1 << 20, "{} bytes allocated for 512 MiB of mostly holes", m.blocks() * 512);
    let g = std::fs::File::open(&got).unwrap();
    let mut head = [0u8; 11];
    g.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(&head, b"boot sector");
    let mut tail = [0u8; 7];
    g.read_exact_at(&mut tail, (512 << 20) - 7).unwrap();
    assert_eq!(&tail, b"the end");
}

/// Backs up `src` with the backup's test gate on `file`: once the backup
/// has looked at the file and before it opens it, `swap` runs.
fn backup_racing(k: &Kura, src: &Path, file: &Path, swap: impl FnOnce()) -> std::process::Output {
    let gate = k.path("backup-gate");
    let _ = std::fs::remove_file(&gate);
    let _ = std::fs::remove_file(gate.with_extension("waiting"));
    let child = k
        .cmd(&["backup", src.to_str().unwrap()])
        .env("KURA_TEST_BACKUP_GATE", format!("{}:{}", file.display(), gate.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_at_gate(&gate);
    swap();
    std::fs::write(&gate, b"").unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_file_swapped_for_a_symlink_between_look_and_open_is_never_followed() {
    let (k, secret, src, f) = root_secret_and_user_file();
    let out = backup_racing(&k, &src, &f, || {
        std::fs::remove_file(&f).unwrap();
        std::os::unix::fs::symlink(&secret, &f).unwrap();
    });
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "a warning, and the snapshot is saved: {e}");
    assert!(e.contains("notes.txt"), "{e}");
    let dumped = k.cmd(&["dump", "latest", f.to_str().unwrap()]).output().unwrap();
    assert!(!String::from_utf8_lossy(&dumped.stdout).contains("ROOT-ONLY-SECRET"));
    assert_secret_absent_in_restore(&k);
}

/// Restores the latest snapshot and checks the secret is nowhere in it.
fn assert_secret_absent_in_restore(k: &Kura) {
    let t = k.path("check");
    let _ = std::fs::remove_dir_all(&t);
    let out = k.run(&["restore", "latest", "--target", t.to_str().unwrap()]);
    assert!(matches!(out.status.code(), Some(0) | Some(5)), "{}", stderr(&out));
    for p in walk(&t) {
        if p.is_file() {
            assert!(
                !std::fs::read_to_string(&p).unwrap_or_default().contains("ROOT-ONLY-SECRET"),
                "{}",
                p.display()
            );
        }
    }
}

#[test]
fn a_fifo_swapped_in_between_look_and_open_does_not_hang_the_backup() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let f = src.join("data.bin");
    std::fs::write(&f, b"data").unwrap();
    let started = Instant::now();
    let out = backup_racing(&k, &src, &f, || {
        std::fs::remove_file(&f).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(&f).status().unwrap().success());
    });
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{e}");
    assert!(e.contains("no longer a regular file"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(30), "no hang");
}
