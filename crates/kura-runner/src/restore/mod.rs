//! Restoring configured targets in place, safely, in two steps: [`plan`]
//! works out everything a restore will do before anything is touched (the
//! snapshot, the destinations, what will be replaced and kept), and
//! [`execute`] carries a plan out: the hooks (post_restore always runs),
//! the restore of each kind through its source, and a stop signal. A
//! component restore plans every target of a component as of one run and
//! carries the plans out one after the other.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kura_format::snapshot::Snapshot;
use kura_format::Id;
use kura_policy::Target;
use kura_repo::Repository;
use kura_sources::object_store::{ObjectsRestored, RestoreOptions as ObjectOptions};
use kura_store::Store;
use serde::Serialize;

mod execute;
mod plan;
pub use execute::{execute, execute_component, ComponentFailure, Stop};
pub use plan::{plan, plan_component, ComponentPlan};

/// What a restore is asked to do, beyond which snapshot.
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// Write here instead of over the live copy (a path, or a database
    /// name), which is then not touched.
    pub into: Option<PathBuf>,
    /// Database targets: only these tables.
    pub tables: Vec<String>,
    /// PostgreSQL targets of several databases: only this one.
    pub database: Option<String>,
    /// Keep what an in-place restore replaces.
    pub keep_old: bool,
    /// Files targets in place: also move aside what the snapshot lacks.
    pub mirror: bool,
    /// PostgreSQL: give every object to the restoring user.
    pub no_owner: bool,
    /// How long a database restore waits for other sessions' locks.
    pub lock_timeout: Duration,
    /// Run the target's hooks for a restore `into` a new place too.
    pub hooks: bool,
    /// Object-store targets: key prefixes, a date range (seconds since the
    /// epoch), and whether existing objects are replaced.
    pub include: Vec<String>,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub force: bool,
    /// Directory restores only; refused here.
    pub overwrite: bool,
    /// Only snapshots a run of this plan made, from the repository it
    /// writes to; a component restore takes the plan's targets only.
    pub plan: Option<kura_policy::Plan>,
    /// Called at the named steps of a database swap (tests stop there).
    pub step: kura_sources::Step,
    /// Files and object_store targets `into` a new place: only a share of
    /// the files (a drill's sample).
    pub sample: Option<kura_repo::restore::Sample>,
}

impl Default for RestoreRequest {
    fn default() -> RestoreRequest {
        RestoreRequest {
            into: None,
            tables: Vec::new(),
            database: None,
            keep_old: true,
            mirror: false,
            no_owner: false,
            lock_timeout: Duration::from_secs(300),
            hooks: false,
            include: Vec::new(),
            start: None,
            end: None,
            force: false,
            overwrite: false,
            plan: None,
            step: kura_sources::Step::default(),
            sample: None,
        }
    }
}

impl RestoreRequest {
    /// The plan's name, when the restore is limited to one.
    pub fn plan_name(&self) -> Option<&str> {
        self.plan.as_ref().map(|p| p.name.as_str())
    }

    /// The repository `target`'s snapshots are read from: the plan's, when
    /// it names one, else the target's.
    pub async fn repository(
        &self,
        ctx: &crate::Context,
        repos: &crate::Repos,
        cfg: &kura_policy::Config,
        target: &kura_policy::Target,
    ) -> Result<std::sync::Arc<kura_repo::Repository>, crate::RunError> {
        match self.plan.as_ref().and_then(|p| p.repository.as_ref()) {
            Some(r) => repos.open(&crate::RepoSpec::configured(cfg, r, ctx.retry.clone())?).await,
            None => repos.for_target(cfg, target).await,
        }
    }

    /// Whether the target's hooks run: always in place; `into` a new place
    /// only when asked.
    pub fn runs_hooks(&self) -> bool {
        self.into.is_none() || self.hooks
    }

    /// Whether the restore touches live data: in place, or `into`
    /// something that already exists (a file, a non-empty folder). A copy
    /// into a new place needs no confirmation and runs no hooks: a monthly
    /// test restore must never stop production.
    pub fn touches_live(&self) -> bool {
        match &self.into {
            None => true,
            Some(p) => match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => std::fs::read_dir(p).map(|mut d| d.next().is_some()).unwrap_or(true),
                Ok(_) => true,
                Err(_) => false,
            },
        }
    }
}

type ObjectPlan = (Arc<dyn Store>, Option<(Arc<dyn Store>, String)>, ObjectsRestored);

/// One target's restore, planned: everything needed to show it and do it.
pub struct RestorePlan {
    pub target: Target,
    pub repo: Arc<Repository>,
    pub id: Id,
    pub snapshot: Snapshot,
    pub keep_old: bool,
    /// Where it goes: paths, or database names.
    pub dests: Vec<PathBuf>,
    /// In words, one line per step, for the user to confirm.
    pub steps: Vec<String>,
    /// An object-store target's restore as a dry run worked it out.
    pub objects: Option<ObjectsRestored>,
    pub(crate) pg_dumps: Vec<String>,
    pub(crate) object_opts: ObjectOptions,
    pub(crate) object_plan: Option<ObjectPlan>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What was restored, one per file, tree, database or object set.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Restored {
    /// A SQLite database, checked with `integrity_check` before the swap.
    Sqlite { path: PathBuf, bytes: u64, kept: Option<PathBuf>, integrity_check: &'static str },
    /// A files target's snapshot written into a new directory; a sample
    /// leaves some files out, counted here.
    Copy {
        path: PathBuf,
        files: u64,
        bytes: u64,
        #[serde(skip_serializing_if = "is_zero")]
        sampled_out: u64,
        #[serde(skip_serializing_if = "is_zero")]
        sampled_out_bytes: u64,
    },
    /// A files target's path restored in place.
    Tree {
        path: PathBuf,
        files: u64,
        bytes: u64,
        kept: Option<PathBuf>,
        changes: kura_sources::files::Counts,
    },
    /// A PostgreSQL database (or some of its tables).
    Postgres {
        database: String,
        bytes: u64,
        kept: Option<String>,
        sessions_ended: u64,
        warnings: Vec<String>,
    },
    /// A MySQL/MariaDB database (or some of its tables).
    Mysql {
        database: String,
        tables: Vec<String>,
        bytes: u64,
        kept: Option<String>,
        events_disabled: Vec<String>,
    },
    /// A command's stored output, fed to its restore command or written to a file.
    Command { bytes: u64, file: Option<PathBuf> },
    /// Objects written back to an object store, each read back.
    Objects {
        written: Vec<String>,
        replaced: Vec<String>,
        skipped: Vec<String>,
        bytes: u64,
        kept: Option<String>,
        warnings: Vec<String>,
    },
}

impl Restored {
    /// What could not be carried over, although the data was.
    pub fn warnings(&self) -> &[String] {
        match self {
            Restored::Postgres { warnings, .. } | Restored::Objects { warnings, .. } => warnings,
            _ => &[],
        }
    }
}

/// A target's restore, done.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub target: String,
    pub snapshot: Id,
    pub restored: Vec<Restored>,
    /// Kept copies removed afterwards by the target's rule.
    #[serde(skip)]
    pub kept_removed: Vec<String>,
}

impl RestoreReport {
    pub fn warned(&self) -> bool {
        self.restored.iter().any(|r| !r.warnings().is_empty())
    }
}
