//! `kura restore --target NAME`: restore a configured target in place,
//! safely. The runner plans it (`kura_runner::restore::plan`); this prints
//! the plan, asks for confirmation on a terminal unless --yes, and has the
//! runner carry it out, SIGINT and SIGTERM stopping it with post_restore
//! still run.
//!
//! `kura restore --component database|configs|data|logs|all` restores every
//! target of that component as of one run: the plans are printed together,
//! confirmed once, and carried out one target after the other.
use std::io::IsTerminal;

use chrono::{DateTime, Local, Utc};
use kura_policy::Config;
use kura_runner::restore::{self, RestorePlan, RestoreReport, RestoreRequest, Stop};
use kura_runner::Selector;

use crate::cli::{Global, RestoreArgs};
use crate::output::{print_json, say, Failure};

mod show;
use show::{hooks_json, show_plan};

fn parse_at(s: &str) -> Result<DateTime<Utc>, Failure> {
    crate::when::parse(s, super::clock().now().with_timezone(&Local), false).ok_or_else(|| {
        Failure::new(format!("--at {s:?} is not a date or time")).hint(format!("use {}", crate::when::FORMS))
    })
}

/// A date or time as seconds since the epoch; a bare day means its first
/// second, or with `end_of_day` its last.
fn parse_day(s: &str, end_of_day: bool) -> Result<i64, Failure> {
    crate::when::parse(s, super::clock().now().with_timezone(&Local), !end_of_day)
        .map(|t| t.timestamp())
        .ok_or_else(|| {
            Failure::new(format!("{s:?} is not a date or time")).hint(format!("use {}", crate::when::FORMS))
        })
}

fn selector(a: &RestoreArgs) -> Result<Selector, Failure> {
    Ok(match (&a.from, &a.run, &a.at) {
        (Some(id), _, _) => Selector::Id(id.clone()),
        (_, Some(run), _) => Selector::Run(run.clone()),
        (_, _, Some(at)) => Selector::At { time: parse_at(at)?, text: at.clone() },
        _ => Selector::Latest,
    })
}

fn request(a: &RestoreArgs, cfg: &Config) -> Result<RestoreRequest, Failure> {
    let plan = match &a.plan {
        Some(name) => Some(cfg.plans.get(name).cloned().ok_or_else(|| {
            let known: Vec<&str> = cfg.plans.keys().map(String::as_str).collect();
            Failure::new(format!(
                "no plan named {name:?} in kura.toml (configured: {})",
                if known.is_empty() { "none".to_string() } else { known.join(", ") }
            ))
        })?),
        None => None,
    };
    Ok(RestoreRequest {
        plan,
        into: a.into.clone(),
        tables: a.tables.clone(),
        database: a.database.clone(),
        keep_old: !a.no_keep_old,
        mirror: a.mirror,
        no_owner: a.no_owner,
        lock_timeout: a.lock_timeout,
        hooks: a.hooks,
        include: a.include.clone(),
        start: a.start.as_deref().map(|s| parse_day(s, false)).transpose()?,
        end: a.end.as_deref().map(|s| parse_day(s, true)).transpose()?,
        force: a.force,
        overwrite: a.overwrite,
        step: step_gate(),
        sample: None,
    })
}

