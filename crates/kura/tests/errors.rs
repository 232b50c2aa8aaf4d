//! Bad input gets a clear error and loses nothing.
mod common;

use common::*;
use kura_testkit::{CutProxy, MotoServer};

#[test]
fn wrong_password_is_named_with_a_next_step() {
    let k = Kura::new();
    k.init();
    let out = k.cmd(&["snapshots"]).env("KURA_PASSWORD", "not it").output().unwrap();
    assert_eq!(out.status.code(), Some(11));
    let e = stderr(&out);
    assert!(e.contains("wrong password for repository"), "{e}");
    // The hint names the source that was used, not `kura key list`, which
    // would need the very password that failed.
    assert!(e.contains("hint: the password came from KURA_PASSWORD"), "{e}");
    assert!(!e.contains("key list"), "{e}");
    assert!(!e.contains("not it"), "the password never appears in messages: {e}");
}

#[test]
fn missing_repository_and_missing_password() {
    let k = Kura::new();
    let out = k.run(&["snapshots"]);
    assert_eq!(out.status.code(), Some(10));
    assert!(stderr(&out).contains("is not a kura repository"), "{}", stderr(&out));
    assert!(stderr(&out).contains("kura init"));

    k.init();
    let out = k.cmd(&["snapshots"]).env_remove("KURA_PASSWORD").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no password given"), "{}", stderr(&out));

    let again = k.run(&["init"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already holds a kura repository"), "{}", stderr(&again));
}

#[test]
fn newer_repository_version_is_refused_before_any_password() {
    let k = Kura::new();
    k.init();
    let config = std::path::Path::new(&k.repo).join("config");
    let text = std::fs::read_to_string(&config).unwrap().replace("\"version\": 1", "\"version\": 2");
    std::fs::write(&config, text).unwrap();
    let out = k.cmd(&["snapshots"]).env_remove("KURA_PASSWORD").output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("format version 2, this kura supports up to 1"), "{e}");
    assert!(e.contains("upgrade kura"), "{e}");
}

#[test]
fn unreadable_source_file_is_skipped_reported_and_recorded() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    // /proc/self/mem is a regular file whose first read fails with EIO, even
    // for root: a real unreadable file.
    let out = k.run(&["backup", src.to_str().unwrap(), "/proc/self/mem"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(e.contains("/proc/self/mem") && e.contains("cannot read"), "{e}");
    let snaps = k.json(&["snapshots"]);
    let w = &snaps[0]["warnings"][0];
    assert_eq!(w["path"], "/proc/self/mem");
    // Everything else is there.
    let target = k.path("out");
    let r = k.run(&["restore", "latest", "--target", target.to_str().unwrap()]);
    // Reported again on restore; not damage in the repository (exit 5).
    assert_eq!(r.status.code(), Some(5), "the unreadable file is reported again on restore");
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn full_disk_at_the_repository_fails_cleanly_and_keeps_earlier_snapshots() {
    let k0 = Kura::new();
    let mnt = k0.path("small");
    let _m = tmpfs(&mnt, "4m");
    let k = Kura::with_repo(mnt.join("repo").to_str().unwrap(), vec![]);
    k.init();
    let small = k.path("small-src");
    std::fs::create_dir_all(&small).unwrap();
    std::fs::write(small.join("a.txt"), b"first").unwrap();
    let first = k.backup(&[&small]);
    let big = k.path("big-src");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("noise.bin"), noise(20 << 20, 5)).unwrap();
    let out = k.run(&["backup", big.to_str().unwrap()]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("No space left") || e.contains("space"), "{e}");
    assert!(e.contains("hint: free space"), "{e}");
    assert_eq!(k.snapshot_ids(), vec![first.clone()], "no snapshot for the failed backup");
    // The half-assembled pack that hit the limit is not left taking space.
    let spools: Vec<_> = std::fs::read_dir(mnt.join("repo/data"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| e.file_name())
        .collect();
    assert!(spools.is_empty(), "spool files left behind: {spools:?}");
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let target = k.path("out");
    k.ok(&["restore", &first, "--target", target.to_str().unwrap()]);
    assert_eq!(std::fs::read(restored(&target, &small).join("a.txt")).unwrap(), b"first");
}

#[test]
fn full_disk_at_the_restore_target_reports_the_file_and_leaves_no_partial_file() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("fits.txt"), b"small").unwrap();
    std::fs::write(src.join("huge.bin"), noise(6 << 20, 8)).unwrap();
    k.backup(&[&src]);
    let mnt = k.path("target");
    let _m = tmpfs(&mnt, "2m");
    let out = k.run(&["restore", "latest", "--target", mnt.to_str().unwrap()]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "a full disk here, not damage in the repository: {e}");
    assert!(e.contains("huge.bin"), "{e}");
    let root = restored(&mnt, &src);
    assert_eq!(std::fs::read(root.join("fits.txt")).unwrap(), b"small");
    assert!(!root.join("huge.bin").exists(), "no partial file under the real name");
    let leftovers: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".kura-restore"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files are cleaned up");
}

#[test]
fn unreachable_storage_fails_with_a_clear_error() {
    let lease = kura_testkit::closed_port();
    let port = lease.port;
    let k = Kura::with_repo(
        &format!("s3://bucket/prefix?endpoint=http://127.0.0.1:{port}"),
        vec![("AWS_ACCESS_KEY_ID".into(), "k".into()), ("AWS_SECRET_ACCESS_KEY".into(), "s".into())],
    );
    let out = k.run(&["init"]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("gave up after 3 attempts"), "{e}");
    assert!(e.contains("safe to run again"), "{e}");
}

#[test]
fn storage_outage_mid_upload_records_nothing_and_the_next_backup_works() {
    let moto = MotoServer::start();
    moto.create_bucket("outage");
    let proxy = CutProxy::start(moto.port);
    let mut env = moto.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint()));
    let k = Kura::with_repo("s3://outage/repo", env);
    k.init();
    let src = k.path("src");
    make_tree(&src);
    let first = k.backup(&[&src]);

    let big = k.path("big");
    std::fs::create_dir_all(&big).unwrap();
    for i in 0..6 {
        std::fs::write(big.join(format!("{i}.bin")), noise(8 << 20, 100 + i)).unwrap();
    }
    let child = k
        .cmd(&["backup", big.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let seen = proxy.bytes();
    proxy.wait_for_bytes(seen + (10 << 20));
    proxy.cut();
    let out = child.wait_with_output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(e.contains("storage") && e.contains("gave up"), "{e}");
    proxy.resume();
    assert_eq!(k.snapshot_ids(), vec![first.clone()], "the interrupted backup recorded no snapshot");

    let second = k.backup(&[&big]);
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    for (id, src) in [(&first, &src), (&second, &big)] {
        let target = k.path(&format!("out-{}", &id[..8]));
        k.ok(&["restore", id, "--target", target.to_str().unwrap()]);
        assert_same_tree(src, &restored(&target, src));
    }
}

#[test]
fn storage_503s_and_hung_requests_are_ridden_out_by_retries() {
    let moto = MotoServer::start();
    moto.create_bucket("flaky");
    let proxy = CutProxy::start(moto.port);
    let mut env = moto.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint()));
    env.push(("KURA_STORAGE_RETRIES".into(), "6".into()));
    env.push(("KURA_STORAGE_TIMEOUT".into(), "2".into()));
    let k = Kura::with_repo("s3://flaky/repo", env);
    k.init();
    let src = k.path("src");
    make_tree(&src);
    for i in 0..3 {
        std::fs::write(src.join(format!("big{i}.bin")), noise(12 << 20, 50 + i)).unwrap();
    }
    let child = k
        .cmd(&["backup", src.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-backup: a burst of 503s, then two requests that never get an answer.
    proxy.wait_for_bytes(proxy.bytes() + (4 << 20));
    proxy.unavailable(3);
    proxy.wait_for_bytes(proxy.bytes() + (4 << 20));
    proxy.hang(2);
    let out = child.wait_with_output().unwrap();
    let e = stderr(&out);
    assert!(out.status.success(), "the backup rides out 503s and hangs: {e}");
    assert!(e.contains("retrying"), "the retries are logged: {e}");
    let v = k.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    let target = k.path("out");
    k.ok(&["restore", "latest", "--target", target.to_str().unwrap()]);
    assert_same_tree(&src, &restored(&target, &src));
}

#[test]
fn truncated_answers_from_storage_are_never_accepted() {
    let moto = MotoServer::start();
    moto.create_bucket("short");
    let proxy = CutProxy::start(moto.port);
    let mut env = moto.env();
    env.retain(|(k, _)| k != "AWS_ENDPOINT_URL");
    env.push(("AWS_ENDPOINT_URL".into(), proxy.endpoint()));
    env.push(("KURA_STORAGE_RETRIES".into(), "8".into()));
    let k = Kura::with_repo("s3://short/repo", env);
    k.init();
    let src = k.path("src");
    make_tree(&src);
    for i in 0..3 {
        std::fs::write(src.join(format!("big{i}.bin")), noise(10 << 20, 70 + i)).unwrap();
    }
    k.backup(&[&src]);
    // Mid-restore and mid-verify, answers stop short of their length.
    let target = k.path("out");
    for args in
        [vec!["restore", "latest", "--target", target.to_str().unwrap()], vec!["verify", "--read-data"]]
    {
        let child = k
            .cmd(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        proxy.wait_for_bytes(proxy.bytes() + (3 << 20));
        proxy.truncate(3);
        let out = child.wait_with_output().unwrap();
        let e = stderr(&out);
        assert!(out.status.success(), "{args:?}: short answers are retried: {e}");
        // Cut inside a body or inside a head: either way an answer that
        // ended early, seen as such and retried.
        let short =
            e.contains("end of file before message length") || e.contains("closed before message completed");
        assert!(e.contains("retrying") && short, "{args:?}: the short answers are seen and retried: {e}");
    }
    assert_same_tree(&src, &restored(&target, &src));

    // Beyond the retry budget: a clear error, and no file with wrong bytes.
    let mut env = k.env.clone();
    env.retain(|(n, _)| n != "KURA_STORAGE_RETRIES");
    env.push(("KURA_STORAGE_RETRIES".into(), "2".into()));
    let k2 = Kura::with_repo("s3://short/repo", env);
    let target2 = k.path("out2");
    let child = k2
        .cmd(&["restore", "latest", "--target", target2.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    proxy.wait_for_bytes(proxy.bytes() + (2 << 20));
    proxy.truncate(100_000);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "a restore that only gets short answers must fail");
    assert!(stderr(&out).contains("gave up"), "{}", stderr(&out));
    let base = restored(&target2, &src);
    for (rel, _) in listing(&base).0 {
        let got = base.join(&rel);
        if got.is_file() {
            assert_eq!(
                std::fs::read(src.join(&rel)).unwrap(),
                std::fs::read(&got).unwrap(),
                "{} holds wrong bytes",
                got.display()
            );
        }
    }
}

/// Every class of configuration mistake a user makes, through the real
/// binary, with the message each gets: the place in the file, what is
/// wrong, and what to do. None of them touches the repository.
#[test]
fn catalogue_of_configuration_mistakes_and_their_messages() {
    let k = Kura::new();
    k.init();
    let cfg = k.path("kura.toml");
    let repo = format!("[repository.main]\nurl = \"{}\"\n\n", k.repo);
    let empty = k.path("no-tools");
    std::fs::create_dir_all(&empty).unwrap();
    // (what, config body, arguments, extra environment, exit code, every line expected in stderr)
    type Case<'a> = (&'a str, String, Vec<&'a str>, Vec<(&'a str, String)>, i32, Vec<&'a str>);
    let files = "[target.x]\ntype = \"files\"\npaths = [\"/etc/hostname\"]\n";
    let closed = kura_testkit::closed_port();
    let cp = closed.port;
    let pg_at = format!("PostgreSQL at postgresql://app@127.0.0.1:{cp}/shop");
    let my_at = format!("MySQL at 127.0.0.1:{cp}");
    let cases: Vec<Case> = vec![
        ("broken TOML", format!("{repo}[target.x\n"), vec!["backup", "--target", "x"], vec![], 1, vec!["TOML parse error at line 4", "hint: see the configuration section of README.md"]),
        ("unknown section", format!("{repo}[targets.x]\n"), vec!["backup", "--target", "x"], vec![], 1, vec!["targets: unknown section (known: repository, target, kept, plan, monitor, alerts, notify)"]),
        ("unknown key", format!("{repo}{files}colour = \"red\"\n"), vec!["backup", "--target", "x"], vec![], 1, vec!["target.x: unknown field `colour`, expected one of `paths`"]),
        ("unknown target type", format!("{repo}[target.x]\ntype = \"oracle\"\n"), vec!["backup", "--target", "x"], vec![], 1, vec!["target.x.type: unknown target type \"oracle\" (known: sqlite, files, postgres, mysql, command, object_store)"]),
        ("bad duration", format!("{repo}{files}changed_within = \"3 parsecs\"\n"), vec!["backup", "--target", "x"], vec![], 1, vec!["target.x.changed_within: \"3 parsecs\" is not a duration (use e.g. 30s, 15m, 24h, 7d)"]),
        ("missing environment variable", format!("{repo}[target.x]\ntype = \"files\"\npaths = [\"${{KURA_TEST_NOPE}}/data\"]\n"), vec!["backup", "--target", "x"], vec![], 1, vec!["target.x.paths: environment variable KURA_TEST_NOPE is not set"]),
        ("unknown target", format!("{repo}{files}"), vec!["backup", "--target", "nope"], vec![], 1, vec!["no target named \"nope\" (configured: x)"]),
        ("unknown repository", format!("{repo}{files}repository = \"offsite\"\n"), vec!["backup", "--target", "x"], vec![], 1, vec!["target.x.repository: no repository named \"offsite\" (configured: main)"]),
        ("wrong password", format!("{repo}{files}"), vec!["backup", "--target", "x"], vec![("KURA_PASSWORD", "not it".into())], 11, vec!["wrong password for repository", "hint: the password came from KURA_PASSWORD"]),
        ("unreachable PostgreSQL", format!("{repo}[target.db]\ntype = \"postgres\"\nurl = \"postgres://app@127.0.0.1:{cp}/shop\"\n"), vec!["backup", "--target", "db"], vec![], 1, vec![&pg_at, "Connection refused", "hint: is the server running, and are the host and port in the target's url right?"]),
        ("unreachable MariaDB", format!("{repo}[target.db]\ntype = \"mysql\"\nurl = \"mysql://root:pw@127.0.0.1:{cp}/shop\"\n"), vec!["backup", "--target", "db"], vec![], 1, vec![&my_at, "Can't connect", "hint: is the server running, and are the host and port in the target's url right?"]),
        ("client tools missing", format!("{repo}[target.db]\ntype = \"postgres\"\nurl = \"postgres://app@127.0.0.1:{cp}/shop\"\n"), vec!["backup", "--target", "db"], vec![("KURA_PG_BINDIR", empty.display().to_string())], 1, vec!["psql not found in KURA_PG_BINDIR", "install the PostgreSQL client (apt-get install postgresql-client)"]),
    ];
    let before = files_under(std::path::Path::new(&k.repo));
    for (what, body, args, env, code, want) in cases {
        std::fs::write(&cfg, &body).unwrap();
        let mut c = k.cmd(&args);
        c.env_remove("KURA_REPOSITORY").env("KURA_CONFIG", &cfg);
        for (key, v) in env {
            c.env(key, v);
        }
        let out = c.output().unwrap();
        let e = stderr(&out);
        eprintln!("--- {what}: exit {:?}\n{e}", out.status.code());
        assert_eq!(out.status.code(), Some(code), "{what}: {e}");
        for w in want {
            assert!(e.contains(w), "{what}: want {w:?} in:\n{e}");
        }
        assert!(!e.contains("not it") && !e.contains(":pw@"), "{what}: a secret in the message:\n{e}");
    }
    assert_eq!(files_under(std::path::Path::new(&k.repo)), before, "no mistake wrote to the repository");
}
