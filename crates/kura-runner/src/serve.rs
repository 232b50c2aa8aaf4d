//! The daemon's scheduler (`kura serve`): every plan run at its schedule's
//! slots, never two runs of one plan at once, missed slots made up once
//! after downtime, a config reloaded without dropping a run, and a stop
//! that lets running work finish within a grace period.
//!
//! A slot whose plan is still running (here, or under `kura run` from
//! cron: the plan's lock says) is not doubled: it is recorded in the
//! history as `missed` and reported as an event. Slots that passed while
//! the daemon was down (or the machine slept) are run once, not once each,
//! when the plan has `catch_up`. Each run goes through
//! [`crate::plan::run_plan`] and is recorded like a `kura run`.
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use kura_policy::{Config, Plan};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::event::Event;
use crate::history::{self, History};
use crate::plan::{run_plan, PlanReport};
use crate::{Context, Repos, RunError};

/// What the daemon is told while it runs.
pub enum Control {
    /// A new, already validated config: plans are rescheduled from now;
    /// runs in progress finish under the config they started with.
    Reload(Box<Config>),
    /// Start nothing new; wait for running work at most `grace`, then
    /// abandon it.
    Stop { grace: Duration },
}

pub struct ServeOptions {
    pub state_dir: PathBuf,
}

/// Makes the repositories a config's runs open (its password sources).
pub type MakeRepos = Box<dyn Fn(&Config) -> Repos + Send + Sync>;

/// How the daemon ended.
#[derive(Debug, Default)]
pub struct Stopped {
    /// Plans whose run was still going when the grace period ended.
    pub abandoned: Vec<String>,
}

/// The next slot of `plan` after `after`, on the plan's wall clock (a
/// slot in a DST gap or fold fires once: `kura_policy::zone`).
fn next_slot(plan: &Plan, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    plan.schedule.next_after(plan.zone.local(after)).map(|t| plan.zone.instant(t))
}

struct Scheduled {
    plan: Plan,
    /// The next slot to fire.
    next: Option<DateTime<Utc>>,
    /// The next restore drill of the plan's targets.
    drill: Option<DateTime<Utc>>,
}

/// The next drill slot of `plan` after `after`.
fn next_drill(plan: &Plan, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let s = plan.drill.as_ref()?;
    s.next_after(plan.zone.local(after)).map(|t| plan.zone.instant(t))
}

/// Where each plan's schedule stands: from `now`, or for a plan that
/// catches up, from its last recorded run, so a slot missed while the
/// daemon was down is due at once.
fn schedule_all(cfg: &Config, now: DateTime<Utc>, history: Option<&History>) -> Vec<Scheduled> {
    cfg.plans
        .values()
        .map(|p| {
            let from = match (p.catch_up, history) {
                (true, Some(h)) => h.last_started(&p.name).ok().flatten().filter(|t| *t < now).unwrap_or(now),
                _ => now,
            };
            Scheduled { plan: p.clone(), next: next_slot(p, from), drill: next_drill(p, now) }
        })
        .collect()
}

/// Runs the plans of `cfg` on their schedules until told to stop.
pub async fn serve(
    ctx: Context,
    cfg: Config,
    make_repos: MakeRepos,
    opts: ServeOptions,
    mut control: mpsc::Receiver<Control>,
) -> Result<Stopped, RunError> {
    let history_path = opts.state_dir.join("history.db");
    let history = History::open(&history_path)?;
    let mut cfg = Arc::new(cfg);
    let mut repos = Arc::new(make_repos(&cfg));
    let mut plans = schedule_all(&cfg, ctx.clock.now(), Some(&history));
    drop(history);
    // Plan name → when its running run started.
    let mut running: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut tasks: JoinSet<(String, DateTime<Utc>, Result<PlanReport, RunError>)> = JoinSet::new();
    // Task → plan, to free a plan whose run panicked.
    let mut names: HashMap<tokio::task::Id, String> = HashMap::new();
    tracing::info!(plans = plans.len(), "kura serve started");
    loop {
        let now = ctx.clock.now();
        // Every plan whose slot has come: one run, however many slots
        // passed (downtime, a suspended machine).
        for s in &mut plans {
            let Some(due) = s.next.filter(|t| *t <= now) else { continue };
            s.next = next_slot(&s.plan, now);
            let name = s.plan.name.clone();
            if running.contains_key(&name) {
                missed(&ctx, &history_path, &name, due, "the previous run of the plan was still going");
                continue;
            }
            tracing::info!(plan = %name, slot = %due, "starting a scheduled run");
            running.insert(name.clone(), now);
            let (ctx, repos, cfg, plan, state) =
                (ctx.clone(), repos.clone(), cfg.clone(), s.plan.clone(), opts.state_dir.clone());
            let handle = tasks.spawn(async move {
                let r = run_plan(&ctx, &repos, &cfg, &plan, &state).await;
                (plan.name.clone(), now, r)
            });
            names.insert(handle.id(), name);
        }
        // Drills whose slot has come: each on its own task, recorded like
        // `kura drill`; one already running (the drill lock) is a missed
        // drill slot.
        for s in &mut plans {
            let Some(due) = s.drill.filter(|t| *t <= now) else { continue };
            s.drill = next_drill(&s.plan, now);
            tracing::info!(plan = %s.plan.name, slot = %due, "starting a scheduled restore drill");
            let (ctx, repos, cfg, plan) = (ctx.clone(), repos.clone(), cfg.clone(), s.plan.clone());
            let history_path = history_path.clone();
            tokio::spawn(async move {
                let targets: Result<Vec<_>, _> =
                    plan.targets.iter().map(|t| cfg.target(t).cloned()).collect();
                let targets = match targets {
                    Ok(t) => t,
                    Err(e) => return tracing::error!(plan = %plan.name, "drill not started: {e}"),
                };
                // Never stopped from outside: a daemon stopping drops it,
                // and the next drill sweeps its copy.
                let (_keep, stop) = tokio::sync::watch::channel(None);
                match crate::drill::drill(
                    &ctx,
                    &repos,
                    &cfg,
                    Some(&plan),
                    &targets,
                    stop,
                    &Default::default(),
                )
                .await
                {
                    Ok(report) => {
                        tracing::info!(plan = %plan.name, status = report.status(), "restore drill finished");
                        history::note(&history_path, |h| h.record_drill(&report));
                    }
                    Err(e) => tracing::error!(plan = %plan.name, "restore drill not run: {e}"),
                }
            });
        }
        let wake = plans.iter().flat_map(|s| [s.next, s.drill]).flatten().min();
        let sleep = wake
            .map(|w| (w - ctx.clock.now()).to_std().unwrap_or(Duration::ZERO))
            // Woken at least once a minute: a clock that jumped (a resumed
            // machine, NTP) is noticed within a minute.
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => match done {
                Ok((id, (name, started, result))) => {
                    names.remove(&id);
                    running.remove(&name);
                    finished(&ctx, &history_path, &name, started, result);
                }
                // A run that panicked: logged, and its plan free to run at
                // its next slot.
                Err(e) => {
                    if let Some(name) = names.remove(&e.id()) {
                        tracing::error!(plan = %name, error = %e, "the plan's run stopped unexpectedly");
                        running.remove(&name);
                    }
                }
            },
            msg = control.recv() => match msg {
                Some(Control::Reload(new)) => {
                    tracing::info!(plans = new.plans.len(), "configuration reloaded");
                    cfg = Arc::new(*new);
                    repos = Arc::new(make_repos(&cfg));
                    plans = schedule_all(&cfg, ctx.clock.now(), None);
                }
                Some(Control::Stop { grace }) => {
                    return Ok(stop(&ctx, &history_path, tasks, running, grace).await);
                }
                // The caller is gone: nothing waits for the runs.
                None => return Ok(stop(&ctx, &history_path, tasks, running, Duration::ZERO).await),
            },
        }
    }
}