/// `KURA_TEST_STEP_GATE=STEP:PATH`: when a database restore reaches STEP
/// (say `mysql-renamed`), it creates `PATH.waiting` and waits until `PATH`
/// exists, so a test can kill it exactly between two statements.
pub(crate) fn step_gate() -> kura_sources::Step {
    let Some((at, gate)) = std::env::var("KURA_TEST_STEP_GATE")
        .ok()
        .and_then(|v| v.split_once(':').map(|(s, p)| (s.to_string(), std::path::PathBuf::from(p))))
    else {
        return kura_sources::Step::default();
    };
    kura_sources::Step::new(move |step| {
        if step == at {
            let _ = std::fs::write(gate.with_extension("waiting"), b"");
            while !gate.exists() {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    })
}

fn confirm(g: &Global, a: &RestoreArgs, req: &RestoreRequest) -> Result<(), Failure> {
    if a.yes || !req.touches_live() {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() || g.json {
        let what = match &a.into {
            None => "refusing to restore in place without confirmation".to_string(),
            Some(p) => format!("refusing to write over {}, which exists, without confirmation", p.display()),
        };
        return Err(Failure::new(what).hint("pass --yes, or --dry-run to see the plan"));
    }
    eprint!("proceed? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| Failure::new(e.to_string()))?;
    if !matches!(answer.trim(), "y" | "Y" | "yes") {
        return Err(Failure::new("restore cancelled; nothing was changed"));
    }
    Ok(())
}

/// SIGINT and SIGTERM, caught from now on: one that arrives while
/// pre_restore runs still stops the restore before it starts.
pub fn catch_signals() -> Stop {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::watch::channel(None);
    if let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            let _ = tx.send(Some(name));
        });
    }
    rx
}

fn dry_run_json(p: &RestorePlan, req: &RestoreRequest) -> serde_json::Value {
    serde_json::json!({
        "target": p.target.name, "snapshot": p.id, "plan": p.steps, "hooks": hooks_json(req, p),
        "keep_old": p.keep_old,
    })
}

pub async fn run(g: &Global, a: &RestoreArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    if let Some(c) = &a.component {
        return run_component(g, a, &cfg, c).await;
    }
    let name = a.target.as_deref().ok_or_else(|| {
        Failure::new("restore needs --target NAME or --component C").hint("`kura restore --help` shows both")
    })?;
    let t = super::find_target(&cfg, name)?;
    let (ctx, req) = (super::context(g)?, request(a, &cfg)?);
    let repos = super::repos(g, Some(&cfg))?;
    let p = restore::plan(&ctx, &repos, &cfg, t, &selector(a)?, &req).await?;
    show_plan(g, &req, &p);
    if a.dry_run {
        if g.json {
            let mut v = dry_run_json(&p, &req);
            v["dry_run"] = true.into();
            v["objects"] = serde_json::json!(p.objects.as_ref().map(|o| serde_json::json!({
                "write": o.written, "replace": o.replaced, "skip": o.skipped,
            })));
            print_json(&v);
        }
        return Ok(0);
    }
    confirm(g, a, &req)?;
    let report = restore::execute(&ctx, p, &req, catch_signals()).await?;
    if g.json {
        print_json(&report);
    }
    Ok(exit_code(std::slice::from_ref(&report)))
}

/// 3 when a restore carried warnings, else 0.
fn exit_code(reports: &[RestoreReport]) -> u8 {
    if reports.iter().any(RestoreReport::warned) {
        crate::output::code::PARTIAL_BACKUP
    } else {
        0
    }
}

async fn run_component(g: &Global, a: &RestoreArgs, cfg: &Config, component: &str) -> Result<u8, Failure> {
    if a.target.is_some() {
        return Err(Failure::new("give --target or --component, not both"));
    }
    let (ctx, req) = (super::context(g)?, request(a, cfg)?);
    let repos = super::repos(g, Some(cfg))?;
    let plan = restore::plan_component(&ctx, &repos, cfg, component, &selector(a)?, &req).await?;
    say(g, format!("restoring component {component} as of run {}:", plan.run.short()));
    for p in &plan.plans {
        show_plan(g, &req, p);
        if !plan.from_run(p) {
            say(g, "  (this target was not in that run: its newest snapshot before it)");
        }
    }
    if a.dry_run {
        if g.json {
            let plans: Vec<_> = plan
                .plans
                .iter()
                .map(|p| {
                    let mut v = dry_run_json(p, &req);
                    v["from_run"] = plan.from_run(p).into();
                    v
                })
                .collect();
            print_json(&serde_json::json!({ "run": plan.run, "targets": plans, "dry_run": true }));
        }
        return Ok(0);
    }
    confirm(g, a, &req)?;
    let run = plan.run;
    let done = restore::execute_component(&ctx, plan.plans, &req, catch_signals()).await.map_err(|c| {
        let mut f = Failure::from(c.error).context(format!("target {}", c.target));
        if !c.done.is_empty() && f.code == crate::output::code::FAILED {
            // Some targets were restored: not the same as nothing.
            f = f.with_code(crate::output::code::PARTIAL);
        }
        let list = |v: Vec<String>| if v.is_empty() { "none".to_string() } else { v.join(", ") };
        f.hint = Some(format!(
            "restored before it: {}; not attempted: {}",
            list(c.done.iter().map(|d| d.target.clone()).collect()),
            list(c.left)
        ));
        f
    })?;
    if g.json {
        print_json(&serde_json::json!({ "run": run, "targets": done }));
    }
    Ok(exit_code(&done))
}
