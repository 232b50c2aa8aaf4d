//! One run over configured targets. Every snapshot of the run shares its
//! id and its time, so an application (database, configs, uploads) is
//! restorable as of one moment. A target that fails does not stop the
//! others.
use std::sync::Arc;

use chrono::{DateTime, Utc};
use kura_format::snapshot::{Summary, Warning};
use kura_format::Id;
use kura_policy::{Config, Target, TargetKind};
use kura_repo::backup::BackupOptions;
use kura_repo::{Counters, Repository};

use crate::event::Event;
use crate::{Context, Repos, RunError};

/// What the caller adds to every target's snapshot.
#[derive(Clone, Debug, Default)]
pub struct BackupRequest {
    /// Recorded as the snapshot's host; the context's by default.
    pub host: Option<String>,
    pub tags: Vec<String>,
    /// Read every file, even those the parent snapshot says are unchanged.
    pub force: bool,
    /// The plan this run is of, recorded in each snapshot.
    pub plan: Option<String>,
    /// Where every target writes, instead of its own repository.
    pub repository: Option<crate::RepoSpec>,
}

#[derive(Debug)]
pub struct RunReport {
    pub run: Id,
    pub time: DateTime<Utc>,
    pub targets: Vec<TargetOutcome>,
}

#[derive(Debug)]
pub struct TargetOutcome {
    pub target: String,
    pub result: Result<Saved, TargetFailure>,
}

#[derive(Debug, Clone)]
pub struct Saved {
    pub id: Id,
    pub summary: Summary,
    pub warnings: Vec<Warning>,
}

#[derive(Debug)]
pub struct TargetFailure {
    pub error: RunError,
    /// The target's repository could not be opened: nothing of it ran.
    pub opening: bool,
}

impl RunReport {
    pub fn saved(&self) -> Vec<&str> {
        self.targets.iter().filter(|t| t.result.is_ok()).map(|t| t.target.as_str()).collect()
    }

    pub fn failed(&self) -> Vec<&str> {
        self.targets.iter().filter(|t| t.result.is_err()).map(|t| t.target.as_str()).collect()
    }

    pub fn warned(&self) -> bool {
        self.targets.iter().any(|t| t.result.as_ref().is_ok_and(|s| !s.warnings.is_empty()))
    }
}

/// Backs up `targets`, one after the other, as one run.
pub async fn backup_run(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    targets: &[&Target],
    req: &BackupRequest,
) -> RunReport {
    let run = Id::random();
    let time = ctx.clock.now();
    ctx.sink.event(Event::RunStarted {
        run,
        time,
        targets: targets.iter().map(|t| t.name.clone()).collect(),
    });
    let mut outcomes = Vec::new();
    for t in targets {
        let opened = match &req.repository {
            Some(spec) => repos.open(spec).await,
            None => repos.for_target(cfg, t).await,
        };
        let result = match opened {
            Err(error) => Err(TargetFailure { error, opening: true }),
            Ok(repo) => {
                let opts = BackupOptions {
                    hostname: req.host.clone().unwrap_or_else(|| ctx.hostname.clone()),
                    username: ctx.username.clone(),
                    tags: req.tags.clone(),
                    target: Some(t.name.clone()),
                    run: Some(run),
                    time: Some(time),
                    force: req.force,
                    plan: req.plan.clone(),
                    chunking: chunking(t),
                    ..BackupOptions::default()
                };
                let counters = Arc::new(Counters::default());
                ctx.sink.event(Event::TargetStarted {
                    target: t.name.clone(),
                    what: "backup",
                    counters: counters.clone(),
                });
                let r = backup_target(ctx, &repo, t, opts, counters).await;
                ctx.sink.event(Event::TargetFinished { target: t.name.clone() });
                r.map_err(|error| TargetFailure { error, opening: false })
            }
        };
        match &result {
            Ok(s) => ctx.sink.event(Event::TargetSaved {
                target: t.name.clone(),
                id: s.id,
                summary: s.summary.clone(),
                warnings: s.warnings.clone(),
            }),
            Err(f) => ctx.sink.event(Event::TargetFailed {
                target: t.name.clone(),
                error: f.error.to_string(),
                hint: f.error.hint(),
            }),
        }
        outcomes.push(TargetOutcome { target: t.name.clone(), result });
    }
    let report = RunReport { run, time, targets: outcomes };
    ctx.sink.event(Event::RunFinished {
        run,
        saved: report.saved().into_iter().map(String::from).collect(),
        failed: report.failed().into_iter().map(String::from).collect(),
    });
    report
}

