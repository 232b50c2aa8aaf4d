//! Run history: every plan run recorded in an SQLite database on this
//! machine (`STATE_DIR/history.db`): when, what, how much, and how it
//! ended. `kura history` reads it; monitoring will.
//!
//! The database is this machine's notebook, not a source of truth: the
//! repositories' snapshots are. Writes are one transaction per run, so a
//! kill leaves the runs before it whole.
use std::path::Path;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use serde::Serialize;

use crate::copy::CopyReport;
use crate::plan::PlanReport;
use crate::RunError;

/// One recorded run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Entry {
    pub id: i64,
    pub kind: String,
    pub plan: Option<String>,
    pub run: Option<String>,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub duration_ms: i64,
    /// `ok`, `warnings`, `partial` or `failed`.
    pub status: String,
    pub targets: Vec<TargetEntry>,
    pub forgotten: i64,
    pub bytes_pruned: i64,
    pub errors: Vec<String>,
    pub copies: Vec<CopyEntry>,
    /// The repository of a `verify`, `prune` or `forget` run on its own.
    pub repository: Option<String>,
}

/// One snapshot a run copied to another repository (or found there).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CopyEntry {
    pub from: String,
    pub to: String,
    pub target: Option<String>,
    pub source_snapshot: String,
    pub snapshot: String,
    pub present: bool,
    pub bytes_read: i64,
    pub bytes_added: i64,
    pub bytes_stored: i64,
    pub duration_ms: i64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetEntry {
    pub target: String,
    pub ok: bool,
    pub snapshot: Option<String>,
    pub files: i64,
    pub bytes_read: i64,
    pub bytes_added: i64,
    pub bytes_stored: i64,
    pub warnings: i64,
    pub error: Option<String>,
    /// Files new since the parent snapshot, and files changed: what the
    /// ransomware canary compares with the target's usual.
    pub files_new: i64,
    pub files_changed: i64,
    /// A drill's restore time for this target (0 for backups).
    pub duration_ms: i64,
}

pub struct History {
    db: Connection,
}

/// Opens the history at `path` and writes to it with `write`; a history
/// that cannot be opened or written is a warning, never a failed run (the
/// history is this machine's notebook; the repositories hold the truth).
pub fn note(path: &Path, write: impl FnOnce(&mut History) -> Result<i64, RunError>) {
    let written = History::open(path).and_then(|mut h| write(&mut h));
    if let Err(e) = written {
        tracing::warn!("{e}");
    }
}

/// Makes the state directory (plan locks, history) private to its owner
/// when it does not exist yet.
pub fn make_state_dir(dir: &Path) -> Result<(), RunError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| sql(dir, e))
}

fn sql(path: &Path, e: impl std::fmt::Display) -> RunError {
    RunError::History { path: path.to_path_buf(), message: e.to_string() }
}

