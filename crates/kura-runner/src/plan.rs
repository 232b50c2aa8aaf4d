//! A plan run once (`kura run PLAN`, and each slot of `kura serve`): never
//! two at once, one run over the plan's targets, then copies to its
//! `copy_to` repositories, then retention of its snapshots and, if the plan
//! says so, a prune, each repository once.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kura_format::Id;
use kura_policy::{Config, Plan};
use kura_repo::prune::{prune, PruneOptions, PruneReport};
use serde::Serialize;

use crate::backup::{backup_run, BackupRequest, RunReport};
use crate::copy::{copy_between, label, CopyReport, CopyRequest};
use crate::retention::{self, Scope};
use crate::{Context, RepoSpec, Repos, RunError};

/// Held while a plan runs: an exclusive `flock` on
/// `STATE_DIR/plan-NAME.lock`, which the kernel drops when the process
/// ends however it ends, so a killed run never blocks the next one.
pub struct PlanLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

impl PlanLock {
    pub fn acquire(state_dir: &Path, plan: &str, ctx: &Context) -> Result<PlanLock, RunError> {
        crate::history::make_state_dir(state_dir)?;
        let path = state_dir.join(format!("plan-{plan}.lock"));
        // Never through a symlink: a state directory others can write must
        // not let them aim the lock at a file of their choosing.
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(|e| RunError::from(kura_repo::RepoError::io(&path, e)))?;
        if kura_repo::try_lock(&file).is_err() {
            let holder = std::fs::read_to_string(&path).unwrap_or_default().trim().to_string();
            return Err(RunError::PlanRunning { plan: plan.to_string(), holder });
        }
        // Who holds it, for the message a second run prints.
        let _ = file.set_len(0);
        let _ = writeln!(
            file,
            "pid {} since {}",
            std::process::id(),
            ctx.clock.now().format("%Y-%m-%d %H:%M:%S UTC")
        );
        Ok(PlanLock { _file: file, path })
    }
}

/// Since when a run of `plan` has held its lock, if one does: read from
/// the kernel's table of locks (`/proc/locks`), never by taking the lock,
/// which would make a run starting at that instant fail.
pub fn running_since(state_dir: &Path, plan: &str) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let path = state_dir.join(format!("plan-{plan}.lock"));
    let meta = std::fs::symlink_metadata(&path).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
    let held = locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"FLOCK")
            && f.get(5).is_some_and(|id| {
                let mut p = id.split(':');
                let (ma, mi, ino) = (p.next(), p.next(), p.next());
                ma.and_then(|v| u32::from_str_radix(v, 16).ok()) == Some(major)
                    && mi.and_then(|v| u32::from_str_radix(v, 16).ok()) == Some(minor)
                    && ino.and_then(|v| v.parse::<u64>().ok()) == Some(meta.ino())
            })
    });
    if !held {
        return None;
    }
    let text = std::fs::read_to_string(&path).ok()?;
    Some(text.split_once(" since ").map(|(_, t)| t.trim().to_string()).unwrap_or_default())
}

/// One repository's retention and prune after the run.
#[derive(Debug, Serialize)]
pub struct Upkeep {
    pub repository: String,
    pub forgotten: Vec<Id>,
    pub pruned: Option<PruneReport>,
    /// Set when retention or prune failed: the backups stand.
    pub error: Option<String>,
}

#[derive(Debug)]
pub struct PlanReport {
    pub plan: String,
    pub run: RunReport,
    /// One per source repository and `copy_to` repository.
    pub copies: Vec<CopyReport>,
    pub upkeep: Vec<Upkeep>,
    /// Each repository's size after the run.
    pub sizes: Vec<RepositorySize>,
}

impl PlanReport {
    /// Whether a copy failed: its snapshots are safe in the source, but
    /// the second copy the plan promises is missing.
    pub fn copy_failed(&self) -> bool {
        self.copies.iter().any(|c| c.error.is_some())
    }

    /// How the run ended, as the history records and the daemon logs it:
    /// `failed` (nothing saved), `partial` (a target, a copy or the
    /// retention failed), `warnings`, or `ok`.
    pub fn status(&self) -> &'static str {
        let (saved, failed) = (self.run.saved().len(), self.run.failed().len());
        match (saved, failed) {
            (0, _) => "failed",
            (_, f) if f > 0 => "partial",
            _ if self.upkeep.iter().any(|u| u.error.is_some()) || self.copy_failed() => "partial",
            _ if self.run.warned() => "warnings",
            _ => "ok",
        }
    }
}

