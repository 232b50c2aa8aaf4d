//! `kura run PLAN`: a plan of kura.toml once, for cron or a systemd timer
//! (`kura_runner::plan::run_plan`), with a one-line summary and the exit
//! code telling the scheduler what happened. A second run of the same
//! plan while one is running exits at once with code 12.
use crate::cli::{Global, RunArgs};
use crate::output::{code, human_bytes, print_json, say, Failure};

pub async fn run(g: &Global, a: &RunArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    let plan = cfg.plans.get(&a.plan).ok_or_else(|| {
        let known: Vec<&str> = cfg.plans.keys().map(String::as_str).collect();
        Failure::new(format!(
            "no plan named {:?} in kura.toml (configured: {})",
            a.plan,
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        ))
        .hint("a plan is a [plan.NAME] section with schedule and targets")
    })?;
    let ctx = kura_runner::Context {
        sink: std::sync::Arc::new(crate::render::Cli::summary_only(g)),
        ..super::context(g)?
    };
    let repos = super::repos(g, Some(&cfg))?;
    let started = std::time::Instant::now();
    let state = super::state_dir();
    let rid = kura_monitor::notify::run_id();
    kura_monitor::notify::ping_start(&cfg, &rid).await;
    let report = match kura_runner::plan::run_plan(&ctx, &repos, &cfg, plan, &state).await {
        Ok(r) => r,
        Err(e) => {
            // Busy (another run holds the plan) is not a failed backup.
            if !matches!(e, kura_runner::RunError::PlanRunning { .. }) {
                kura_monitor::notify::ping_end(&cfg, &rid, false, &e.to_string()).await;
            }
            return Err(e.into());
        }
    };
    // The history is this machine's record; failing to write it loses no
    // backup, so it is a warning, not a failed run.
    kura_runner::history::note(&state.join("history.db"), |h| h.record_plan(&report, ctx.clock.now()));
    // Cron leaves nothing running to be scraped: the metrics go out now,
    // and what the run changed in the open problems is told.
    for problem in kura_monitor::publish::publish(&cfg, &state, ctx.clock.now(), &ctx.hostname).await {
        tracing::warn!("{problem}");
    }
    let ok = report.status() == "ok" || report.status() == "warnings";
    let errors: Vec<String> = report
        .run
        .targets
        .iter()
        .filter_map(|t| t.result.as_ref().err().map(|f| format!("{}: {}", t.target, f.error)))
        .collect();
    kura_monitor::notify::ping_end(&cfg, &rid, ok, &errors.join("\n")).await;
    if !cfg.notify.is_empty() {
        if let Err(e) = kura_monitor::notify::tick(&cfg, &state, ctx.clock.now(), &ctx.hostname, false).await
        {
            tracing::warn!("notifications: {e}");
        }
    }

    let run = &report.run;
    let (saved, failed) = (run.saved(), run.failed());
    for t in &run.targets {
        if let Err(f) = &t.result {
            crate::output::errln!("kura: {}: {}", t.target, f.error);
            if let Some(h) = f.error.hint() {
                crate::output::errln!("hint: {h}");
            }
        }
    }
    let upkeep_failed: Vec<&kura_runner::plan::Upkeep> =
        report.upkeep.iter().filter(|u| u.error.is_some()).collect();
    for u in &upkeep_failed {
        crate::output::errln!(
            "kura: repository {}: retention: {}",
            u.repository,
            u.error.as_deref().unwrap_or_default()
        );
    }
    for c in report.copies.iter().filter(|c| c.error.is_some()) {
        let e = c.error.as_ref().expect("filtered");
        crate::output::errln!("kura: copy {} → {}: {e}", c.from, c.to);
        if let Some(h) = e.hint() {
            crate::output::errln!("hint: {h}");
        }
    }
    let exit = match (saved.is_empty(), failed.is_empty()) {
        (true, _) => code::FAILED,
        (false, false) => code::PARTIAL,
        (false, true) if !upkeep_failed.is_empty() || report.copy_failed() => code::PARTIAL,
        (false, true) if run.warned() => code::PARTIAL_BACKUP,
        (false, true) => code::OK,
    };
    let forgotten: usize = report.upkeep.iter().map(|u| u.forgotten.len()).sum();
    let freed: u64 = report.upkeep.iter().filter_map(|u| u.pruned.as_ref()).map(|p| p.bytes_deleted).sum();
    if g.json {
        let targets: Vec<_> = run
            .targets
            .iter()
            .map(|t| match &t.result {
                Ok(s) => serde_json::json!({ "target": t.target, "ok": true, "id": s.id, "summary": s.summary, "warnings": s.warnings }),
                Err(f) => serde_json::json!({ "target": t.target, "ok": false, "error": f.error.to_string() }),
            })
            .collect();
        print_json(&serde_json::json!({
            "plan": report.plan, "run": (!saved.is_empty()).then_some(run.run), "time": run.time,
            "targets": targets, "copies": report.copies, "retention": report.upkeep, "exit_code": exit,
        }));
    } else {
        let mut line = format!(
            "plan {}: run {} saved {} of {} target(s)",
            report.plan,
            run.run.short(),
            saved.len(),
            run.targets.len()
        );
        if !failed.is_empty() {
            line += &format!(" (FAILED {})", failed.join(", "));
        }
        for c in &report.copies {
            line += &match &c.error {
                None => format!("; copied {} to {}", c.new_copies(), c.to),
                Some(_) => format!("; copy to {} FAILED after {}", c.to, c.new_copies()),
            };
        }
        if !plan.keep.is_empty() {
            line += &format!("; retention forgot {forgotten} snapshot(s)");
        }
        if plan.prune {
            line += &format!("; prune freed {}", human_bytes(freed));
        }
        line += &format!("; {:.1}s", started.elapsed().as_secs_f64());
        say(g, line);
    }
    Ok(exit)
}