/// Waits for running work up to `grace`; what is still running then is
/// abandoned: its snapshots are not written, so nothing half-made becomes
/// visible, and the next run proceeds (format.md §12).
async fn stop(
    ctx: &Context,
    history_path: &std::path::Path,
    mut tasks: JoinSet<(String, DateTime<Utc>, Result<PlanReport, RunError>)>,
    mut running: HashMap<String, DateTime<Utc>>,
    grace: Duration,
) -> Stopped {
    if !running.is_empty() {
        tracing::info!(
            running = running.len(),
            grace_secs = grace.as_secs_f64(),
            "stopping: no new runs; waiting for the running ones"
        );
    }
    let deadline = tokio::time::Instant::now() + grace;
    while !tasks.is_empty() {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok((name, started, result)))) => {
                running.remove(&name);
                finished(ctx, history_path, &name, started, result);
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    tasks.abort_all();
    let mut out = Stopped::default();
    for (name, started) in running {
        tracing::warn!(plan = %name, "abandoned at shutdown: its unfinished snapshots were not written");
        history::note(history_path, |h| {
            h.record_event(
                "abandoned",
                &name,
                started,
                ctx.clock.now(),
                "kura serve stopped before the run finished; nothing of it became visible",
            )
        });
        out.abandoned.push(name);
    }
    tracing::info!("kura serve stopped");
    out
}

fn missed(ctx: &Context, history_path: &std::path::Path, plan: &str, slot: DateTime<Utc>, why: &str) {
    tracing::warn!(plan = %plan, slot = %slot, "missed a slot: {why}");
    ctx.sink.event(Event::SlotMissed { plan: plan.to_string(), slot, reason: why.to_string() });
    history::note(history_path, |h| h.record_event("missed", plan, slot, slot, why));
}

/// Logs a finished run and records it.
fn finished(
    ctx: &Context,
    history_path: &std::path::Path,
    plan: &str,
    slot_started: DateTime<Utc>,
    result: Result<PlanReport, RunError>,
) {
    match result {
        Ok(report) => {
            let run = &report.run;
            let (saved, failed) = (run.saved(), run.failed());
            let status = report.status();
            tracing::info!(
                plan = %plan,
                run = %run.run.short(),
                status,
                saved = saved.len(),
                failed = failed.len(),
                copies = report.copies.iter().map(|c| c.new_copies()).sum::<usize>(),
                forgotten = report.upkeep.iter().map(|u| u.forgotten.len()).sum::<usize>(),
                duration_ms = (ctx.clock.now() - slot_started).num_milliseconds(),
                "plan run finished"
            );
            for t in &run.targets {
                if let Err(f) = &t.result {
                    tracing::error!(plan = %plan, target = %t.target, error = %f.error, "target failed");
                }
            }
            history::note(history_path, |h| h.record_plan(&report, ctx.clock.now()));
        }
        // Run by `kura run` from cron at the same time: its lock says so.
        Err(RunError::PlanRunning { holder, .. }) => {
            missed(ctx, history_path, plan, slot_started, &format!("the plan was already running ({holder})"))
        }
        Err(e) => tracing::error!(plan = %plan, error = %e, "plan run failed before it started"),
    }
}