/// One target's snapshot, through its source.
async fn backup_target(
    ctx: &Context,
    repo: &Arc<Repository>,
    t: &Target,
    mut opts: BackupOptions,
    counters: Arc<Counters>,
) -> Result<Saved, RunError> {
    let r = match &t.kind {
        TargetKind::Sqlite(s) => kura_sources::sqlite::backup(repo, &s.path, &opts, counters).await?,
        TargetKind::Files(f) => {
            opts.excludes = f.exclude.clone();
            opts.changed_within = f.changed_within;
            opts.one_file_system = f.one_file_system;
            kura_repo::backup::backup(repo, &f.paths, &opts, counters).await?
        }
        TargetKind::Postgres(pg) => {
            let what = kura_sources::postgres::PgSource {
                url: &pg.url,
                databases: &pg.databases,
                tables: &pg.tables,
                exclude_tables: &pg.exclude_tables,
                jobs: pg.jobs,
            };
            kura_sources::postgres::backup(repo, &what, &opts, counters).await?
        }
        TargetKind::Command(c) => {
            kura_sources::command::backup(repo, &c.backup, &c.name, &opts, counters).await?
        }
        TargetKind::ObjectStore(o) => {
            let store = crate::object_store(o, &o.url, &ctx.retry)?;
            kura_sources::object_store::backup(repo, store, &opts, counters).await?
        }
        TargetKind::Mysql(my) => {
            // A backup still runs without the key; it only cannot finish
            // an interrupted restore's swap first.
            let key = crate::journal_key(ctx).inspect_err(|e| tracing::warn!("{e}")).ok();
            kura_sources::mysql::backup(repo, &my.url, &my.tables, key.as_ref(), &opts, counters).await?
        }
        other => {
            return Err(RunError::Unsupported(format!(
                "target type {} is not supported by this kura",
                other.type_name()
            )))
        }
    };
    Ok(Saved { id: r.id, summary: r.snapshot.summary, warnings: r.snapshot.warnings })
}

/// The chunk sizes of a target's streams: its own `chunk_size`, else
/// [`DATABASE_CHUNK`] for databases and commands, else the repository's
/// (format.md §6.1). A command's output is most often a dump made another
/// way (`mysqldump` in a container, `pg_dump --format=plain`): a plain
/// PostgreSQL dump of the benchmark's database grew 21.4% on day 2 in the
/// repository's chunks, 3.9% in these (docs/performance.md).
fn chunking(t: &kura_policy::Target) -> Option<kura_format::config::ChunkerParams> {
    let database = matches!(
        t.kind,
        TargetKind::Postgres(_) | TargetKind::Mysql(_) | TargetKind::Sqlite(_) | TargetKind::Command(_)
    );
    t.chunk_size.or(database.then_some(DATABASE_CHUNK)).map(kura_format::config::ChunkerParams::with_average)
}

/// A day of a database changes rows all through it (a few hundred
/// updates in a big table, statuses of recent orders, deletions here and
/// there), and each edit costs the chunk around it: 16 KiB chunks keep a
/// day's growth of a 450 MB dump with 940 such edits at 3.8% of its
/// storage, against 21% with 1 MiB ones (docs/performance.md).
const DATABASE_CHUNK: u32 = 16 << 10;
