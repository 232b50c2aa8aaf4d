//! The runner as a library: a run over a SQLite and a files target into a
//! local repository, a restore planned and carried out in place, with the
//! events a caller sees, on an injected clock. No binary, no printing.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kura_format::clock::{Clock, ManualClock};
use kura_format::crypto::KdfParams;
use kura_policy::Config;
use kura_repo::{InitOptions, Repository};
use kura_runner::backup::{backup_run, BackupRequest};
use kura_runner::password::Source;
use kura_runner::restore::{self, RestoreRequest, Restored};
use kura_runner::{Context, Event, Recorder, Repos, RunError, Selector, Unlock};
use kura_store::{LocalStore, RetryPolicy};

struct Setup {
    dir: tempfile::TempDir,
    cfg: Config,
    ctx: Context,
    events: Arc<Recorder>,
    clock: Arc<ManualClock>,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(root.join("etc/app.conf"), b"workers = 4\n").unwrap();
    let db = rusqlite::Connection::open(root.join("app.db")).unwrap();
    db.execute_batch("CREATE TABLE t(v TEXT); INSERT INTO t VALUES ('first');").unwrap();
    drop(db);
    std::fs::write(root.join("pw"), b"runner-test\n").unwrap();
    let store = Arc::new(LocalStore::new(root.join("repo")));
    let opts = InitOptions { kdf: KdfParams::insecure_for_tests(), ..Default::default() };
    Repository::init(store, b"runner-test", &opts).await.unwrap();
    let text = format!(
        r#"
[repository.main]
url = "{root}/repo"
password_file = "{root}/pw"

[target.app_db]
type = "sqlite"
path = "{root}/app.db"

[target.configs]
type = "files"
paths = ["{root}/etc"]
component = "configs"
"#,
        root = root.display()
    );
    let cfg = Config::parse(&text, &|_| None).unwrap();
    let t0: DateTime<Utc> = DateTime::parse_from_rfc3339("2030-03-01T02:00:00Z").unwrap().with_timezone(&Utc);
    let clock = Arc::new(ManualClock::new(t0));
    let events = Arc::new(Recorder::default());
    let ctx = Context {
        clock: clock.clone(),
        sink: events.clone(),
        retry: RetryPolicy::default(),
        root: false,
        hostname: "web-1".into(),
        username: "ops".into(),
        state_dir: dir.path().join("state"),
    };
    Setup { dir, cfg, ctx, events, clock }
}

fn repos(s: &Setup) -> Repos {
    Repos::new(Unlock::default(), s.clock.clone(), RetryPolicy::default())
}

