//! Configured targets: one run over several targets, and safe in-place
//! restores of a SQLite database and of file trees, through the real binary
//! and real SQLite files written by a concurrent writer.
mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rusqlite::Connection;

struct App {
    k: Kura,
    db: PathBuf,
    config_dir: PathBuf,
    logs: PathBuf,
    hooks: PathBuf,
}

fn app() -> App {
    let mut k = Kura::new();
    let root = k.path("app");
    let (db, config_dir, logs, hooks) =
        (root.join("data/app.db"), root.join("config"), root.join("logs"), k.path("hooks.log"));
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    std::fs::create_dir_all(&config_dir).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(config_dir.join("app.toml"), b"port = 8080\n").unwrap();
    std::fs::write(config_dir.join(".env.production"), b"SECRET=1\n").unwrap();
    std::fs::write(logs.join("today.log"), b"fresh\n").unwrap();
    std::fs::write(logs.join("old.log"), b"stale\n").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(3 * 86400);
    std::fs::File::options().write(true).open(logs.join("old.log")).unwrap().set_modified(old).unwrap();
    let c = Connection::open(&db).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE ledger(id INTEGER PRIMARY KEY, amount INTEGER, note TEXT);",
    )
    .unwrap();
    let cfg = format!(
        r#"
[repository.main]
url = "{repo}"

[target.registry]
type = "sqlite"
path = "${{APP_ROOT}}/data/app.db"
pre_restore = "echo pre >> {hooks}"
post_restore = "echo post >> {hooks}"

[target.configs]
type = "files"
component = "configs"
paths = ["${{APP_ROOT}}/config"]
exclude = ["*.tmp"]

[target.logs]
type = "files"
component = "logs"
paths = ["${{APP_ROOT}}/logs"]
changed_within = "24h"
"#,
        repo = k.repo,
        hooks = hooks.display()
    );
    let cfg_path = k.path("kura.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg_path.display().to_string()));
    k.env.push(("APP_ROOT".into(), root.display().to_string()));
    // The repository comes from the config, not KURA_REPOSITORY.
    k.repo = String::new();
    App { k, db, config_dir, logs, hooks }
}

impl App {
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = self.k.cmd(args);
        c.env_remove("KURA_REPOSITORY");
        c
    }
    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kura {args:?}: {}\n{}",
            stderr(&out),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stdout).unwrap()
    }
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }
}