/// Turns the file to write-ahead logging. SQLite answers "locked" at once,
/// without its busy handler, when another connection is opening the same
/// new file, so the change is retried here for as long as the busy timeout.
fn to_wal(db: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match db.query_row("PRAGMA journal_mode = WAL", [], |row| row.get::<_, String>(0)) {
            Ok(_) => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

impl History {
    /// Opens (and makes, the first time) the history at `path`.
    pub fn open(path: &Path) -> Result<History, RunError> {
        if let Some(dir) = path.parent() {
            make_state_dir(dir)?;
        }
        // Not through a symlink (SQLITE_OPEN_NOFOLLOW), for the same reason
        // as the plan locks.
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let mut db = Connection::open_with_flags(path, flags).map_err(|e| sql(path, e))?;
        db.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| sql(path, e))?;
        to_wal(&db).map_err(|e| sql(path, e))?;
        // Schema and upgrades in one write transaction: a daemon and a
        // `kura history` opening a new file at the same moment would
        // otherwise both see a column missing and both add it (the second
        // fails with "duplicate column").
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| sql(path, e))?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (
                 id INTEGER PRIMARY KEY,
                 kind TEXT NOT NULL,
                 plan TEXT,
                 run TEXT,
                 started TEXT NOT NULL,
                 finished TEXT NOT NULL,
                 duration_ms INTEGER NOT NULL,
                 status TEXT NOT NULL,
                 forgotten INTEGER NOT NULL DEFAULT 0,
                 bytes_pruned INTEGER NOT NULL DEFAULT 0,
                 errors TEXT NOT NULL DEFAULT '[]',
                 repository TEXT
             );
             CREATE TABLE IF NOT EXISTS run_targets (
                 run_id INTEGER NOT NULL REFERENCES runs(id),
                 target TEXT NOT NULL,
                 ok INTEGER NOT NULL,
                 snapshot TEXT,
                 files INTEGER NOT NULL,
                 bytes_read INTEGER NOT NULL,
                 bytes_added INTEGER NOT NULL,
                 bytes_stored INTEGER NOT NULL,
                 warnings INTEGER NOT NULL,
                 error TEXT,
                 duration_ms INTEGER NOT NULL DEFAULT 0,
                 files_new INTEGER NOT NULL DEFAULT 0,
                 files_changed INTEGER NOT NULL DEFAULT 0
             );
             CREATE TABLE IF NOT EXISTS run_copies (
                 run_id INTEGER NOT NULL REFERENCES runs(id),
                 from_repo TEXT NOT NULL,
                 to_repo TEXT NOT NULL,
                 target TEXT,
                 source_snapshot TEXT NOT NULL,
                 snapshot TEXT NOT NULL,
                 present INTEGER NOT NULL,
                 bytes_read INTEGER NOT NULL,
                 bytes_added INTEGER NOT NULL,
                 bytes_stored INTEGER NOT NULL,
                 duration_ms INTEGER NOT NULL
             );
             CREATE TABLE IF NOT EXISTS repository_sizes (
                 repository TEXT NOT NULL,
                 at TEXT NOT NULL,
                 bytes INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS runs_by_plan ON runs(plan, started);",
        )
        .map_err(|e| sql(path, e))?;
        // Added after the first release of the tables: older files gain them.
        let has =
            |table: &str, column: &str| tx.prepare(&format!("SELECT {column} FROM {table} LIMIT 0")).is_ok();
        if !has("runs", "repository") {
            tx.execute_batch("ALTER TABLE runs ADD COLUMN repository TEXT").map_err(|e| sql(path, e))?;
        }
        if !has("run_targets", "duration_ms") {
            tx.execute_batch("ALTER TABLE run_targets ADD COLUMN duration_ms INTEGER NOT NULL DEFAULT 0")
                .map_err(|e| sql(path, e))?;
        }
        if !has("run_targets", "files_new") {
            tx.execute_batch(
                "ALTER TABLE run_targets ADD COLUMN files_new INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE run_targets ADD COLUMN files_changed INTEGER NOT NULL DEFAULT 0;",
            )
            .map_err(|e| sql(path, e))?;
        }
        tx.commit().map_err(|e| sql(path, e))?;
        Ok(History { db })
    }

    /// Records a repository operation run on its own (`kura verify`,
    /// `kura prune`, `kura forget`): monitoring asks when the last verify
    /// passed.
    pub fn record_operation(&mut self, op: &Operation) -> Result<i64, RunError> {
        let path = self.path().to_path_buf();
        self.db
            .execute(
                "INSERT INTO runs (kind, repository, started, finished, duration_ms, status, forgotten, bytes_pruned, errors)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    op.kind,
                    op.repository,
                    op.started.to_rfc3339(),
                    op.finished.to_rfc3339(),
                    (op.finished - op.started).num_milliseconds(),
                    op.status,
                    op.forgotten as i64,
                    op.bytes_pruned as i64,
                    serde_json::to_string(&op.errors).expect("strings serialize"),
                ],
            )
            .map_err(|e| sql(&path, e))?;
        Ok(self.db.last_insert_rowid())
    }

    fn path(&self) -> &Path {
        Path::new(self.db.path().unwrap_or(""))
    }

    /// Records a plan run that ended at `finished`.
    pub fn record_plan(&mut self, report: &PlanReport, finished: DateTime<Utc>) -> Result<i64, RunError> {
        let run = &report.run;
        let mut errors: Vec<String> = run
            .targets
            .iter()
            .filter_map(|t| t.result.as_ref().err().map(|f| format!("{}: {}", t.target, f.error)))
            .collect();
        errors.extend(
            report.upkeep.iter().filter_map(|u| u.error.as_ref().map(|e| format!("{}: {e}", u.repository))),
        );
        errors.extend(report.copies.iter().filter_map(copy_error));
        let saved = run.saved().len();
        let status = report.status();
        let forgotten: usize = report.upkeep.iter().map(|u| u.forgotten.len()).sum();
        let pruned: u64 =
            report.upkeep.iter().filter_map(|u| u.pruned.as_ref()).map(|p| p.bytes_deleted).sum();
        let path = self.path().to_path_buf();
        let tx = self.db.transaction().map_err(|e| sql(&path, e))?;
        tx.execute(
            "INSERT INTO runs (kind, plan, run, started, finished, duration_ms, status, forgotten, bytes_pruned, errors)
             VALUES ('backup', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                report.plan,
                (saved > 0).then(|| run.run.to_hex()),
                run.time.to_rfc3339(),
                finished.to_rfc3339(),
                (finished - run.time).num_milliseconds(),
                status,
                forgotten as i64,
                pruned as i64,
                serde_json::to_string(&errors).expect("strings serialize"),
            ],
        )
        .map_err(|e| sql(&path, e))?;
        let id = tx.last_insert_rowid();
        for t in &run.targets {
            let (ok, snapshot, s, warnings, error) = match &t.result {
                Ok(s) => (true, Some(s.id.to_hex()), s.summary.clone(), s.warnings.len(), None),
                Err(f) => (false, None, Default::default(), 0, Some(f.error.to_string())),
            };
            tx.execute(
                "INSERT INTO run_targets (run_id, target, ok, snapshot, files, bytes_read, bytes_added, bytes_stored, warnings, error,
                                          files_new, files_changed)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    id,
                    t.target,
                    ok,
                    snapshot,
                    s.files as i64,
                    s.bytes as i64,
                    s.bytes_new as i64,
                    s.bytes_stored as i64,
                    warnings as i64,
                    error,
                    s.files_new as i64,
                    s.files_changed as i64
                ],
            )
            .map_err(|e| sql(&path, e))?;
        }
        for c in &report.copies {
            insert_copies(&tx, id, c).map_err(|e| sql(&path, e))?;
        }
        for s in &report.sizes {
            tx.execute(
                "INSERT INTO repository_sizes (repository, at, bytes) VALUES (?1, ?2, ?3)",
                params![s.repository, finished.to_rfc3339(), s.bytes as i64],
            )
            .map_err(|e| sql(&path, e))?;
        }
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(id)
    }

    /// Each repository's measured sizes since `since`, oldest first, and
    /// its newest size whenever measured.
    pub fn repository_sizes(&self, since: DateTime<Utc>) -> Result<SizeSeries, RunError> {
        let path = self.path().to_path_buf();
        let mut q = self
            .db
            .prepare(
                "SELECT repository, at, bytes FROM repository_sizes
                 WHERE at >= ?1 OR rowid IN (SELECT max(rowid) FROM repository_sizes GROUP BY repository)
                 ORDER BY at",
            )
            .map_err(|e| sql(&path, e))?;
        let rows = q
            .query_map(params![since.to_rfc3339()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })
            .map_err(|e| sql(&path, e))?;
        let mut out = SizeSeries::new();
        for row in rows {
            let (repo, at, bytes) = row.map_err(|e| sql(&path, e))?;
            if let Ok(at) = at.parse() {
                out.entry(repo).or_default().push((at, bytes.max(0) as u64));
            }
        }
        Ok(out)
    }

    /// Records a restore drill: one row per target with its restore time.
    pub fn record_drill(&mut self, report: &crate::drill::DrillReport) -> Result<i64, RunError> {
        let path = self.path().to_path_buf();
        let errors: Vec<String> = report
            .targets
            .iter()
            .filter_map(|t| {
                let name = match &t.database {
                    Some(db) => format!("{} ({db})", t.target),
                    None => t.target.clone(),
                };
                t.error.as_ref().map(|e| format!("{name}: {e}"))
            })
            .collect();
        let tx = self.db.transaction().map_err(|e| sql(&path, e))?;
        tx.execute(
            "INSERT INTO runs (kind, plan, started, finished, duration_ms, status, errors)
             VALUES ('drill', ?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                report.plan,
                report.started.to_rfc3339(),
                report.finished.to_rfc3339(),
                (report.finished - report.started).num_milliseconds(),
                report.status(),
                serde_json::to_string(&errors).expect("strings serialize"),
            ],
        )
        .map_err(|e| sql(&path, e))?;
        let id = tx.last_insert_rowid();
        for t in &report.targets {
            tx.execute(
                "INSERT INTO run_targets (run_id, target, ok, snapshot, files, bytes_read, bytes_added, bytes_stored, warnings, error,
                                          duration_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0, ?7, ?8)",
                params![
                    id,
                    t.target,
                    t.ok(),
                    t.snapshot,
                    t.files as i64,
                    t.bytes as i64,
                    t.error,
                    (t.seconds * 1000.0) as i64
                ],
            )
            .map_err(|e| sql(&path, e))?;
        }
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(id)
    }

    /// Records a `kura copy` that ran from `started` to `finished`.
    pub fn record_copy(
        &mut self,
        report: &CopyReport,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
    ) -> Result<i64, RunError> {
        let path = self.path().to_path_buf();
        let errors: Vec<String> = copy_error(report).into_iter().collect();
        let status = match (&report.error, report.copied.is_empty()) {
            (None, _) => "ok",
            (Some(_), true) => "failed",
            (Some(_), false) => "partial",
        };
        let tx = self.db.transaction().map_err(|e| sql(&path, e))?;
        tx.execute(
            "INSERT INTO runs (kind, started, finished, duration_ms, status, errors)
             VALUES ('copy', ?1, ?2, ?3, ?4, ?5)",
            params![
                started.to_rfc3339(),
                finished.to_rfc3339(),
                (finished - started).num_milliseconds(),
                status,
                serde_json::to_string(&errors).expect("strings serialize"),
            ],
        )
        .map_err(|e| sql(&path, e))?;
        let id = tx.last_insert_rowid();
        insert_copies(&tx, id, report).map_err(|e| sql(&path, e))?;
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(id)
    }

    /// Records what a daemon did instead of a run: a slot `missed` because
    /// the plan's previous run was still going, or a run `abandoned` at
    /// shutdown.
    pub fn record_event(
        &mut self,
        kind: &str,
        plan: &str,
        started: DateTime<Utc>,
        finished: DateTime<Utc>,
        error: &str,
    ) -> Result<i64, RunError> {
        let path = self.path().to_path_buf();
        self.db
            .execute(
                "INSERT INTO runs (kind, plan, started, finished, duration_ms, status, errors)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?1, ?6)",
                params![
                    kind,
                    plan,
                    started.to_rfc3339(),
                    finished.to_rfc3339(),
                    (finished - started).num_milliseconds(),
                    serde_json::to_string(&[error]).expect("strings serialize"),
                ],
            )
            .map_err(|e| sql(&path, e))?;
        Ok(self.db.last_insert_rowid())
    }

    /// Whether the run with this id is recorded.
    pub fn knows_run(&self, run: &str) -> Result<bool, RunError> {
        let path = self.path().to_path_buf();
        let n: i64 = self
            .db
            .query_row("SELECT count(*) FROM runs WHERE run = ?1", params![run], |r| r.get(0))
            .map_err(|e| sql(&path, e))?;
        Ok(n > 0)
    }

    /// Records a run read back from a repository's snapshots (`kura history
    /// rebuild`): what the snapshots say, no errors (a failed target left
    /// no snapshot to tell of it).
    pub fn record_rebuilt(&mut self, run: &RebuiltRun) -> Result<i64, RunError> {
        let path = self.path().to_path_buf();
        let tx = self.db.transaction().map_err(|e| sql(&path, e))?;
        tx.execute(
            "INSERT INTO runs (kind, plan, run, started, finished, duration_ms, status, errors)
             VALUES ('backup', ?1, ?2, ?3, ?4, ?5, ?6, '[]')",
            params![
                run.plan,
                run.run,
                run.started.to_rfc3339(),
                run.finished.to_rfc3339(),
                (run.finished - run.started).num_milliseconds(),
                if run.targets.iter().any(|t| t.warnings > 0) { "warnings" } else { "ok" },
            ],
        )
        .map_err(|e| sql(&path, e))?;
        let id = tx.last_insert_rowid();
        for t in &run.targets {
            tx.execute(
                "INSERT INTO run_targets (run_id, target, ok, snapshot, files, bytes_read, bytes_added, bytes_stored, warnings, error,
                                          files_new, files_changed)
                 VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, NULL, ?9, ?10)",
                params![
                    id,
                    t.target,
                    t.snapshot,
                    t.files,
                    t.bytes_read,
                    t.bytes_added,
                    t.bytes_stored,
                    t.warnings,
                    t.files_new,
                    t.files_changed
                ],
            )
            .map_err(|e| sql(&path, e))?;
        }
        tx.commit().map_err(|e| sql(&path, e))?;
        Ok(id)
    }

    /// When the newest recorded run of `plan` started (a run, not a missed
    /// slot): where a daemon's catch-up counts missed slots from.
    pub fn last_started(&self, plan: &str) -> Result<Option<DateTime<Utc>>, RunError> {
        let path = self.path().to_path_buf();
        let newest: Option<String> = self
            .db
            .query_row(
                "SELECT max(started) FROM runs WHERE plan = ?1 AND kind = 'backup'",
                params![plan],
                |r| r.get(0),
            )
            .map_err(|e| sql(&path, e))?;
        Ok(newest.and_then(|s| s.parse().ok()))
    }

    /// How many backup runs of `plan` ended well (`ok` or `warnings`) and
    /// how many did not (`partial` or `failed`).
    pub fn counts(&self, plan: &str) -> Result<(u64, u64), RunError> {
        let path = self.path().to_path_buf();
        self.db
            .query_row(
                "SELECT count(*) FILTER (WHERE status IN ('ok', 'warnings')),
                        count(*) FILTER (WHERE status IN ('partial', 'failed'))
                 FROM runs WHERE plan = ?1 AND kind = 'backup'",
                params![plan],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64)),
            )
            .map_err(|e| sql(&path, e))
    }

    /// The newest `limit` runs, of one plan or all, newest first.
    pub fn list(&self, plan: Option<&str>, limit: usize) -> Result<Vec<Entry>, RunError> {
        let path = self.path().to_path_buf();
        let mut q = self
            .db
            .prepare(
                "SELECT id, kind, plan, run, started, finished, duration_ms, status, forgotten, bytes_pruned, errors,
                        repository
                 FROM runs WHERE (?1 IS NULL OR plan = ?1) ORDER BY started DESC, id DESC LIMIT ?2",
            )
            .map_err(|e| sql(&path, e))?;
        let time = |s: String| s.parse::<DateTime<Utc>>().unwrap_or_default();
        let rows = q
            .query_map(params![plan, limit as i64], |r| {
                Ok(Entry {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    plan: r.get(2)?,
                    run: r.get(3)?,
                    started: time(r.get(4)?),
                    finished: time(r.get(5)?),
                    duration_ms: r.get(6)?,
                    status: r.get(7)?,
                    forgotten: r.get(8)?,
                    bytes_pruned: r.get(9)?,
                    errors: serde_json::from_str(&r.get::<_, String>(10)?).unwrap_or_default(),
                    targets: Vec::new(),
                    copies: Vec::new(),
                    repository: r.get(11)?,
                })
            })
            .map_err(|e| sql(&path, e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| sql(&path, e))?);
        }
        let mut q = self
            .db
            .prepare(
                "SELECT target, ok, snapshot, files, bytes_read, bytes_added, bytes_stored, warnings, error,
                        files_new, files_changed, duration_ms
                 FROM run_targets WHERE run_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| sql(&path, e))?;
        for e in &mut out {
            let rows = q
                .query_map(params![e.id], |r| {
                    Ok(TargetEntry {
                        target: r.get(0)?,
                        ok: r.get(1)?,
                        snapshot: r.get(2)?,
                        files: r.get(3)?,
                        bytes_read: r.get(4)?,
                        bytes_added: r.get(5)?,
                        bytes_stored: r.get(6)?,
                        warnings: r.get(7)?,
                        error: r.get(8)?,
                        files_new: r.get(9)?,
                        files_changed: r.get(10)?,
                        duration_ms: r.get(11)?,
                    })
                })
                .map_err(|e| sql(&path, e))?;
            for row in rows {
                e.targets.push(row.map_err(|e| sql(&path, e))?);
            }
        }
        let mut q = self
            .db
            .prepare(
                "SELECT from_repo, to_repo, target, source_snapshot, snapshot, present, bytes_read, bytes_added,
                        bytes_stored, duration_ms
                 FROM run_copies WHERE run_id = ?1 ORDER BY rowid",
            )
            .map_err(|e| sql(&path, e))?;
        for e in &mut out {
            let rows = q
                .query_map(params![e.id], |r| {
                    Ok(CopyEntry {
                        from: r.get(0)?,
                        to: r.get(1)?,
                        target: r.get(2)?,
                        source_snapshot: r.get(3)?,
                        snapshot: r.get(4)?,
                        present: r.get(5)?,
                        bytes_read: r.get(6)?,
                        bytes_added: r.get(7)?,
                        bytes_stored: r.get(8)?,
                        duration_ms: r.get(9)?,
                    })
                })
                .map_err(|e| sql(&path, e))?;
            for row in rows {
                e.copies.push(row.map_err(|e| sql(&path, e))?);
            }
        }
        Ok(out)
    }
}

