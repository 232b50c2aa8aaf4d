//! Plans through the real binary: retention (`kura forget --keep-*`,
//! `--plan`) on snapshots taken at different times (a clock moved back per
//! run), previewed with the rule that keeps each one, then applied per
//! target; `kura run` with its lock, history and copies to a second
//! repository; `kura copy`, also killed and resumed; `kura schedule`.
mod common;

use common::*;

const DAY: i64 = 86_400;

/// Backs up `target` as if `days_ago` days ago.
fn backup_at(k: &Kura, target: &str, days_ago: i64) {
    let out = k
        .cmd(&["backup", "--target", target])
        .env("KURA_TEST_CLOCK_OFFSET_SECS", (-days_ago * DAY).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn forget_by_policy_previews_every_snapshot_with_its_rule_then_keeps_exactly_that_per_target() {
    let mut k = Kura::new();
    let (conf, logs) = (k.path("etc"), k.path("logs"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    std::fs::write(logs.join("app.log"), b"GET / 200\n").unwrap();
    config(
        &mut k,
        &format!(
            "[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n[target.logs]\ntype = \"files\"\npaths = [\"{}\"]\n",
            conf.display(),
            logs.display()
        ),
    );
    k.init();
    // configs: daily for 20 days, one day missed; logs: only twice.
    for d in (0..20).rev().filter(|d| *d != 4) {
        backup_at(&k, "configs", d);
    }
    backup_at(&k, "logs", 40);
    backup_at(&k, "logs", 30);
    assert_eq!(k.snapshot_ids().len(), 21);

    let preview = k.json(&["forget", "--keep-daily", "7", "--keep-weekly", "2", "--dry-run"]);
    let rows = preview["snapshots"].as_array().unwrap();
    assert_eq!(rows.len(), 21);
    let kept = |group: &str| -> Vec<Vec<String>> {
        rows.iter()
            .filter(|r| r["group"] == group && !r["reasons"].as_array().unwrap().is_empty())
            .map(|r| {
                r["reasons"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
            })
            .collect()
    };
    let configs = kept("configs");
    assert_eq!(configs[0], ["newest", "daily 1/7", "weekly 1/2"], "{configs:?}");
    // Seven days that have a backup: the missed day 4 does not use a slot.
    assert_eq!(configs.iter().filter(|r| r.iter().any(|x| x.starts_with("daily"))).count(), 7);
    // Last week's newest is at most seven days old, so one of those: seven in all.
    assert_eq!(configs.len(), 7, "{configs:?}");
    assert!(configs.iter().any(|r| r.iter().any(|x| x == "weekly 2/2")), "{configs:?}");
    // The logs' two old snapshots are their own group: the newest stays.
    let logs_kept = kept("logs");
    assert!(logs_kept[0].contains(&"newest".to_string()), "{logs_kept:?}");
    assert_eq!(k.snapshot_ids().len(), 21, "a dry run forgets nothing");

    let text =
        k.ok(&["forget", "--keep-daily", "7", "--keep-weekly", "2", "--target", "configs", "--dry-run"]);
    assert!(text.contains("keep    newest, daily 1/7, weekly 1/2"), "{text}");
    assert!(text.contains("would remove"), "{text}");
    assert!(!text.contains("logs on"), "--target limits the groups: {text}");

    let configs_kept = configs.len();
    k.ok(&["forget", "--keep-daily", "7", "--keep-weekly", "2", "--target", "configs"]);
    let left = k.json(&["snapshots"]);
    let by = |t: &str| left.as_array().unwrap().iter().filter(|s| s["target"] == t).count();
    assert_eq!(by("configs"), configs_kept);
    assert_eq!(by("logs"), 2, "another target's snapshots are not touched");

    let out = k.run(&["forget", "--dry-run"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("forget needs snapshot ids, or --keep-* rules"), "{}", stderr(&out));
}

#[test]
fn kura_run_backs_up_a_plans_targets_keeps_its_retention_and_never_runs_twice_at_once() {
    let mut k = Kura::new();
    let (conf, db) = (k.path("etc"), k.path("app.db"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (1);").unwrap();
    drop(c);
    let state = k.path("state");
    config(
        &mut k,
        &format!(
            "[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n[target.app_db]\ntype = \"sqlite\"\npath = \"{}\"\n\
             [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"app_db\", \"configs\"]\nkeep = {{ daily = 2 }}\nprune = true\n",
            conf.display(),
            db.display()
        ),
    );
    k.init();
    let run_at = |days_ago: i64| {
        k.cmd(&["run", "daily"])
            .env("KURA_STATE_DIR", &state)
            .env("KURA_TEST_CLOCK_OFFSET_SECS", (-days_ago * DAY).to_string())
            .output()
            .unwrap()
    };
    for d in [3, 2, 1, 0] {
        let out = run_at(d);
        assert!(out.status.success(), "{}", stderr(&out));
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(line.starts_with("plan daily: run ") && line.contains("saved 2 of 2 target(s)"), "{line}");
        assert!(line.contains("retention forgot") && line.contains("prune freed"), "{line}");
    }
    let snaps = k.json(&["snapshots"]);
    let by = |t: &str| snaps.as_array().unwrap().iter().filter(|s| s["target"] == t).count();
    assert_eq!((by("app_db"), by("configs")), (2, 2), "daily = 2 per target: {snaps}");
    // Every snapshot of a run shares its id.
    let runs: std::collections::BTreeSet<&str> =
        snaps.as_array().unwrap().iter().filter_map(|s| s["run"].as_str()).collect();
    assert_eq!(runs.len(), 2, "{snaps}");

    // Another run of the plan holds its lock: this one does nothing, at once.
    let lock = state.join("plan-daily.lock");
    let mut holder = std::process::Command::new("flock")
        .arg(&lock)
        .args(["-c", "sleep 30"])
        .spawn()
        .expect("flock(1) from util-linux; scripts/test installs it");
    // Ready when a non-blocking flock of our own is refused.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::process::Command::new("flock").arg("-n").arg(&lock).arg("true").status().unwrap().success() {
        assert!(std::time::Instant::now() < deadline, "the lock holder did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = run_at(0);
    let _ = holder.kill();
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(12), "{}", stderr(&out));
    assert!(stderr(&out).contains("plan daily is already running"), "{}", stderr(&out));
    assert_eq!(k.json(&["snapshots"]).as_array().unwrap().len(), 4, "the refused run wrote nothing");

    // The history holds the four runs, newest first, not the refused one.
    let history = k.cmd(&["history", "--json"]).env("KURA_STATE_DIR", &state).output().unwrap();
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 4, "{history}");
    assert!(runs.iter().all(|r| r["plan"] == "daily" && r["status"] == "ok"), "{history}");
    assert!(runs[0]["started"].as_str() > runs[3]["started"].as_str(), "newest first: {history}");
    assert_eq!(runs[0]["targets"].as_array().unwrap().len(), 2);
    assert!(runs[0]["forgotten"].as_i64().unwrap() >= 1, "{history}");

    let out = k.cmd(&["run", "weekly"]).env("KURA_STATE_DIR", &state).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no plan named \"weekly\" in kura.toml (configured: daily)"),
        "{}",
        stderr(&out)
    );
}

/// An initialised repository with a `configs` files target and `plans`.
fn with_configs(plans: &str) -> Kura {
    let mut k = Kura::new();
    let conf = k.path("etc");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    config(&mut k, &format!("[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n{plans}", conf.display()));
    k.init();
    k
}

#[test]
fn forget_plan_dry_run_previews_the_plans_rules_and_a_change_to_them() {
    // Six runs of a plan that kept everything, then the plan gains a rule:
    // the preview judges the real list, and only the plan's snapshots.
    let mut k = with_configs("[plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\"]\n");
    let state = k.path("state");
    for d in (0..6).rev() {
        let out = k
            .cmd(&["run", "daily"])
            .env("KURA_STATE_DIR", &state)
            .env("KURA_TEST_CLOCK_OFFSET_SECS", (-d * DAY).to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // A manual backup of the same target: not the plan's to forget.
    backup_at(&k, "configs", 10);
    let conf = k.path("etc");
    config(
        &mut k,
        &format!(
            "[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n[plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\"]\nkeep = {{ daily = 3 }}\n",
            conf.display()
        ),
    );
    let count = |v: &serde_json::Value| {
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| !s["reasons"].as_array().unwrap().is_empty())
            .count()
    };
    let plan = k.json(&["forget", "--plan", "daily", "--dry-run"]);
    assert_eq!(plan["snapshots"].as_array().unwrap().len(), 6, "the manual backup is not judged: {plan}");
    assert_eq!(count(&plan), 3, "{plan}");
    let changed = k.json(&["forget", "--plan", "daily", "--keep-daily", "5", "--dry-run"]);
    assert_eq!(count(&changed), 5, "--keep-daily 5 previews the change: {changed}");
    assert_eq!(k.snapshot_ids().len(), 7, "previews forget nothing");
    k.ok(&["forget", "--plan", "daily"]);
    assert_eq!(k.snapshot_ids().len(), 4, "three of the plan's and the manual one");
}

#[test]
fn schedule_prints_crontab_lines_that_run_and_systemd_timers_on_the_same_times() {
    let k = with_configs(
        "[plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\"]\n\
         [plan.weekly]\nschedule = \"0 3 * * SUN\"\ntargets = [\"configs\"]\n",
    );
    let cron = k.ok(&["schedule", "--cron"]);
    let daily = cron.lines().find(|l| l.starts_with("0 2 * * * ")).unwrap_or_else(|| panic!("{cron}"));
    assert!(cron.lines().any(|l| l.starts_with("0 3 * * SUN ") && l.ends_with(" run weekly")), "{cron}");
    // The line's command, as cron's sh would run it, backs the plan up.
    let command = daily.trim_start_matches("0 2 * * * ");
    // With the test's environment (password, repository), as cron's would be.
    let mut sh = k.cmd(&[]).get_envs().fold(std::process::Command::new("sh"), |mut c, (key, v)| {
        match v {
            Some(v) => c.env(key, v),
            None => c.env_remove(key),
        };
        c
    });
    let ran =
        sh.args(["-c", command]).env("KURA_STATE_DIR", k.path("state")).current_dir("/").output().unwrap();
    assert!(ran.status.success(), "{command}: {}", stderr(&ran));
    assert_eq!(k.snapshot_ids().len(), 1);

    let units = k.ok(&["schedule", "--systemd", "--plan", "weekly"]);
    assert!(units.contains("OnCalendar=Sun *-*-* 03:00:00") && units.contains("Persistent=true"), "{units}");
    assert!(units.contains("ExecStart=") && units.contains(" run weekly"), "{units}");
    assert!(!units.contains("run daily"), "--plan limits the units: {units}");

    // A plan on another zone's clock: systemd says so, cron cannot.
    let mut k = k;
    let conf = k.path("etc");
    config(
        &mut k,
        &format!(
            "[target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n[plan.tokyo]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\"]\ntimezone = \"Asia/Tokyo\"\n",
            conf.display()
        ),
    );
    let units = k.ok(&["schedule", "--systemd"]);
    assert!(units.contains("OnCalendar=*-*-* 02:00:00 Asia/Tokyo"), "{units}");
    let out = k.run(&["schedule", "--cron"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("plan tokyo runs on Asia/Tokyo's clock"), "{}", stderr(&out));
}

const OFFSITE_PASSWORD: &str = "a different password for the offsite copy";

/// A SQLite database and a config folder, targets `app_db` and `configs`
/// in `main`, a second repository `offsite` with its own password file,
/// and `plans`; both repositories initialised.
fn with_offsite(plans: &str) -> Kura {
    let mut k = Kura::new();
    let (conf, db) = (k.path("etc"), k.path("app.db"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    std::fs::write(conf.join("big.bin"), noise(3_000_000, 5)).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES ('first');").unwrap();
    drop(c);
    let (pw, offsite) = (k.path("offsite.pw"), k.path("offsite"));
    std::fs::write(&pw, OFFSITE_PASSWORD).unwrap();
    config(
        &mut k,
        &format!(
            "[repository.offsite]\nurl = \"{}\"\npassword_file = \"{}\"\n\
             [target.configs]\ntype = \"files\"\npaths = [\"{}\"]\n[target.app_db]\ntype = \"sqlite\"\npath = \"{}\"\n{plans}",
            offsite.display(),
            pw.display(),
            conf.display(),
            db.display()
        ),
    );
    k.ok(&["init", "--repository", "main"]);
    // The offsite repository's own password: its password_file.
    let out = k.cmd(&["init", "--repository", "offsite"]).env_remove("KURA_PASSWORD").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    k
}

#[test]
fn a_plan_copies_each_run_to_its_second_repository_and_keeps_its_retention_in_both() {
    let k = with_offsite(
        "[plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"app_db\", \"configs\"]\ncopy_to = [\"offsite\"]\nkeep = { daily = 2 }\nprune = true\n",
    );
    let state = k.path("state");
    let run_at = |days_ago: i64| {
        let out = k
            .cmd(&["run", "daily"])
            .env("KURA_STATE_DIR", &state)
            .env("KURA_TEST_CLOCK_OFFSET_SECS", (-days_ago * DAY).to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    for d in [3, 2, 1] {
        let line = run_at(d);
        assert!(line.contains("saved 2 of 2 target(s); copied 2 to offsite"), "{line}");
    }
    let snaps = |repo: &str| {
        let v = k.json(&["snapshots", "--repo", repo]);
        v.as_array().unwrap().clone()
    };
    let (main, offsite) = (snaps("main"), snaps("offsite"));
    assert_eq!(main.len(), 4, "daily = 2 per target: {main:?}");
    assert_eq!(offsite.len(), 4, "the same rule at the copy: {offsite:?}");
    // The same snapshots, by run and target, under other ids.
    let key = |s: &serde_json::Value| {
        (s["run"].as_str().unwrap().to_string(), s["target"].as_str().unwrap().to_string())
    };
    let mut a: Vec<_> = main.iter().map(key).collect();
    let mut b: Vec<_> = offsite.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    assert!(main.iter().all(|m| offsite.iter().all(|o| o["id"] != m["id"])));

    // The copy restores on its own, with its own password only.
    let newest = offsite
        .iter()
        .filter(|s| s["target"] == "configs")
        .max_by_key(|s| s["time"].as_str().unwrap().to_string())
        .unwrap();
    let out = k
        .cmd(&[
            "restore",
            newest["id"].as_str().unwrap(),
            "--target",
            k.path("back").to_str().unwrap(),
            "--repo",
            "offsite",
        ])
        .env_remove("KURA_PASSWORD")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_tree(&k.path("etc"), &restored(&k.path("back"), &k.path("etc")));
    k.ok(&["verify", "--repo", "offsite", "--read-data"]);

    // Copying again by hand finds everything there already.
    let again = k.json(&["copy", "--from", "main", "--to", "offsite", "--plan", "daily"]);
    let copied = again["copy"]["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 4, "{again}");
    assert!(copied.iter().all(|c| c["present"] == true), "{again}");

    // The history records each run's copies.
    let history = k.cmd(&["history", "--json"]).env("KURA_STATE_DIR", &state).output().unwrap();
    let history: serde_json::Value = serde_json::from_slice(&history.stdout).unwrap();
    let runs = history.as_array().unwrap();
    let kinds: Vec<&str> = runs.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["copy", "verify", "backup", "backup", "backup"], "newest first: {history}");
    assert_eq!(runs[1]["status"], "ok");
    assert!(runs[1]["repository"].as_str().unwrap().ends_with("offsite"), "{history}");
    let plan_runs: Vec<_> = runs.iter().filter(|r| r["kind"] == "backup").collect();
    assert!(
        plan_runs.iter().all(|r| r["copies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["present"] == false)
            .count()
            == 2),
        "{history}"
    );

    // The history lost: rebuilt from the snapshots, the two runs retention
    // kept (the copies are those runs' copies, not runs of their own).
    std::fs::remove_file(state.join("history.db")).unwrap();
    let rebuilt = k.json(&["history", "rebuild"]);
    assert_eq!((rebuilt["added"].as_u64(), rebuilt["known"].as_u64()), (Some(2), Some(0)), "{rebuilt}");
    let runs = k.json(&["history"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        runs.iter().all(|r| r["plan"] == "daily" && r["targets"].as_array().unwrap().len() == 2),
        "{runs:?}"
    );
    let again = k.json(&["history", "rebuild"]);
    assert_eq!((again["added"].as_u64(), again["known"].as_u64()), (Some(0), Some(2)), "{again}");
}

#[test]
fn a_copy_killed_at_any_moment_is_finished_by_the_next_and_never_leaves_a_half_copy_visible() {
    let k = with_offsite("");
    // Three snapshots of each target, the data changing between them.
    for i in 0..3 {
        std::fs::write(k.path("etc/big.bin"), noise(16_000_000, 10 + i)).unwrap();
        k.ok(&["backup", "--target", "configs", "--target", "app_db"]);
    }
    let source = k.json(&["snapshots", "--repo", "main"]).as_array().unwrap().len();
    assert_eq!(source, 6);
    let copy = || k.cmd(&["copy", "--from", "main", "--to", "offsite"]);
    let mut step = rng(7);
    let mut killed = 0;
    for _ in 0..4 {
        let out = kill_after(copy(), 15 + step(100));
        killed += usize::from(out.status.code().is_none());
        // Whatever is visible at the destination is whole.
        let v = k.json(&["verify", "--repo", "offsite"]);
        assert_eq!(v["ok"], true, "after {:?}: {v}", out.status);
    }
    assert!(killed >= 2, "the kills landed after the copies finished: make the data larger");
    let out = copy().output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let offsite = k.json(&["snapshots", "--repo", "offsite"]);
    assert_eq!(offsite.as_array().unwrap().len(), source, "{offsite}");
    k.ok(&["verify", "--repo", "offsite", "--read-data"]);
    let done = k.json(&["copy", "--from", "main", "--to", "offsite"]);
    assert!(done["copy"]["copied"].as_array().unwrap().iter().all(|c| c["present"] == true), "{done}");

    // Same repository, unknown names: refused with what to do.
    let out = k.run(&["copy", "--from", "main", "--to", "main"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--from and --to are the same repository"), "{}", stderr(&out));
    let out = k.run(&["copy", "--from", "main", "--to", "elsewhere"]);
    assert!(stderr(&out).contains("\"elsewhere\" is neither a repository configured in kura.toml (configured: main, offsite) nor a path"), "{}", stderr(&out));
}

fn history(k: &Kura) -> Vec<serde_json::Value> {
    let v = k.json(&["history", "--limit", "1000"]);
    v.as_array().unwrap().clone()
}

#[test]
fn serve_runs_each_plan_on_its_schedule_never_doubles_a_slow_one_and_stops_when_told() {
    let mut k = Kura::new();
    let db = k.path("app.db");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES (1);").unwrap();
    drop(c);
    config(
        &mut k,
        &format!(
            "[target.app_db]\ntype = \"sqlite\"\npath = \"{}\"\n\
             [target.slow]\ntype = \"command\"\nbackup = \"sleep 1.6; echo slow\"\n\
             [plan.fast]\nschedule = \"* * * * * *\"\ntargets = [\"app_db\"]\n\
             [plan.slowly]\nschedule = \"* * * * * *\"\ntargets = [\"slow\"]\n",
            db.display()
        ),
    );
    k.init();
    let d = Daemon::start(&k, "30s");
    wait_for("two runs of the slow plan", 20, || {
        history(&k).iter().filter(|r| r["plan"] == "slowly" && r["kind"] == "backup").count() >= 2
    });
    // SIGHUP with a broken config: refused, the old one keeps running.
    let cfg = k.path("kura.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        good.replace(
            "schedule = \"* * * * * *\"\ntargets = [\"app_db\"]",
            "schedule = \"every day\"\ntargets = [\"app_db\"]",
        ),
    )
    .unwrap();
    d.signal("-HUP");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let fast_runs =
        |k: &Kura| history(k).iter().filter(|r| r["plan"] == "fast" && r["kind"] == "backup").count();
    let before = fast_runs(&k);
    wait_for("the old config to keep running", 10, || fast_runs(&k) >= before + 2);
    // SIGHUP with a good one that adds a plan: it runs.
    std::fs::write(&cfg, format!("{good}[plan.added]\nschedule = \"* * * * * *\"\ntargets = [\"app_db\"]\n"))
        .unwrap();
    d.signal("-HUP");
    wait_for("the added plan to run", 10, || history(&k).iter().any(|r| r["plan"] == "added"));
    d.signal("-TERM");
    let (status, log) = d.wait(10);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("the new configuration is invalid; keeping the one loaded"), "{log}");
    let runs = history(&k);
    let of = |plan: &str, kind: &str| -> Vec<&serde_json::Value> {
        runs.iter().filter(|r| r["plan"] == plan && r["kind"] == kind).collect()
    };
    assert!(of("fast", "backup").len() >= 3, "{runs:?}");
    assert!(
        of("fast", "backup").iter().chain(of("slowly", "backup").iter()).all(|r| r["status"] == "ok"),
        "{runs:?}"
    );
    // The slow plan's slots that came while it ran were recorded, not run.
    assert!(!of("slowly", "missed").is_empty(), "{runs:?}");
    for plan in ["fast", "slowly"] {
        let mut spans: Vec<(String, String)> = of(plan, "backup")
            .iter()
            .map(|r| {
                (r["started"].as_str().unwrap().to_string(), r["finished"].as_str().unwrap().to_string())
            })
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "{plan}: two runs overlapped: {w:?}");
        }
    }
    // Every run's snapshot is there, and names its plan.
    let snaps = k.json(&["snapshots"]);
    let named = |p: &str| snaps.as_array().unwrap().iter().filter(|s| s["plan"] == p).count();
    assert_eq!(named("fast"), of("fast", "backup").len(), "{snaps}");
    assert_eq!(named("added"), of("added", "backup").len(), "{snaps}");
    assert_eq!(named("slowly"), of("slowly", "backup").len(), "{snaps}");
    // The log is structured: one JSON object a line.
    let finished: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "plan run finished")
        .collect();
    assert!(finished.len() >= 5, "{log}");
    assert!(
        finished.iter().all(|v| v["fields"]["status"] == "ok" && v["fields"]["plan"].is_string()),
        "{log}"
    );
}

#[test]
fn serve_abandons_a_run_past_its_grace_and_after_a_kill_catches_up_exactly_once() {
    let mut k = Kura::new();
    let (delay, started) = (k.path("delay"), k.path("started"));
    std::fs::write(&delay, "0").unwrap();
    // Once a year: any run in this test is a catch-up.
    config(
        &mut k,
        &format!(
            "[target.slow]\ntype = \"command\"\nbackup = \"touch {}; sleep $(cat {}); echo data\"\n\
             [plan.yearly]\nschedule = \"0 0 1 1 *\"\ntargets = [\"slow\"]\ncatch_up = true\n",
            started.display(),
            delay.display()
        ),
    );
    k.init();
    // The last run two years ago: slots have passed since.
    let out = k
        .cmd(&["run", "yearly"])
        .env("KURA_TEST_CLOCK_OFFSET_SECS", (-730 * DAY).to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let backups = |k: &Kura| history(k).iter().filter(|r| r["kind"] == "backup").count();
    assert_eq!(backups(&k), 1);

    // Caught up at start, and stopped mid-run past a short grace.
    std::fs::write(&delay, "30").unwrap();
    let _ = std::fs::remove_file(&started);
    let mut d = Daemon::start(&k, "1s");
    wait_for("the catch-up run to start", 20, || started.exists() || d.0.try_wait().unwrap().is_some());
    assert!(started.exists(), "{:?}", d.wait(1));
    d.signal("-TERM");
    let (status, log) = d.wait(10);
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("abandoned at shutdown"), "{log}");
    assert_eq!(backups(&k), 1, "the abandoned run recorded no backup");
    assert!(history(&k).iter().any(|r| r["kind"] == "abandoned" && r["plan"] == "yearly"));
    assert_eq!(k.snapshot_ids().len(), 1, "nothing of the abandoned run is visible");

    // Killed mid-run: the slot is still owed.
    let _ = std::fs::remove_file(&started);
    let d = Daemon::start(&k, "30s");
    wait_for("the catch-up run to start again", 20, || started.exists());
    d.signal("-KILL");
    let _ = d.wait(10);
    assert_eq!(k.snapshot_ids().len(), 1);

    // Restarted: the missed slots are run once, not once each.
    std::fs::write(&delay, "0").unwrap();
    let d = Daemon::start(&k, "30s");
    wait_for("the catch-up run", 20, || backups(&k) == 2);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    d.signal("-TERM");
    let (status, log) = d.wait(10);
    assert!(status.success(), "{log}");
    assert_eq!(backups(&k), 2, "exactly one catch-up: {:?}", history(&k));
    assert_eq!(k.snapshot_ids().len(), 2);
    let v = k.json(&["verify"]);
    assert_eq!(v["ok"], true, "{v}");
}

#[test]
fn restore_by_plan_takes_that_plans_runs_and_targets_only() {
    let k = with_offsite(
        "[plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\n\
         [plan.weekly]\nschedule = \"0 3 * * SUN\"\ntargets = [\"app_db\", \"configs\"]\ncopy_to = [\"offsite\"]\n",
    );
    let run_at = |plan: &str, days_ago: i64| {
        let out = k
            .cmd(&["run", plan])
            .env("KURA_TEST_CLOCK_OFFSET_SECS", (-days_ago * DAY).to_string())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    };
    run_at("weekly", 10);
    run_at("daily", 9);
    run_at("daily", 1);
    let runs = |v: &serde_json::Value| -> String { v["run"].as_str().unwrap().to_string() };
    let snaps = k.json(&["snapshots"]);
    let run_of = |plan: &str| -> Vec<String> {
        snaps
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["plan"] == plan)
            .map(|s| s["run"].as_str().unwrap().to_string())
            .collect()
    };
    let weekly_run = run_of("weekly")[0].clone();
    // Without --plan: the newest run, daily's (configs from before it).
    let any = k.json(&["restore", "--component", "all", "--dry-run"]);
    assert_ne!(runs(&any), weekly_run, "{any}");
    // With it: the weekly run, both its targets from it.
    let weekly = k.json(&["restore", "--plan", "weekly", "--component", "all", "--dry-run"]);
    assert_eq!(runs(&weekly), weekly_run, "{weekly}");
    let targets = weekly["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 2);
    assert!(targets.iter().all(|t| t["from_run"] == true), "{weekly}");
    // --plan daily --component all: only daily's target.
    let daily = k.json(&["restore", "--plan", "daily", "--component", "all", "--dry-run"]);
    assert_eq!(daily["targets"].as_array().unwrap().len(), 1, "{daily}");
    let out = k.run(&["restore", "--plan", "monthly", "--component", "all", "--dry-run"]);
    assert!(
        stderr(&out).contains("no plan named \"monthly\" in kura.toml (configured: daily, weekly)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn config_check_lists_every_mistake_with_its_line_and_a_hint() {
    let mut k = Kura::new();
    config(
        &mut k,
        "[target.app_db]\ntype = \"sqlite\"\npath = \"/srv/app.db\"\n\
         [plan.daily]\nschedule = \"0 2 * *\"\ntargets = [\"app_db\"]\ncopy_to = [\"offsite\"]\n\
         [plan.weekly]\nschedule = \"0 2 * * SUN\"\ntargets = [\"app_db\"]\nretain = 3\n",
    );
    let out = k.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let cfg = k.path("kura.toml").display().to_string();
    // Lines count the repository section config() puts first.
    assert!(
        text.contains(&format!("{cfg}:8:1: error: plan.daily.schedule: \"0 2 * *\" has 4 fields")),
        "{text}"
    );
    assert!(text.contains("  hint: five cron fields"), "{text}");
    assert!(text.contains(&format!("{cfg}:14:1: error: plan.weekly.retain: unknown key")), "{text}");
    let json = k.cmd(&["config", "check", "--json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 2, "{v}");

    // Fixed, the two plans now meet at Sunday 02:00: a warning, exit 0.
    std::fs::write(
        k.path("kura.toml"),
        format!(
            "[repository.main]\nurl = \"{}\"\n[target.app_db]\ntype = \"sqlite\"\npath = \"/srv/app.db\"\n\
             [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"app_db\"]\n\
             [plan.weekly]\nschedule = \"0 2 * * SUN\"\ntargets = [\"app_db\"]\n",
            k.repo
        ),
    )
    .unwrap();
    let text = k.ok(&["config", "check"]);
    assert!(
        text.contains("warning: plan.weekly.schedule: plans daily and weekly both back up app_db"),
        "{text}"
    );
}

#[test]
fn a_plan_lock_or_history_planted_as_a_symlink_is_refused_not_followed() {
    let k = with_configs("[plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\"]\n");
    let state = k.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let victim = k.path("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    std::os::unix::fs::symlink(&victim, state.join("plan-daily.lock")).unwrap();
    let out = k.run(&["run", "daily"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
    assert_eq!(k.snapshot_ids().len(), 0, "nothing ran");

    std::fs::remove_file(state.join("plan-daily.lock")).unwrap();
    std::os::unix::fs::symlink(&victim, state.join("history.db")).unwrap();
    let out = k.run(&["run", "daily"]);
    // The backup stands; the history is not written through the link.
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("history"), "{}", stderr(&out));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
}

#[test]
fn a_snapshot_forgotten_and_pruned_while_a_restore_reads_it_stays_readable_until_the_restore_ends() {
    let k = Kura::new();
    k.init();
    let src = k.path("src");
    make_tree(&src);
    let id = k.backup(&[&src]);
    let (gate, out) = (k.path("gate"), k.path("out"));
    // The restore stops after making directories, before any content.
    let restore = k
        .cmd(&["restore", &id, "--target", out.to_str().unwrap()])
        .env("KURA_TEST_RESTORE_GATE", &gate)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("the restore to reach its gate", 20, || gate.with_extension("waiting").exists());
    // Retention forgets the snapshot; prune marks its packs and, a grace
    // of zero later, would delete them: the restore's session stops it.
    k.ok(&["forget", &id]);
    k.ok(&["prune", "--grace", "0s"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let held = k.json(&["prune", "--grace", "0s"]);
    assert_eq!(held["packs_deleted"], 0, "{held}");
    assert!(held["markers_waiting"].as_u64().unwrap() >= 1, "{held}");
    std::fs::write(&gate, b"").unwrap();
    let done = restore.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_same_tree(&src, &restored(&out, &src));
    // The restore over, its session gone: the space comes back.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let freed = k.json(&["prune", "--grace", "0s"]);
    assert!(freed["packs_deleted"].as_u64().unwrap() >= 1, "{freed}");
}

/// `kura doctor`'s lines, as (verdict, check) pairs, and its exit code.
fn doctor(k: &Kura) -> (Option<i32>, Vec<(String, String, String)>) {
    // The repository's own password file, not the caller's variable.
    let out = k.cmd(&["doctor", "--json"]).env_remove("KURA_PASSWORD").output().unwrap();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stderr(&out)));
    let lines = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["verdict"].as_str().unwrap().to_string(),
                f["check"].as_str().unwrap().to_string(),
                f["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.code(), lines)
}

fn verdict_of(lines: &[(String, String, String)], check: &str) -> (String, String) {
    let (v, _, d) =
        lines.iter().find(|(_, c, _)| c == check).unwrap_or_else(|| panic!("no check {check} in {lines:?}"));
    (v.clone(), d.clone())
}

#[test]
fn doctor_passes_a_good_setup_and_catches_each_broken_precondition() {
    let mut k = Kura::new();
    let (conf, db, hook) = (k.path("etc"), k.path("app.db"), k.path("maintenance.sh"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t(v)").unwrap();
    std::fs::write(&hook, "#!/bin/sh\nexit 0\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (pw, mnt) = (k.path("main.pw"), k.path("mnt"));
    std::fs::write(&pw, PASSWORD).unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = k.path("kura.toml");
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    let write = |repo: &std::path::Path, extra_target: &str, plan_extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n\
                 [target.configs]\ntype = \"files\"\npaths = [\"{}\"]\npre_restore = \"{} --on\"\n\
                 [target.app_db]\ntype = \"sqlite\"\npath = \"{}\"\n{extra_target}\n\
                 [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\", \"app_db\"]\n{plan_extra}\n",
                repo.display(),
                pw.display(),
                conf.display(),
                hook.display(),
                db.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    let repo = k.path("repo");
    write(&repo, "", "");
    k.ok(&["init", "--repository", "main"]);
    k.ok(&["run", "daily"]);
    let (code, lines) = doctor(&k);
    assert_eq!(code, Some(0), "{lines:?}");
    assert!(lines.iter().all(|(v, _, _)| v == "OK"), "{lines:?}");
    for check in [
        "repository main",
        "free space for main",
        "target configs",
        "target app_db",
        "pre_restore hook of configs",
        "schedule of plan daily",
        "password file of main",
    ] {
        verdict_of(&lines, check);
    }
    assert!(
        verdict_of(&lines, "schedule of plan daily").1.contains("next: "),
        "the next fire times are shown"
    );
    assert!(verdict_of(&lines, "repository main").1.contains("clocks agree within"), "{lines:?}");

    // This machine's clock two hours off the storage's.
    let out = k
        .cmd(&["doctor", "--json"])
        .env_remove("KURA_PASSWORD")
        .env("KURA_TEST_CLOCK_OFFSET_SECS", "7200")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("this machine's clock is 2h 0m ahead of the storage's"), "{said}");

    // Each precondition broken in turn.
    std::fs::write(&pw, "wrong horse").unwrap();
    let (code, lines) = doctor(&k);
    assert_eq!(code, Some(1));
    assert_eq!(verdict_of(&lines, "repository main").0, "FAIL", "{lines:?}");
    std::fs::write(&pw, PASSWORD).unwrap();

    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(verdict_of(&doctor(&k).1, "password file of main").0, "WARN");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();

    std::fs::rename(&conf, k.path("etc.moved")).unwrap();
    let (v, d) = verdict_of(&doctor(&k).1, "target configs");
    assert_eq!(v, "FAIL");
    assert!(d.contains("missing"), "{d}");
    std::fs::rename(k.path("etc.moved"), &conf).unwrap();

    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(verdict_of(&doctor(&k).1, "pre_restore hook of configs").0, "FAIL");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    std::fs::remove_file(&db).unwrap();
    assert_eq!(verdict_of(&doctor(&k).1, "target app_db").0, "FAIL");
    rusqlite::Connection::open(&db).unwrap().execute_batch("CREATE TABLE t(v)").unwrap();

    // A weekly plan that keeps only what is younger than a day.
    write(&repo, "", "keep = { within = \"1d\" }\n[plan.weekly]\nschedule = \"0 3 * * 0\"\ntargets = [\"configs\"]\nkeep = { within = \"1d\" }");
    let lines = doctor(&k).1;
    assert_eq!(verdict_of(&lines, "retention of plan weekly").0, "FAIL", "{lines:?}");
    assert_eq!(verdict_of(&lines, "retention of plan daily").0, "OK");

    // A secret written into a config others can read.
    write(&repo, "", "");
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        &format!("password_file = \"{}\"", pw.display()),
        &format!("password_file = \"{}\"\ns3_secret_access_key = \"hunter2\"", pw.display()),
    );
    std::fs::write(&cfg, text).unwrap();
    let lines = doctor(&k).1;
    if let Some((v, _, d)) = lines.iter().find(|(_, c, _)| c == "config file") {
        assert_eq!(v, "FAIL", "{d}");
    } else {
        panic!("no config file check: {lines:?}");
    }

    // A repository that can be read but not written.
    write(&repo, "", "");
    let _ro = tmpfs(&mnt, "8m");
    let small = mnt.join("repo");
    write(&small, "", "");
    k.ok(&["init", "--repository", "main"]);
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,ro", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let (v, d) = verdict_of(&doctor(&k).1, "repository main");
    assert_eq!(v, "FAIL");
    assert!(d.contains("refuses writes"), "{d}");
    let st = std::process::Command::new("mount")
        .args(["-o", "remount,rw", mnt.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());

    // Less free space than the last run stored.
    std::fs::write(conf.join("big.bin"), noise(5_000_000, 9)).unwrap();
    k.ok(&["run", "daily"]);
    let (v, d) = verdict_of(&doctor(&k).1, "free space for main");
    assert_eq!(v, "FAIL", "{d}");
}

/// The shell lines of the fenced block after `heading` in `md`.
fn commands_after(md: &str, heading: &str) -> Vec<String> {
    let from = md.find(heading).unwrap_or_else(|| panic!("no {heading} in\n{md}"));
    let rest = &md[from..];
    let start = rest.find("```sh\n").expect("a command block") + 6;
    let end = start + rest[start..].find("```").expect("its end");
    rest[start..end].lines().map(str::to_string).collect()
}

#[test]
fn drp_names_everything_and_its_restore_commands_work_as_printed() {
    let mut k = Kura::new();
    let (conf, db, pw) = (k.path("etc"), k.path("app.db"), k.path("main.pw"));
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("app.conf"), b"workers = 4\n").unwrap();
    std::fs::write(conf.join("extra.conf"), b"debug = false\n").unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute_batch("CREATE TABLE t(v); INSERT INTO t VALUES ('one'), ('two');")
        .unwrap();
    std::fs::write(&pw, PASSWORD).unwrap();
    let cfg = k.path("kura.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repository.main]\nurl = \"{}\"\npassword_file = \"{}\"\n\
             [repository.spare]\nurl = \"{}\"\npassword_command = \"printf tok-9f8e7d\"\n\
             [target.configs]\ntype = \"files\"\ncomponent = \"configs\"\npaths = [\"{}\"]\n\
             [target.app_db]\ntype = \"sqlite\"\npath = \"{}\"\n\
             [plan.daily]\nschedule = \"0 2 * * *\"\ntargets = [\"configs\", \"app_db\"]\nkeep = {{ daily = 7, weekly = 4 }}\nrpo = \"24h\"\nrto = \"1h\"\n",
            k.repo,
            pw.display(),
            k.path("spare").display(),
            conf.display(),
            db.display()
        ),
    )
    .unwrap();
    k.env.push(("KURA_CONFIG".into(), cfg.display().to_string()));
    k.init();
    let out = k.cmd(&["init", "--repo", "spare"]).env_remove("KURA_PASSWORD").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    k.ok(&["run", "daily"]);
    k.ok(&["drill", "--plan", "daily"]);
    let md = k.ok(&["drp"]);
    for want in [
        "| configs | files | configs |",
        "| app_db | sqlite | database |",
        &format!("| main | {} | in the file {} |", k.repo, pw.display()),
        "| daily | `0 2 * * *` | configs, app_db | 7 daily, 4 weekly | - | 1d | 1h |",
        "(restored in ",
        &format!("repository **main**: the file {}", pw.display()),
    ] {
        assert!(md.contains(want), "{want} missing from\n{md}");
    }
    assert!(md.contains("| printed by its password_command (`printf`) |"), "{md}");
    assert!(md.contains("repository.spare.password_command in kura.toml"), "{md}");
    assert!(!md.contains(PASSWORD) && !md.contains("tok-9f8e7d"), "never the secrets");
    let html_path = k.path("drp.html");
    k.ok(&["drp", "--format", "html", "--output", html_path.to_str().unwrap()]);
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("<pre><code>kura --config"), "{html}");

    // Run the commands as printed: `kura` on PATH, the password only in
    // its file.
    let bin = k.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_kura"), bin.join("kura")).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let run = |line: &str| {
        let out = std::process::Command::new("sh")
            .args(["-c", line])
            .env("PATH", &path)
            .env("KURA_STATE_DIR", k.path("state"))
            .env("KURA_TEST_INSECURE_KDF", "1")
            .env_remove("KURA_PASSWORD")
            .env_remove("KURA_CONFIG")
            .env_remove("KURA_REPOSITORY")
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}: {}", stderr(&out));
    };
    // The database damaged: scenario 1.
    rusqlite::Connection::open(&db).unwrap().execute_batch("DELETE FROM t").unwrap();
    for line in commands_after(&md, "### 1.") {
        run(&line);
    }
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "scenario 1 restored the database");
    // Everything gone: scenario 3.
    std::fs::remove_dir_all(&conf).unwrap();
    std::fs::remove_file(&db).unwrap();
    for line in commands_after(&md, "### 3.") {
        run(&line);
    }
    assert_eq!(std::fs::read(conf.join("app.conf")).unwrap(), b"workers = 4\n");
    assert_eq!(std::fs::read(conf.join("extra.conf")).unwrap(), b"debug = false\n");
    let rows: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 2, "scenario 3 restored everything");
}