/// Sum and count of the ledger: every transaction adds +n and -n.
fn ledger(db: &Path) -> (i64, i64) {
    let c = Connection::open(db).unwrap();
    c.query_row("SELECT coalesce(sum(amount), 0), count(*) FROM ledger", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
}

#[test]
fn one_run_over_targets_then_safe_restores() {
    let a = app();
    a.ok(&["init"]);
    // A writer keeps committing balanced transactions during the backup.
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let (s, p, w) = (stop.clone(), a.db.clone(), written.clone());
    let writer = std::thread::spawn(move || {
        let c = Connection::open(&p).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let mut n = 0i64;
        while !s.load(Ordering::Relaxed) {
            c.execute_batch(&format!(
                "BEGIN; INSERT INTO ledger(amount, note) VALUES({n}, 'credit é'); INSERT INTO ledger(amount, note) VALUES({}, 'debit'); COMMIT;",
                -n
            ))
            .unwrap();
            n += 1;
            w.store(n, Ordering::Relaxed);
        }
        n
    });
    while written.load(Ordering::Relaxed) < 2 {
        std::thread::sleep(Duration::from_millis(10));
    }
    let run = a.json(&["backup", "--target", "registry", "--target", "configs", "--target", "logs"]);
    stop.store(true, Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
    let targets = run["targets"].as_array().unwrap();
    assert!(targets.iter().all(|t| t["ok"] == true), "{run}");
    let snaps = a.json(&["snapshots"]);
    let runs: std::collections::HashSet<_> =
        snaps.as_array().unwrap().iter().map(|s| s["run"].clone()).collect();
    assert_eq!(runs.len(), 1, "one run id for the whole invocation: {snaps}");
    let times: std::collections::HashSet<_> =
        snaps.as_array().unwrap().iter().map(|s| s["time"].clone()).collect();
    assert_eq!(times.len(), 1, "one timestamp for the whole run");

    // changed_within kept today's log only.
    let logs_snap = snaps.as_array().unwrap().iter().find(|s| s["target"] == "logs").unwrap();
    let listing = a.ok(&["ls", logs_snap["id"].as_str().unwrap()]);
    assert!(listing.contains("today.log") && !listing.contains("old.log"), "{listing}");

    // Damage the live database and configs.
    let live_before = ledger(&a.db);
    Connection::open(&a.db).unwrap().execute_batch("DELETE FROM ledger WHERE id % 2 = 0;").unwrap();
    let damaged = ledger(&a.db);
    std::fs::write(a.config_dir.join("app.toml"), b"port = broken\n").unwrap();

    // Without --yes and without a terminal: refused, nothing touched.
    let refused = a.run(&["restore", "--target", "registry"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    // --dry-run prints the plan and changes nothing.
    let plan = a.ok(&["restore", "--target", "registry", "--dry-run"]);
    assert!(
        plan.contains("replace") && plan.contains("app.db") && plan.contains("before: echo pre"),
        "{plan}"
    );
    assert!(!a.hooks.exists(), "no hook ran for a dry run");

    a.ok(&["restore", "--target", "registry", "--yes"]);
    let (sum, rows) = ledger(&a.db);
    assert_eq!(sum, 0, "the restored database is a consistent state");
    assert!(rows > 0 && rows % 2 == 0);
    assert!(rows <= live_before.1 + 2);
    assert_eq!(std::fs::read_to_string(&a.hooks).unwrap(), "pre\npost\n", "hooks ran in order");
    let kept: Vec<_> = std::fs::read_dir(a.db.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("app.db.bak-"))
        .collect();
    assert!(!kept.is_empty(), "the damaged database is kept beside");
    let kept_db = kept
        .iter()
        .map(|e| e.path())
        .find(|p| !p.to_string_lossy().ends_with("-wal") && !p.to_string_lossy().ends_with("-shm"))
        .unwrap();
    assert_eq!(ledger(&kept_db), damaged, "the kept copy is exactly the damaged one");

    a.ok(&["restore", "--target", "configs", "--yes"]);
    assert_eq!(std::fs::read(a.config_dir.join("app.toml")).unwrap(), b"port = 8080\n");
    assert_eq!(std::fs::read(a.config_dir.join(".env.production")).unwrap(), b"SECRET=1\n");
    let parent = a.config_dir.parent().unwrap();
    let bak: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("config.bak-"))
        .collect();
    assert_eq!(bak.len(), 1);
    assert_eq!(
        std::fs::read(bak[0].path().join("app.toml")).unwrap(),
        b"port = broken\n",
        "old copy kept, never lost"
    );

    // --into leaves the live copy alone.
    let scratch = a.k.path("scratch.db");
    a.ok(&["restore", "--target", "registry", "--yes", "--into", scratch.to_str().unwrap()]);
    assert_eq!(ledger(&scratch).0, 0);
    let _ = a.logs;
}

#[test]
fn a_failing_restore_leaves_the_live_database_intact_and_runs_the_post_hook() {
    let a = app();
    a.ok(&["init"]);
    Connection::open(&a.db)
        .unwrap()
        .execute_batch("INSERT INTO ledger(amount, note) VALUES (5, 'a'), (-5, 'b');")
        .unwrap();
    a.ok(&["backup", "--target", "registry"]);
    Connection::open(&a.db)
        .unwrap()
        .execute_batch("INSERT INTO ledger(amount, note) VALUES (7, 'live only');")
        .unwrap();
    let live = std::fs::read(&a.db).unwrap();
    // Damage every pack of the repository.
    let repo = a.k.path("repo");
    for d in std::fs::read_dir(repo.join("data")).unwrap().flatten() {
        for f in std::fs::read_dir(d.path()).unwrap().flatten() {
            let mut b = std::fs::read(f.path()).unwrap();
            let mid = b.len() / 3;
            b[mid] ^= 1;
            std::fs::write(f.path(), b).unwrap();
        }
    }
    let out = a.run(&["restore", "--target", "registry", "--yes"]);
    assert_eq!(out.status.code(), Some(4), "damage in the repository: {}", stderr(&out));
    assert_eq!(std::fs::read(&a.db).unwrap(), live, "the live database is untouched");
    assert_eq!(std::fs::read_to_string(&a.hooks).unwrap(), "pre\npost\n", "post hook runs even on failure");
    let leftovers: Vec<_> = std::fs::read_dir(a.db.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("kura-restore"))
        .collect();
    assert!(leftovers.is_empty(), "no temporary file left behind");
}

/// Row count of a database file opened afresh, after its integrity check.
fn whole_rows(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok", "{}", db.display());
    ledger(db).1
}

#[test]
fn restoring_a_database_the_app_holds_open_is_atomic_and_the_app_sees_it() {
    let a = app();
    a.ok(&["init"]);
    // Big enough (about 12 MB) that writing it takes a while to kill into.
    {
        let c = Connection::open(&a.db).unwrap();
        c.execute_batch("BEGIN").unwrap();
        let mut ins = c.prepare("INSERT INTO ledger(amount, note) VALUES (?1, ?2)").unwrap();
        for i in 0..60_000i64 {
            ins.execute(rusqlite::params![i, format!("{:0>150}", i * 7919)]).unwrap();
            ins.execute(rusqlite::params![-i, "debit"]).unwrap();
        }
        drop(ins);
        c.execute_batch("COMMIT").unwrap();
    }
    let full = ledger(&a.db).1;
    a.ok(&["backup", "--target", "registry"]);

    // The application keeps its connection open throughout, as a running
    // service does: its -wal and -shm stay beside the database.
    let app_conn = Connection::open(&a.db).unwrap();
    app_conn.busy_timeout(Duration::from_secs(30)).unwrap();
    app_conn.execute_batch("DELETE FROM ledger WHERE id % 3 = 0;").unwrap();
    let damaged = ledger(&a.db).1;
    assert!(a.db.with_file_name("app.db-wal").exists(), "the app's WAL is beside the database");

    let started = std::time::Instant::now();
    a.ok(&["restore", "--target", "registry", "--yes"]);
    let took = started.elapsed().as_millis() as u64;
    let seen: i64 = app_conn.query_row("SELECT count(*) FROM ledger", [], |r| r.get(0)).unwrap();
    assert_eq!(seen, full, "the app's open connection sees the restored rows, not a renamed-away file");
    app_conn.execute_batch("INSERT INTO ledger(amount, note) VALUES (1, 'x'), (-1, 'y');").unwrap();
    assert_eq!(whole_rows(&a.db), full + 2, "the app's writes land in the live database");
    app_conn.execute_batch("DELETE FROM ledger WHERE note IN ('x', 'y');").unwrap();
    let baks = |a: &App| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(a.db.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("app.db.bak-"))
            .filter(|p| !p.to_string_lossy().ends_with("-wal") && !p.to_string_lossy().ends_with("-shm"))
            .collect();
        v.sort();
        v
    };
    let kept = baks(&a);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(whole_rows(&kept[0]), damaged, "the damaged content is kept whole beside");

    // Killed at any moment, a restore leaves the live database old or new,
    // whole, and every `.bak` a whole copy.
    let note = |c: &Connection| -> String {
        c.query_row("SELECT note FROM ledger WHERE id = 2", [], |r| r.get(0)).unwrap()
    };
    let original = note(&app_conn);
    let mut rand = rng(0xD1B5_4A32_D192_ED03);
    let mut killed = 0;
    for trial in 0..8u64 {
        let marker = format!("damaged in trial {trial}");
        app_conn.execute("UPDATE ledger SET note = ?1 WHERE id = 2", [&marker]).unwrap();
        let out = kill_after(a.cmd(&["restore", "--target", "registry", "--yes"]), rand(took + took / 4) + 1);
        if out.status.code().is_none() {
            killed += 1;
        }
        assert_eq!(whole_rows(&a.db), full, "trial {trial}");
        let now = note(&Connection::open(&a.db).unwrap());
        assert!(
            now == marker || now == original,
            "trial {trial}: {now}: neither the old nor the restored state"
        );
        assert_eq!(note(&app_conn), now, "trial {trial}: the app sees what is on disk");
        for b in baks(&a).iter().skip(1) {
            assert_eq!(whole_rows(b), full, "trial {trial}: {} is a whole copy", b.display());
        }
    }
    eprintln!("{killed} of 8 restores killed midway");
    assert!(killed > 0, "no restore was interrupted: the test proved nothing");

    // The copies killed restores left are swept by the next restore; the
    // copy of a restore still running (its lock held, here by flock(1)) is
    // left alone.
    let dir = a.db.parent().unwrap().to_path_buf();
    let scratch = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".app.db.kura-restore-"))
            .collect();
        v.sort();
        v
    };
    let running = dir.join(".app.db.kura-restore-0000beef");
    std::fs::write(&running, b"").unwrap();
    let mut holder =
        std::process::Command::new("flock").arg("-o").arg(&running).args(["sleep", "120"]).spawn().unwrap();
    while std::process::Command::new("flock")
        .args(["-n"])
        .arg(&running)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    a.ok(&["restore", "--target", "registry", "--yes", "--no-keep-old"]);
    assert_eq!(scratch(&dir), vec![".app.db.kura-restore-0000beef".to_string()]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    a.ok(&["restore", "--target", "registry", "--yes", "--no-keep-old"]);
    assert!(scratch(&dir).is_empty(), "{:?}", scratch(&dir));
    assert_eq!(note(&app_conn), original);
}