/// Each repository's measured sizes, oldest first.
pub type SizeSeries = std::collections::BTreeMap<String, Vec<(DateTime<Utc>, u64)>>;

/// A repository operation outside a plan, for [`History::record_operation`].
#[derive(Debug, Clone)]
pub struct Operation {
    /// `verify`, `prune` or `forget`.
    pub kind: &'static str,
    pub repository: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    /// `ok`, `damage` (verify found problems) or `failed`.
    pub status: &'static str,
    pub forgotten: u64,
    pub bytes_pruned: u64,
    pub errors: Vec<String>,
}

/// A run as a repository's snapshots tell it.
#[derive(Debug, Clone)]
pub struct RebuiltRun {
    pub plan: Option<String>,
    pub run: String,
    pub started: DateTime<Utc>,
    pub finished: DateTime<Utc>,
    pub targets: Vec<TargetEntry>,
}

/// What `kura history rebuild` did.
#[derive(Debug, Default, Serialize)]
pub struct Rebuilt {
    pub repositories: Vec<String>,
    /// Runs found in the snapshots and added to the history.
    pub added: usize,
    /// Runs the history already held.
    pub known: usize,
    /// Repositories that could not be read, with why.
    pub errors: Vec<String>,
}

/// Rebuilds the history of runs from the snapshots of `specs` (the
/// repositories of kura.toml): every run id not yet recorded becomes a
/// run, its snapshots its targets. Copies (snapshots with `copied_from`)
/// are their source's run, not runs of their own.
pub async fn rebuild(
    history: &mut History,
    repos: &crate::Repos,
    specs: &[crate::RepoSpec],
) -> Result<Rebuilt, RunError> {
    use std::collections::BTreeMap;
    let mut out = Rebuilt::default();
    let mut runs: BTreeMap<String, RebuiltRun> = BTreeMap::new();
    for spec in specs {
        let name = crate::copy::label(spec);
        let repo = match repos.open(spec).await {
            Ok(r) => r,
            Err(e) => {
                out.errors.push(format!("{name}: {e}"));
                continue;
            }
        };
        let (snaps, _) = repo.snapshots().await?;
        out.repositories.push(name);
        for (id, s) in snaps {
            let (Some(run), None) = (s.run, &s.copied_from) else { continue };
            let entry = runs.entry(run.to_hex()).or_insert_with(|| RebuiltRun {
                plan: s.plan.clone(),
                run: run.to_hex(),
                started: s.time,
                finished: s.time,
                targets: Vec::new(),
            });
            let end = s.time + chrono::Duration::milliseconds(s.summary.duration_ms as i64);
            entry.finished = entry.finished.max(end);
            entry.targets.push(TargetEntry {
                target: s.target.clone().unwrap_or_else(|| s.paths.join(" ")),
                ok: true,
                snapshot: Some(id.to_hex()),
                files: s.summary.files as i64,
                bytes_read: s.summary.bytes as i64,
                bytes_added: s.summary.bytes_new as i64,
                bytes_stored: s.summary.bytes_stored as i64,
                warnings: s.warnings.len() as i64,
                error: None,
                files_new: s.summary.files_new as i64,
                files_changed: s.summary.files_changed as i64,
                duration_ms: 0,
            });
        }
    }
    for run in runs.values() {
        if history.knows_run(&run.run)? {
            out.known += 1;
        } else {
            history.record_rebuilt(run)?;
            out.added += 1;
        }
    }
    Ok(out)
}