#[tokio::test]
async fn a_run_saves_every_target_under_one_id_and_time_and_says_so_in_events() {
    let s = setup().await;
    let targets: Vec<_> = ["app_db", "configs"].iter().map(|n| s.cfg.target(n).unwrap()).collect();
    let report = backup_run(&s.ctx, &repos(&s), &s.cfg, &targets, &BackupRequest::default()).await;
    assert_eq!(report.saved(), ["app_db", "configs"], "{report:?}");
    assert!(report.failed().is_empty());
    assert_eq!(report.time, s.clock.now());

    let spec = kura_runner::RepoSpec::configured(&s.cfg, "main", RetryPolicy::default()).unwrap();
    let (snaps, _) = repos(&s).open(&spec).await.unwrap().snapshots().await.unwrap();
    assert_eq!(snaps.len(), 2);
    for (_, snap) in &snaps {
        assert_eq!(snap.run, Some(report.run), "one run id");
        assert_eq!(snap.time, report.time, "one time, the clock's");
        assert_eq!(snap.hostname, "web-1");
    }

    let events = s.events.events();
    let kinds: Vec<String> = events
        .iter()
        .map(|e| match e {
            Event::RunStarted { .. } => "run-started".to_string(),
            Event::TargetStarted { target, .. } => format!("start {target}"),
            Event::TargetFinished { target } => format!("end {target}"),
            Event::TargetSaved { target, .. } => format!("saved {target}"),
            Event::RunFinished { saved, failed, .. } => format!("run-finished {saved:?} {failed:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "run-started",
            "start app_db",
            "end app_db",
            "saved app_db",
            "start configs",
            "end configs",
            "saved configs",
            "run-finished [\"app_db\", \"configs\"] []"
        ]
    );
    let read = events.iter().find_map(|e| match e {
        Event::TargetStarted { target, counters, .. } if target == "configs" => {
            Some(counters.bytes_read.load(std::sync::atomic::Ordering::Relaxed))
        }
        _ => None,
    });
    assert_eq!(read, Some(12), "the counters a progress display reads moved");
}

#[tokio::test]
async fn a_target_whose_repository_does_not_open_fails_alone_and_says_why() {
    let s = setup().await;
    // A wrong password from the caller's own sources, tried first, and a
    // repository's password_file that is wrong too.
    std::fs::write(s.dir.path().join("pw"), "also wrong").unwrap();
    let unlock = Unlock {
        sources: vec![Source::Secret { secret: b"wrong".to_vec(), from: "the test".into() }],
        ..Default::default()
    };
    let repos = Repos::new(unlock, s.clock.clone(), RetryPolicy::default());
    let targets = vec![s.cfg.target("configs").unwrap()];
    let report = backup_run(&s.ctx, &repos, &s.cfg, &targets, &BackupRequest::default()).await;
    let failure = report.targets[0].result.as_ref().unwrap_err();
    assert!(failure.opening);
    match &failure.error {
        RunError::WrongPassword { from, .. } => {
            assert!(from.starts_with("the passwords came from the test, then "), "{from}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!failure.error.is_transient(), "a wrong password is not worth retrying");
}

#[tokio::test]
async fn a_planned_restore_changes_nothing_and_its_execution_keeps_the_old_copy() {
    let s = setup().await;
    let repos = repos(&s);
    let targets = vec![s.cfg.target("configs").unwrap()];
    let report = backup_run(&s.ctx, &repos, &s.cfg, &targets, &BackupRequest::default()).await;
    assert_eq!(report.saved(), ["configs"]);

    let conf = s.dir.path().join("etc/app.conf");
    std::fs::write(&conf, b"workers = 0 # broken\n").unwrap();
    s.clock.advance(chrono::Duration::hours(3));
    let t = s.cfg.target("configs").unwrap();
    let req = RestoreRequest::default();
    let plan =
        restore::plan(&s.ctx, &repos, &s.cfg, t, &Selector::Run(report.run.to_hex()), &req).await.unwrap();
    assert_eq!(plan.id, report.targets[0].result.as_ref().unwrap().id);
    assert!(plan.steps.iter().any(|l| l.starts_with("overwrite 1 entries and add 0")), "{:?}", plan.steps);
    assert_eq!(std::fs::read(&conf).unwrap(), b"workers = 0 # broken\n", "planning touches nothing");

    let (_tx, stop) = tokio::sync::watch::channel(None);
    let done = restore::execute(&s.ctx, plan, &req, stop).await.unwrap();
    assert_eq!(std::fs::read(&conf).unwrap(), b"workers = 4\n");
    let [Restored::Tree { kept: Some(kept), changes, .. }] = done.restored.as_slice() else {
        panic!("{done:?}")
    };
    assert_eq!(changes.overwritten, 1, "as planned");
    assert_eq!(
        std::fs::read(kept.join("app.conf")).unwrap(),
        b"workers = 0 # broken\n",
        "the old copy is kept"
    );
    assert!(s
        .events
        .events()
        .iter()
        .any(|e| matches!(e, Event::Restored { target, .. } if target == "configs")));
}

#[tokio::test]
async fn a_stop_signal_before_the_restore_leaves_the_live_copy_and_still_runs_post_restore() {
    let s = setup().await;
    let repos = repos(&s);
    let targets = vec![s.cfg.target("app_db").unwrap()];
    backup_run(&s.ctx, &repos, &s.cfg, &targets, &BackupRequest::default()).await;
    let mut t = s.cfg.target("app_db").unwrap().clone();
    let marker = s.dir.path().join("post-ran");
    t.post_restore = Some(format!("echo restarted; touch {}", marker.display()));
    let req = RestoreRequest::default();
    let plan = restore::plan(&s.ctx, &repos, &s.cfg, &t, &Selector::Latest, &req).await.unwrap();
    let (tx, stop) = tokio::sync::watch::channel(None);
    tx.send(Some("SIGTERM")).unwrap();
    let err = restore::execute(&s.ctx, plan, &req, stop).await.unwrap_err();
    assert!(matches!(err, RunError::Interrupted { signal: "SIGTERM" }), "{err:?}");
    assert!(marker.exists(), "post_restore runs after an interruption");
    let lines: Vec<String> = s
        .events
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Hook { hook: "post_restore", line: Some(l), .. } => Some(l),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["restarted"], "hook output arrives as events");
}