#[test]
fn config_mistakes_get_placed_messages() {
    let a = app();
    a.ok(&["init"]);
    let out = a.run(&["backup", "--target", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no target named \"nope\" (configured: configs, logs, registry)"),
        "{}",
        stderr(&out)
    );
    let out = a.cmd(&["backup", "--target", "registry"]).env_remove("APP_ROOT").output().unwrap();
    assert!(
        stderr(&out).contains("target.registry.path: environment variable APP_ROOT is not set"),
        "{}",
        stderr(&out)
    );
    let out = a
        .cmd(&["backup", "--target", "registry"])
        .env("KURA_CONFIG", "/nonexistent/kura.toml")
        .output()
        .unwrap();
    assert!(stderr(&out).contains("cannot read /nonexistent/kura.toml"), "{}", stderr(&out));
}

#[test]
fn command_target_pipes_output_back_and_a_failing_command_saves_nothing() {
    let mut k = Kura::new();
    let src = k.path("export.bin");
    std::fs::write(&src, noise(300_000, 9)).unwrap();
    let back = k.path("imported.bin");
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[repository.main]
url = "{repo}"

[target.export]
type = "command"
backup = "cat {src}; echo done >&2"
restore = "cat > {back}"
name = "export.bin"

[target.broken]
type = "command"
backup = "printf partial; echo 'disk on fire' >&2; exit 4"
"#,
            repo = k.repo,
            src = src.display(),
            back = back.display()
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    k.init();
    let run = k.json(&["backup", "--target", "export"]);
    assert_eq!(run["targets"][0]["ok"], true, "{run}");
    let snaps = k.json(&["snapshots", "--target", "export"]);
    assert_eq!(snaps[0]["source"], "command");
    assert_eq!(snaps[0]["paths"][0], "export.bin");

    let plan = k.ok(&["restore", "--target", "export", "--dry-run"]);
    assert!(plan.contains(&format!("into `cat > {}`", back.display())), "{plan}");
    assert!(!back.exists(), "--dry-run runs nothing");
    k.ok(&["restore", "--target", "export", "--yes"]);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&src).unwrap());
    let file = k.path("copy.bin");
    k.ok(&["restore", "--target", "export", "--into", file.to_str().unwrap(), "--yes"]);
    assert_eq!(std::fs::read(&file).unwrap(), std::fs::read(&src).unwrap());

    let broken = k.run(&["backup", "--target", "broken"]);
    assert_eq!(broken.status.code(), Some(1));
    let err = stderr(&broken);
    assert!(err.contains("exited with exit status: 4") && err.contains("disk on fire"), "{err}");
    assert!(k.json(&["snapshots", "--target", "broken"]).as_array().unwrap().is_empty());
    let none = k.run(&["restore", "--target", "broken", "--yes"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(stderr(&none).contains("no `restore` command"), "{}", stderr(&none));
}

/// A command's output is most often a dump made another way (a plain
/// pg_dump, mysqldump in a container): it is cut like a database's, so a
/// day's edits scattered through it cost the small chunks around them, not
/// a megabyte each.
#[test]
fn a_command_output_edited_here_and_there_stores_little_on_day_two() {
    let mut k = Kura::new();
    let dump = k.path("dump.sql");
    let mut bytes = noise(8 << 20, 21);
    std::fs::write(&dump, &bytes).unwrap();
    let cfg = k.path("kura.toml");
    let target = format!("type = \"command\"\nbackup = \"cat {}\"\n", dump.display());
    std::fs::write(&cfg, format!("[repository.main]\nurl = \"{}\"\n[target.dump]\n{target}", k.repo))
        .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    k.init();
    let day1 = k.json(&["backup", "--target", "dump"]);
    assert!(day1["targets"][0]["summary"]["bytes_new"].as_u64().unwrap() >= 8 << 20, "{day1}");
    // Eight rows edited, evenly through the dump.
    for i in 0..8 {
        let at = (2 * i + 1) * bytes.len() / 16;
        bytes[at..at + 12].copy_from_slice(b"status=ship\n");
    }
    std::fs::write(&dump, &bytes).unwrap();
    let day2 = k.json(&["backup", "--target", "dump"]);
    let added = day2["targets"][0]["summary"]["bytes_new"].as_u64().unwrap();
    // In 1 MiB chunks the eight edits cost the whole 8 MiB again.
    assert!(added < 2 << 20, "day 2 of 8 scattered edits stored {added} bytes: {day2}");
    let back = k.path("back.sql");
    k.ok(&["restore", "--target", "dump", "--into", back.to_str().unwrap(), "--yes"]);
    assert!(std::fs::read(&back).unwrap() == bytes, "the restored output is day 2's");
}

#[test]
fn restore_by_component_as_of_one_run() {
    let a = app();
    a.ok(&["init"]);
    Connection::open(&a.db)
        .unwrap()
        .execute_batch("INSERT INTO ledger(amount, note) VALUES (7, 'x'), (-7, 'y');")
        .unwrap();
    let first = a.json(&["backup", "--target", "registry", "--target", "configs", "--target", "logs"]);
    let run1 = first["run"].as_str().unwrap().to_string();
    // A later run of the database alone.
    Connection::open(&a.db)
        .unwrap()
        .execute_batch("INSERT INTO ledger(amount, note) VALUES (1, 'later'), (-1, 'later');")
        .unwrap();
    a.ok(&["backup", "--target", "registry"]);

    // Damage everything.
    Connection::open(&a.db).unwrap().execute_batch("DELETE FROM ledger;").unwrap();
    std::fs::write(a.config_dir.join("app.toml"), b"port = broken\n").unwrap();

    // Only the database component: the configs stay as they are.
    let plan = a.ok(&["restore", "--component", "database", "--dry-run"]);
    assert!(plan.contains("target registry") && !plan.contains("target configs"), "{plan}");
    a.ok(&["restore", "--component", "database", "--yes"]);
    assert_eq!(ledger(&a.db), (0, 4), "the newest run holding the database");
    assert_eq!(std::fs::read(a.config_dir.join("app.toml")).unwrap(), b"port = broken\n");

    // Everything as of the first run: one plan, one confirmation, every target.
    let plan = a.json(&["restore", "--component", "all", "--run", &run1[..8], "--dry-run"]);
    let names: Vec<&str> =
        plan["targets"].as_array().unwrap().iter().map(|t| t["target"].as_str().unwrap()).collect();
    assert_eq!(names, ["configs", "logs", "registry"], "{plan}");
    let refused = a.run(&["restore", "--component", "all"]);
    assert!(stderr(&refused).contains("--yes"), "{}", stderr(&refused));
    let done = a.json(&["restore", "--component", "all", "--run", &run1[..8], "--yes"]);
    assert_eq!(done["targets"].as_array().unwrap().len(), 3, "{done}");
    assert_eq!(ledger(&a.db), (0, 2), "the database as of the first run");
    assert_eq!(std::fs::read(a.config_dir.join("app.toml")).unwrap(), b"port = 8080\n");

    // Mistakes get a message that says what to do.
    let out = a.run(&["restore", "--component", "uploads", "--yes"]);
    assert!(stderr(&out).contains("no target belongs to component \"uploads\""), "{}", stderr(&out));
    let out = a.run(&["restore", "--component", "all", "--into", "/tmp/x", "--yes"]);
    assert!(stderr(&out).contains("restore one target"), "{}", stderr(&out));
}