fn copy_error(c: &CopyReport) -> Option<String> {
    c.error.as_ref().map(|e| format!("copy {} → {}: {e}", c.from, c.to))
}

fn insert_copies(tx: &rusqlite::Transaction, id: i64, c: &CopyReport) -> rusqlite::Result<()> {
    for s in &c.copied {
        tx.execute(
            "INSERT INTO run_copies (run_id, from_repo, to_repo, target, source_snapshot, snapshot, present,
                                     bytes_read, bytes_added, bytes_stored, duration_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![
                id,
                c.from,
                c.to,
                s.target,
                s.source.to_hex(),
                s.id.to_hex(),
                s.present,
                s.stats.bytes_read as i64,
                s.stats.bytes_new as i64,
                s.stats.bytes_stored as i64,
                s.stats.duration_ms as i64
            ],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{RunReport, Saved, TargetFailure, TargetOutcome};
    use kura_format::Id;

    fn report(plan: &str, at: &str, fail: bool) -> PlanReport {
        let saved = TargetOutcome {
            target: "app_db".into(),
            result: Ok(Saved {
                id: Id::random(),
                summary: kura_format::snapshot::Summary {
                    files: 1,
                    bytes: 4096,
                    bytes_new: 100,
                    ..Default::default()
                },
                warnings: Vec::new(),
            }),
        };
        let mut targets = vec![saved];
        if fail {
            targets.push(TargetOutcome {
                target: "logs".into(),
                result: Err(TargetFailure { error: RunError::usage("the disk is gone"), opening: false }),
            });
        }
        PlanReport {
            sizes: Vec::new(),
            plan: plan.into(),
            run: RunReport { run: Id::random(), time: at.parse().unwrap(), targets },
            copies: Vec::new(),
            upkeep: Vec::new(),
        }
    }

    #[test]
    fn runs_are_recorded_whole_and_listed_newest_first_by_plan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/history.db");
        let mut h = History::open(&path).unwrap();
        h.record_plan(
            &report("daily", "2026-12-01T02:00:00Z", false),
            "2026-12-01T02:00:07Z".parse().unwrap(),
        )
        .unwrap();
        h.record_plan(
            &report("daily", "2026-12-02T02:00:00Z", true),
            "2026-12-02T02:00:09Z".parse().unwrap(),
        )
        .unwrap();
        h.record_plan(
            &report("weekly", "2026-12-02T03:00:00Z", false),
            "2026-12-02T03:01:00Z".parse().unwrap(),
        )
        .unwrap();
        drop(h);
        // Reopened: what was written is there.
        let h = History::open(&path).unwrap();
        let daily = h.list(Some("daily"), 10).unwrap();
        assert_eq!(daily.len(), 2);
        assert_eq!(daily[0].status, "partial");
        assert_eq!(daily[0].duration_ms, 9_000);
        assert_eq!(daily[0].errors, ["logs: the disk is gone"]);
        assert_eq!(daily[0].targets.len(), 2);
        assert!(!daily[0].targets[1].ok && daily[0].targets[1].snapshot.is_none());
        assert_eq!(daily[1].status, "ok");
        assert_eq!((daily[1].targets[0].bytes_read, daily[1].targets[0].bytes_added), (4096, 100));
        assert_eq!(h.list(None, 10).unwrap().len(), 3);
        assert_eq!(h.list(None, 1).unwrap()[0].plan.as_deref(), Some("weekly"));
    }

    #[test]
    fn processes_opening_a_new_file_at_once_all_succeed() {
        // The daemon, `kura history` and `kura run` may all open a history
        // no one has made yet (the CI saw "duplicate column" from this race).
        for round in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("state{round}/history.db"));
            std::thread::scope(|s| {
                let opens: Vec<_> = (0..4).map(|_| s.spawn(|| History::open(&path).map(|_| ()))).collect();
                for open in opens {
                    open.join().unwrap().unwrap();
                }
            });
            let h = History::open(&path).unwrap();
            assert!(h.list(None, 1).unwrap().is_empty());
        }
    }

    #[test]
    fn a_file_from_before_the_later_columns_gains_them_and_keeps_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let old = Connection::open(&path).unwrap();
        old.execute_batch(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, plan TEXT, run TEXT,
                 started TEXT NOT NULL, finished TEXT NOT NULL, duration_ms INTEGER NOT NULL,
                 status TEXT NOT NULL, forgotten INTEGER NOT NULL DEFAULT 0,
                 bytes_pruned INTEGER NOT NULL DEFAULT 0, errors TEXT NOT NULL DEFAULT '[]');
             CREATE TABLE run_targets (run_id INTEGER NOT NULL REFERENCES runs(id), target TEXT NOT NULL,
                 ok INTEGER NOT NULL, snapshot TEXT, files INTEGER NOT NULL, bytes_read INTEGER NOT NULL,
                 bytes_added INTEGER NOT NULL, bytes_stored INTEGER NOT NULL, warnings INTEGER NOT NULL,
                 error TEXT);
             INSERT INTO runs (kind, plan, started, finished, duration_ms, status)
                 VALUES ('plan', 'daily', '2026-11-01T02:00:00+00:00', '2026-11-01T02:00:05+00:00', 5000, 'ok');
             INSERT INTO run_targets VALUES (1, 'app_db', 1, NULL, 1, 10, 5, 5, 0, NULL);",
        )
        .unwrap();
        drop(old);
        let mut h = History::open(&path).unwrap();
        h.record_plan(
            &report("daily", "2026-12-01T02:00:00Z", false),
            "2026-12-01T02:00:07Z".parse().unwrap(),
        )
        .unwrap();
        let runs = h.list(Some("daily"), 10).unwrap();
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].duration_ms, 5_000);
        assert_eq!(runs[1].targets[0].bytes_read, 10);
    }
}
