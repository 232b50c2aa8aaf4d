//! What a restore in place replaces, keeps and moves aside (docs/
//! reliability.md, "Restore semantics"), each test named for a way the
//! earlier whole-directory swap lost data on a real setup.
mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;

fn kept_dirs(parent: &Path, name: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&format!("{name}.bak-")))
        .collect()
}

#[test]
fn files_restore_in_place_keeps_what_the_backup_never_held() {
    let mut k = Kura::new();
    let conf = k.path("app/config");
    std::fs::create_dir_all(conf.join("sub")).unwrap();
    std::fs::write(conf.join("a.conf"), b"a = 1\n").unwrap();
    std::fs::write(conf.join("b.conf"), b"b = 1\n").unwrap();
    std::fs::write(conf.join("sub/c.conf"), b"c = 1\n").unwrap();
    std::fs::write(conf.join("secret.local"), b"excluded by the target\n").unwrap();
    config(
        &mut k,
        &format!(
            "[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\nexclude = [\"*.local\"]\n",
            conf.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--target", "configs"]);
    // Day 2: one file edited, one deleted, one created since the backup.
    std::fs::write(conf.join("a.conf"), b"a = broken\n").unwrap();
    std::fs::remove_file(conf.join("b.conf")).unwrap();
    std::fs::write(conf.join("new.conf"), b"created after the backup\n").unwrap();
    std::fs::write(conf.join("secret.local"), b"excluded, and changed since\n").unwrap();

    let plan = k.ok(&["restore", "--target", "configs", "--dry-run"]);
    assert!(plan.contains("overwrite") && plan.contains("add 1"), "{plan}");
    assert!(plan.contains("are left alone"), "{plan}");

    k.ok(&["restore", "--target", "configs", "--yes"]);
    assert_eq!(std::fs::read(conf.join("a.conf")).unwrap(), b"a = 1\n");
    assert_eq!(std::fs::read(conf.join("b.conf")).unwrap(), b"b = 1\n");
    assert_eq!(std::fs::read(conf.join("sub/c.conf")).unwrap(), b"c = 1\n");
    assert_eq!(std::fs::read(conf.join("new.conf")).unwrap(), b"created after the backup\n", "left alone");
    assert_eq!(std::fs::read(conf.join("secret.local")).unwrap(), b"excluded, and changed since\n");
    let kept = kept_dirs(conf.parent().unwrap(), "config");
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(std::fs::read(kept[0].join("a.conf")).unwrap(), b"a = broken\n", "the replaced file is kept");
    assert!(!kept[0].join("new.conf").exists(), "only what was replaced is in the kept copy");

    // --mirror: what the snapshot lacks is moved aside, except what the
    // target's filters leave out.
    std::fs::write(conf.join("a.conf"), b"a = broken again\n").unwrap();
    let plan = k.ok(&["restore", "--target", "configs", "--dry-run", "--mirror"]);
    assert!(plan.contains("move 1 aside"), "{plan}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    k.ok(&["restore", "--target", "configs", "--yes", "--mirror"]);
    assert!(!conf.join("new.conf").exists(), "moved aside");
    assert_eq!(std::fs::read(conf.join("secret.local")).unwrap(), b"excluded, and changed since\n");
    let all: Vec<_> = kept_dirs(conf.parent().unwrap(), "config");
    assert!(
        all.iter()
            .any(|d| std::fs::read(d.join("new.conf")).ok().as_deref()
                == Some(&b"created after the backup\n"[..])),
        "the file the snapshot lacked is in a kept copy: {all:?}"
    );
}

#[test]
fn logs_restore_in_place_keeps_logs_older_than_changed_within() {
    let mut k = Kura::new();
    let logs = k.path("var/log/app");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("today.log"), b"today\n").unwrap();
    std::fs::write(logs.join("old.log"), b"ten days ago\n").unwrap();
    let ten_days = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86_400);
    std::fs::File::options().write(true).open(logs.join("old.log")).unwrap().set_modified(ten_days).unwrap();
    config(
        &mut k,
        &format!("[target.logs]\ntype = \"files\"\ncomponent = \"logs\"\npaths = [\"{}\"]\nchanged_within = \"24h\"\n", logs.display()),
    );
    k.init();
    k.ok(&["backup", "--target", "logs"]);
    std::fs::write(logs.join("today.log"), b"today, later\n").unwrap();
    for extra in [vec![], vec!["--mirror"], vec!["--mirror", "--no-keep-old"]] {
        let mut args = vec!["restore", "--target", "logs", "--yes"];
        args.extend(extra.iter().copied());
        k.ok(&args);
        assert_eq!(std::fs::read(logs.join("old.log")).unwrap(), b"ten days ago\n", "{extra:?}");
        assert_eq!(std::fs::read(logs.join("today.log")).unwrap(), b"today\n", "{extra:?}");
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
}

#[test]
fn sqlite_restore_in_place_keeps_the_owner_group_and_mode() {
    let mut k = Kura::new();
    let db = k.path("srv/data/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);").unwrap();
    drop(c);
    std::os::unix::fs::chown(&db, Some(65534), Some(65534)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o640)).unwrap();
    config(&mut k, &format!("[target.registry]\ntype = \"sqlite\"\npath = \"{}\"\n", db.display()));
    k.init();
    k.ok(&["backup", "--target", "registry"]);
    rusqlite::Connection::open(&db).unwrap().execute_batch("DELETE FROM t;").unwrap();
    k.ok(&["restore", "--target", "registry", "--yes"]);
    let m = std::fs::metadata(&db).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o777), (65534, 65534, 0o640), "the service can still write it");
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[test]
fn sqlite_rows_a_live_writer_commits_during_a_restore_are_never_lost() {
    let mut k = Kura::new();
    let db = k.path("srv/app.db");
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    // Large enough (about 40 MB) that the restore's write takes a while.
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE log(id INTEGER PRIMARY KEY, pad BLOB); \
         WITH RECURSIVE s(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM s WHERE v < 20000) \
         INSERT INTO log SELECT -v, zeroblob(2000) FROM s",
    )
    .unwrap();
    config(&mut k, &format!("[target.registry]\ntype = \"sqlite\"\npath = \"{}\"\n", db.display()));
    k.init();
    k.ok(&["backup", "--target", "registry"]);
    // The service keeps its connection and commits a row after another,
    // noting each commit that succeeded, throughout the restore.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (s, p) = (stop.clone(), db.clone());
    let writer = std::thread::spawn(move || {
        let c = rusqlite::Connection::open(&p).unwrap();
        c.busy_timeout(std::time::Duration::from_secs(60)).unwrap();
        let mut committed = Vec::new();
        let mut i = 1i64;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            if c.execute("INSERT INTO log VALUES (?1, x'00')", [i]).is_ok() {
                committed.push(i);
            }
            i += 1;
        }
        committed
    });
    while !db.with_file_name("app.db-wal").exists() {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    k.ok(&["restore", "--target", "registry", "--yes"]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let committed = writer.join().unwrap();
    let ids = |p: &Path| -> std::collections::HashSet<i64> {
        let c = rusqlite::Connection::open(p).unwrap();
        let mut st = c.prepare("SELECT id FROM log WHERE id > 0").unwrap();
        let v = st.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        v
    };
    let kept = kept_dirs(db.parent().unwrap(), "app.db");
    let kept: Vec<_> = kept.iter().filter(|p| !p.to_string_lossy().ends_with("-wal")).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let (before, after) = (ids(kept[0]), ids(&db));
    let lost: Vec<&i64> = committed.iter().filter(|i| !before.contains(i) && !after.contains(i)).collect();
    assert!(lost.is_empty(), "{} committed rows are in neither the kept copy nor the database", lost.len());
    assert!(!before.is_empty(), "the service wrote before the restore: the test proved something");
}

#[test]
fn a_deleted_sqlite_database_and_a_deleted_folder_come_back() {
    let mut k = Kura::new();
    let db = k.path("srv/app.db");
    let conf = k.path("srv/conf");
    std::fs::create_dir_all(conf.join("sites")).unwrap();
    std::fs::write(conf.join("app.ini"), "port = 8080\n").unwrap();
    std::fs::write(conf.join("sites/a.conf"), "server a\n").unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (7);")
        .unwrap();
    config(
        &mut k,
        &format!(
            "[target.registry]\ntype = \"sqlite\"\npath = \"{}\"\n\n[target.conf]\ntype = \"files\"\npaths = [\"{}\"]\n",
            db.display(),
            conf.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--target", "registry", "--target", "conf"]);
    // The disaster: both are gone.
    std::fs::remove_file(&db).unwrap();
    std::fs::remove_dir_all(&conf).unwrap();
    k.ok(&["restore", "--target", "registry", "--yes"]);
    k.ok(&["restore", "--target", "conf", "--yes"]);
    let n: i64 =
        rusqlite::Connection::open(&db).unwrap().query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(n, 7);
    assert_eq!(std::fs::read_to_string(conf.join("sites/a.conf")).unwrap(), "server a\n");
    assert_eq!(std::fs::read_to_string(conf.join("app.ini")).unwrap(), "port = 8080\n");
    assert!(kept_dirs(db.parent().unwrap(), "app.db").is_empty(), "nothing was replaced, nothing kept");
}

/// A SQLite target whose hooks append to a file, backed up once.
fn sqlite_with_hooks() -> (Kura, std::path::PathBuf) {
    let mut k = Kura::new();
    let db = k.path("app.db");
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    let hooks = k.path("hooks.txt");
    config(
        &mut k,
        &format!(
            "[target.registry]\ntype = \"sqlite\"\npath = \"{}\"\npre_restore = \"echo pre >> {}\"\npost_restore = \"echo post >> {}\"\n",
            db.display(),
            hooks.display(),
            hooks.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--target", "registry"]);
    (k, hooks)
}

#[test]
fn a_copy_beside_the_live_data_runs_no_hooks_and_asks_nothing() {
    let (k, hooks) = sqlite_with_hooks();
    let copy = k.path("check.db");
    // No --yes, no terminal: a copy into a new place needs no confirmation.
    let plan = k.ok(&["restore", "--target", "registry", "--into", copy.to_str().unwrap()]);
    assert!(plan.contains("--hooks runs them"), "{plan}");
    assert!(!hooks.exists(), "no hook ran for a copy beside the live data");
    assert!(copy.exists());
    // Over something that exists, it asks.
    let again = k.run(&["restore", "--target", "registry", "--into", copy.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("which exists"), "{}", stderr(&again));
    k.ok(&["restore", "--target", "registry", "--into", copy.to_str().unwrap(), "--yes", "--hooks"]);
    assert_eq!(std::fs::read_to_string(&hooks).unwrap(), "pre\npost\n");
}

#[test]
fn a_closed_stdout_never_aborts_a_restore_and_post_restore_runs() {
    let (k, hooks) = sqlite_with_hooks();
    // stdout is a pipe whose reader is gone before kura writes.
    let mut child = k
        .cmd(&["restore", "--target", "registry", "--yes"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "EPIPE is not a failure");
    assert_eq!(std::fs::read_to_string(&hooks).unwrap(), "pre\npost\n");
}

#[test]
fn a_restore_stopped_by_sigterm_still_runs_post_restore() {
    let mut k = Kura::new();
    let src = k.path("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("big.bin"), noise(20 << 20, 3)).unwrap();
    let hooks = k.path("hooks.txt");
    config(
        &mut k,
        &format!(
            "[target.data]\ntype = \"files\"\npaths = [\"{}\"]\npre_restore = \"echo pre >> {h}; sleep 1\"\npost_restore = \"echo post >> {h}\"\n",
            src.display(),
            h = hooks.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--target", "data"]);
    let child = k
        .cmd(&["restore", "--target", "data", "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for pre_restore to start.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&hooks).unwrap_or_default() != "pre\n" {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    // pre_restore (a service being stopped) is still running: the signal
    // must stop the restore before it starts and still run post_restore.
    let _ = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = child.wait_with_output().unwrap();
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{e}");
    assert!(e.contains("interrupted by SIGTERM"), "{e}");
    assert_eq!(std::fs::read_to_string(&hooks).unwrap(), "pre\npost\n", "post_restore ran: {e}");
    assert_eq!(std::fs::read(src.join("big.bin")).unwrap(), noise(20 << 20, 3), "the live data is whole");
}

#[test]
fn one_failing_target_of_several_exits_5_and_lists_each_outcome() {
    let mut k = Kura::new();
    let ok_dir = k.path("ok");
    std::fs::create_dir_all(&ok_dir).unwrap();
    std::fs::write(ok_dir.join("f"), b"f").unwrap();
    config(
        &mut k,
        &format!(
            "[target.good]\ntype = \"files\"\npaths = [\"{}\"]\n\n[target.bad]\ntype = \"command\"\nbackup = \"exit 3\"\n",
            ok_dir.display()
        ),
    );
    k.init();
    let out = k.run(&["backup", "--target", "good", "--target", "bad"]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{e}");
    assert!(e.contains("saved good") && e.contains("FAILED bad"), "{e}");
    let only_bad = k.run(&["backup", "--target", "bad", "--target", "bad"]);
    assert_eq!(only_bad.status.code(), Some(1));
    assert!(
        !String::from_utf8_lossy(&only_bad.stdout).contains("run "),
        "no run is announced when nothing was saved"
    );

    // The same for a restore of several targets: one restored, the next
    // failing, exits 5 and says which is which.
    let mut k = Kura::new();
    config(
        &mut k,
        &format!(
            "[target.a_files]\ntype = \"files\"\npaths = [\"{}\"]\n\n[target.b_cmd]\ntype = \"command\"\nbackup = \"echo hi\"\nrestore = \"exit 7\"\n",
            ok_dir.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--target", "a_files", "--target", "b_cmd"]);
    let out = k.run(&["restore", "--component", "data", "--yes"]);
    let e = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{e}");
    assert!(e.contains("target b_cmd") && e.contains("restored before it: a_files"), "{e}");
}

#[test]
fn kept_copies_are_listed_counted_in_the_plan_and_cleaned() {
    let mut k = Kura::new();
    let db = k.path("srv/app.db");
    let conf = k.path("srv/conf");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.ini"), "v = 0\n").unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .unwrap();
    config(
        &mut k,
        &format!(
            "[kept]\nwithin = \"30d\"\n\n[target.registry]\ntype = \"sqlite\"\npath = \"{}\"\nkept_last = 2\n\n[target.conf]\ntype = \"files\"\npaths = [\"{}\"]\n",
            db.display(),
            conf.display()
        ),
    );
    k.init();
    k.ok(&["backup", "--target", "registry", "--target", "conf"]);
    for i in 1..=4 {
        rusqlite::Connection::open(&db).unwrap().execute("UPDATE t SET x = ?1", [i + 1]).unwrap();
        std::fs::write(conf.join("app.ini"), format!("v = {i}\n")).unwrap();
        k.ok(&["restore", "--target", "registry", "--yes"]);
        k.ok(&["restore", "--target", "conf", "--yes"]);
    }
    // The setting keeps the newest two of the database's copies; the
    // folder's, without one, all four (30 days is the [kept] default).
    let list = k.json(&["kept", "list"]);
    let of = |t: &str| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["target"] == t)
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(of("registry").len(), 2, "{list}");
    assert_eq!(of("conf").len(), 4, "{list}");
    // The newest two are the damage of restores 3 and 4: x = 4 and x = 5.
    let xs: Vec<i64> = of("registry")
        .iter()
        .map(|p| {
            rusqlite::Connection::open(p).unwrap().query_row("SELECT x FROM t", [], |r| r.get(0)).unwrap()
        })
        .collect();
    assert_eq!(xs, vec![4, 5], "{list}");
    let plan = k.ok(&["restore", "--target", "conf", "--dry-run"]);
    assert!(plan.contains("4 kept copies") && plan.contains("only those younger than 30d stay"), "{plan}");
    let plan = k.ok(&["restore", "--target", "registry", "--dry-run"]);
    assert!(
        plan.contains("2 kept copies") && plan.contains("the newest 2 and those younger than 30d"),
        "{plan}"
    );

    // Cleaning asks first, removes only what its rules let go.
    let out = k.ok(&["kept", "clean", "--target", "conf"]);
    assert!(out.contains("nothing to remove"), "the target's own rule (30 days) lets none go: {out}");
    let refused = k.run(&["kept", "clean", "--target", "conf", "--keep-last", "1"]);
    assert_eq!(refused.status.code(), Some(1), "no confirmation without --yes");
    assert_eq!(k.json(&["kept", "list", "--target", "conf"]).as_array().unwrap().len(), 4);
    let out = k.ok(&["kept", "clean", "--target", "conf", "--older-than", "1d", "--yes"]);
    assert!(out.contains("nothing to remove"), "{out}");
    let dry = k.ok(&["kept", "clean", "--target", "conf", "--keep-last", "1", "--dry-run"]);
    assert!(dry.contains("would remove 3 kept copies"), "{dry}");
    assert_eq!(k.json(&["kept", "list", "--target", "conf"]).as_array().unwrap().len(), 4);
    k.ok(&["kept", "clean", "--target", "conf", "--keep-last", "1", "--yes"]);
    let left = k.json(&["kept", "list", "--target", "conf"]);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(
        std::fs::read_to_string(Path::new(left[0]["name"].as_str().unwrap()).join("app.ini")).unwrap(),
        "v = 4\n",
        "the newest kept copy stays"
    );
    k.ok(&["kept", "clean", "--keep-last", "0", "--yes"]);
    assert!(k.json(&["kept", "list"]).as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(conf.join("app.ini")).unwrap(),
        "v = 0\n",
        "the live data is untouched"
    );
}
