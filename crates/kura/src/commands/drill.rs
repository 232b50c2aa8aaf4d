//! `kura drill [--plan P | --target T… | --all]`: restore drills
//! (`kura_runner::drill`): each target's newest snapshot restored into a
//! scratch place, checked, timed and removed; recorded in the history, so
//! health, metrics and alerts know the last drill and the measured RTO.
use crate::cli::{DrillArgs, Global};
use crate::output::{code, human_bytes, print_json, say, Failure};

pub async fn run(g: &Global, a: &DrillArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    // Each unit is drilled and recorded on its own: a plan, or targets.
    let mut units: Vec<(Option<kura_policy::Plan>, Vec<kura_policy::Target>)> = Vec::new();
    if a.all {
        for p in cfg.plans.values() {
            let ts = p.targets.iter().map(|t| cfg.target(t).cloned()).collect::<Result<Vec<_>, _>>();
            units.push((Some(p.clone()), ts.map_err(|e| Failure::new(e.to_string()))?));
        }
        if units.is_empty() {
            return Err(Failure::new("kura.toml has no plans to drill").hint("use --target NAME"));
        }
    } else if let Some(name) = &a.plan {
        let p = cfg.plans.get(name).ok_or_else(|| {
            let known: Vec<&str> = cfg.plans.keys().map(String::as_str).collect();
            Failure::new(format!("no plan named {name:?} (configured: {})", known.join(", ")))
        })?;
        let ts = p.targets.iter().map(|t| cfg.target(t).cloned()).collect::<Result<Vec<_>, _>>();
        units.push((Some(p.clone()), ts.map_err(|e| Failure::new(e.to_string()))?));
    } else if !a.targets.is_empty() {
        let ts = a.targets.iter().map(|t| cfg.target(t).cloned()).collect::<Result<Vec<_>, _>>();
        units.push((None, ts.map_err(|e| Failure::new(e.to_string()))?));
    } else {
        return Err(Failure::new("say what to drill").hint("kura drill --plan NAME, --target NAME or --all"));
    }
    let ctx = super::context(g)?;
    let repos = super::repos(g, Some(&cfg))?;
    let state = super::state_dir();
    let step = super::target_restore::step_gate();
    let mut reports = Vec::new();
    for (plan, targets) in &units {
        let stop = super::target_restore::catch_signals();
        let report =
            kura_runner::drill::drill(&ctx, &repos, &cfg, plan.as_ref(), targets, stop, &step).await?;
        kura_runner::history::note(&state.join("history.db"), |h| h.record_drill(&report));
        reports.push(report);
    }
    if !cfg.notify.is_empty() {
        if let Err(e) = kura_monitor::notify::tick(&cfg, &state, ctx.clock.now(), &ctx.hostname, false).await
        {
            tracing::warn!("notifications: {e}");
        }
    }
    let ok = reports.iter().all(|r| r.ok());
    if g.json {
        print_json(&reports);
    } else {
        for r in &reports {
            for s in &r.swept {
                say(g, format!("removed {s}, left by an interrupted drill"));
            }
            for t in &r.targets {
                let passed = t.checks.iter().filter(|c| c.ok).count();
                let name = match &t.database {
                    Some(db) => format!("{} ({db})", t.target),
                    None => t.target.clone(),
                };
                match &t.error {
                    None => say(
                        g,
                        format!(
                            "ok    {name}: restored {} in {:.1}s; {passed} check(s) passed",
                            human_bytes(t.bytes),
                            t.seconds
                        ),
                    ),
                    Some(e) => crate::output::errln!("FAIL  {name}: {e}"),
                }
            }
            let took = (r.finished - r.started).num_milliseconds() as f64 / 1000.0;
            say(
                g,
                format!(
                    "drill{}: {} in {took:.1}s (the measured restore time)",
                    r.plan.as_ref().map(|p| format!(" of plan {p}")).unwrap_or_default(),
                    if r.ok() { "passed" } else { "FAILED" }
                ),
            );
        }
    }
    Ok(if ok { code::OK } else { code::FAILED })
}