/// Runs `plan` once, under its lock: the backups, then the copies, then
/// retention and prune in every repository involved.
pub async fn run_plan(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    plan: &Plan,
    state_dir: &Path,
) -> Result<PlanReport, RunError> {
    let _lock = PlanLock::acquire(state_dir, &plan.name, ctx)?;
    let targets = plan.targets.iter().map(|n| cfg.target(n)).collect::<Result<Vec<_>, _>>()?;
    let written_to = match &plan.repository {
        Some(r) => Some(RepoSpec::configured(cfg, r, ctx.retry.clone())?),
        None => None,
    };
    let req =
        BackupRequest { plan: Some(plan.name.clone()), repository: written_to.clone(), ..Default::default() };
    let run = backup_run(ctx, repos, cfg, &targets, &req).await;
    // Each repository once, with the plan's targets that write to it.
    let mut by_repo: BTreeMap<String, (RepoSpec, Vec<String>)> = BTreeMap::new();
    for t in &targets {
        let spec = match &written_to {
            Some(s) => Ok(s.clone()),
            None => repos.spec_for(cfg, t),
        };
        if let Ok(spec) = spec {
            by_repo.entry(spec.url.clone()).or_insert_with(|| (spec, Vec::new())).1.push(t.name.clone());
        }
    }
    let scope = |names: &[String]| Scope {
        targets: names.to_vec(),
        // Only this host's: another host's follow its own plan.
        host: Some(ctx.hostname.clone()),
        plan: Some(plan.name.clone()),
        zone: plan.zone.clone(),
    };
    let mut copies = Vec::new();
    let mut upkeep_of: BTreeMap<String, (RepoSpec, Vec<String>)> = by_repo.clone();
    for to in &plan.copy_to {
        let to = RepoSpec::configured(cfg, to, ctx.retry.clone())?;
        for (from, names) in by_repo.values() {
            let report = match copy_kept(ctx, repos, from, &to, plan, scope(names)).await {
                Ok(r) => r,
                Err(e) => {
                    CopyReport { from: label(from), to: label(&to), copied: Vec::new(), error: Some(e) }
                }
            };
            copies.push(report);
            upkeep_of
                .entry(to.url.clone())
                .or_insert_with(|| (to.clone(), Vec::new()))
                .1
                .extend(names.clone());
        }
    }
    let upkeep_sizes = upkeep_of.clone();
    let mut upkeep = Vec::new();
    if !plan.keep.is_empty() || plan.prune {
        for (spec, names) in upkeep_of.into_values() {
            let name = label(&spec);
            let mut u = Upkeep { repository: name, forgotten: Vec::new(), pruned: None, error: None };
            if let Err(e) = keep_and_prune(repos, &spec, plan, scope(&names), &mut u).await {
                u.error = Some(e.to_string());
            }
            upkeep.push(u);
        }
    }
    // What each repository holds now, for the metrics and reports: one
    // listing per run, so that no scrape ever lists a bucket.
    let mut sizes = Vec::new();
    for (spec, _) in upkeep_sizes.into_values() {
        let measured = match repos.open(&spec).await {
            Ok(repo) => repo.list_packs().await.map(|p| p.values().sum::<u64>()).map_err(RunError::from),
            Err(e) => Err(e),
        };
        match measured {
            Ok(bytes) => sizes.push(RepositorySize { repository: label(&spec), bytes }),
            Err(e) => tracing::warn!(repository = %label(&spec), "cannot measure the repository: {e}"),
        }
    }
    Ok(PlanReport { plan: plan.name.clone(), run, copies, upkeep, sizes })
}

/// The bytes of every pack a repository holds.
#[derive(Debug, Clone, Serialize)]
pub struct RepositorySize {
    pub repository: String,
    pub bytes: u64,
}

/// Copies the plan's snapshots that `from` holds and its retention keeps
/// (copying what is about to be forgotten would be wasted) and that `to`
/// lacks: a copy that failed last night is made up tonight.
async fn copy_kept(
    ctx: &Context,
    repos: &Repos,
    from: &RepoSpec,
    to: &RepoSpec,
    plan: &Plan,
    scope: Scope,
) -> Result<CopyReport, RunError> {
    let only = if plan.keep.is_empty() {
        None
    } else {
        let src = repos.open(from).await?;
        let verdicts = retention::judge(&src, &plan.keep, &scope).await?;
        Some(verdicts.iter().filter(|v| v.kept()).map(|v| v.id).collect())
    };
    let req = CopyRequest {
        snapshots: Vec::new(),
        plan: scope.plan,
        targets: scope.targets,
        host: scope.host,
        only,
    };
    copy_between(ctx, repos, from, to, &req).await
}

async fn keep_and_prune(
    repos: &Repos,
    spec: &RepoSpec,
    plan: &Plan,
    scope: Scope,
    u: &mut Upkeep,
) -> Result<(), RunError> {
    let repo = repos.open(spec).await?;
    if !plan.keep.is_empty() {
        let verdicts = retention::judge(&repo, &plan.keep, &scope).await?;
        u.forgotten = retention::apply(&repo, &verdicts).await?;
    }
    if plan.prune {
        u.pruned = Some(prune(&repo, &PruneOptions::default()).await?);
    }
    Ok(())
}
