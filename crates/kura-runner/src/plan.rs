//! A plan run once (`kura run PLAN`, and later each slot of `kura serve`):
//! never two at once, one run over the plan's targets, then retention of
//! their snapshots and, if the plan says so, a prune, each repository once.
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use kura_format::Id;
use kura_policy::{Config, Plan};
use kura_repo::prune::{prune, PruneOptions, PruneReport};
use serde::Serialize;

use crate::backup::{backup_run, BackupRequest, RunReport};
use crate::retention::{self, Scope};
use crate::{Context, Repos, RunError};

/// Held while a plan runs: an exclusive `flock` on
/// `STATE_DIR/plan-NAME.lock`, which the kernel drops when the process
/// ends however it ends, so a killed run never blocks the next one.
pub struct PlanLock {
    _file: std::fs::File,
    pub path: PathBuf,
}

impl PlanLock {
    pub fn acquire(state_dir: &Path, plan: &str, ctx: &Context) -> Result<PlanLock, RunError> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| RunError::from(kura_repo::RepoError::io(state_dir, e)))?;
        let path = state_dir.join(format!("plan-{plan}.lock"));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
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
    pub upkeep: Vec<Upkeep>,
}

/// Runs `plan` once, under its lock.
pub async fn run_plan(
    ctx: &Context,
    repos: &Repos,
    cfg: &Config,
    plan: &Plan,
    state_dir: &Path,
) -> Result<PlanReport, RunError> {
    let _lock = PlanLock::acquire(state_dir, &plan.name, ctx)?;
    let targets = plan.targets.iter().map(|n| cfg.target(n)).collect::<Result<Vec<_>, _>>()?;
    let run = backup_run(ctx, repos, cfg, &targets, &BackupRequest::default()).await;
    let mut upkeep = Vec::new();
    if !plan.keep.is_empty() || plan.prune {
        // Each repository once, with the plan's targets that write to it.
        let mut by_repo: BTreeMap<String, (crate::RepoSpec, Vec<String>)> = BTreeMap::new();
        for t in &targets {
            if let Ok(spec) = repos.spec_for(cfg, t) {
                by_repo.entry(spec.url.clone()).or_insert_with(|| (spec, Vec::new())).1.push(t.name.clone());
            }
        }
        for (url, (spec, names)) in by_repo {
            let name = spec.name.clone().unwrap_or(url);
            let mut u = Upkeep { repository: name, forgotten: Vec::new(), pruned: None, error: None };
            // Only this host's snapshots: another host's follow its own plan.
            let scope = Scope { targets: names, host: Some(ctx.hostname.clone()) };
            if let Err(e) = keep_and_prune(repos, &spec, plan, scope, &mut u).await {
                u.error = Some(e.to_string());
            }
            upkeep.push(u);
        }
    }
    Ok(PlanReport { plan: plan.name.clone(), run, upkeep })
}

async fn keep_and_prune(
    repos: &Repos,
    spec: &crate::RepoSpec,
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
