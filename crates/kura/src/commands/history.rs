//! `kura history [--plan P]`: the runs this machine recorded
//! (`STATE_DIR/history.db`), newest first.
use chrono::Local;

use crate::cli::{Global, HistoryArgs, HistoryCommand};
use crate::output::{human_bytes, outln, print_json, say, Failure};

pub async fn run(g: &Global, a: &HistoryArgs) -> Result<u8, Failure> {
    let path = super::state_dir().join("history.db");
    if let Some(HistoryCommand::Rebuild) = a.command {
        return rebuild(g, &path).await;
    }
    if !path.exists() {
        if g.json {
            print_json(&serde_json::json!([]));
        } else {
            say(
                g,
                format!(
                    "no runs recorded yet ({} does not exist; `kura run PLAN` records them)",
                    path.display()
                ),
            );
        }
        return Ok(0);
    }
    let h = kura_runner::history::History::open(&path)?;
    let runs = h.list(a.plan.as_deref(), a.limit)?;
    if g.json {
        print_json(&runs);
        return Ok(0);
    }
    if runs.is_empty() {
        say(g, "no runs recorded");
        return Ok(0);
    }
    outln!(
        "{:<16}  {:<10}  {:<8}  {:>8}  {:>10}  {:>10}  targets",
        "started",
        "plan",
        "status",
        "seconds",
        "read",
        "added"
    );
    for r in &runs {
        let read: i64 = r.targets.iter().map(|t| t.bytes_read).sum();
        let added: i64 = r.targets.iter().map(|t| t.bytes_added).sum();
        let mut targets: Vec<String> = r
            .targets
            .iter()
            .map(|t| if t.ok { t.target.clone() } else { format!("{} FAILED", t.target) })
            .collect();
        let mut to: Vec<&str> = r.copies.iter().map(|c| c.to.as_str()).collect();
        to.dedup();
        for repo in to {
            let n = r.copies.iter().filter(|c| c.to == repo && !c.present).count();
            targets.push(format!("{n} copied to {repo}"));
        }
        outln!(
            "{:<16}  {:<10}  {:<8}  {:>8.1}  {:>10}  {:>10}  {}",
            r.started.with_timezone(&Local).format("%Y-%m-%d %H:%M"),
            match (&r.plan, r.kind.as_str()) {
                (Some(p), "backup") => p.clone(),
                (Some(p), kind) => format!("{p} ({kind})"),
                (None, "backup") => "-".into(),
                (None, kind) => format!("({kind})"),
            },
            r.status,
            r.duration_ms as f64 / 1000.0,
            human_bytes(read.max(0) as u64),
            human_bytes(added.max(0) as u64),
            targets.join(", ")
        );
        for e in &r.errors {
            outln!("    {e}");
        }
    }
    Ok(0)
}

/// `kura history rebuild`: the runs the repositories' snapshots tell of,
/// added to the history where it lacks them.
async fn rebuild(g: &Global, path: &std::path::Path) -> Result<u8, Failure> {
    let specs = match super::configured_repositories(g, None)? {
        Some(specs) => specs,
        None => vec![super::open_store_settings(g)?.1],
    };
    let cfg = super::load_config(g)?;
    let repos = super::repos(g, cfg.as_ref())?;
    let mut h = kura_runner::history::History::open(path)?;
    let done = kura_runner::history::rebuild(&mut h, &repos, &specs).await?;
    for e in &done.errors {
        crate::output::errln!("kura: {e}");
    }
    if g.json {
        print_json(&done);
    } else {
        say(
            g,
            format!(
                "history rebuilt from {}: {} run(s) added, {} already recorded",
                done.repositories.join(", "),
                done.added,
                done.known
            ),
        );
    }
    Ok(if done.errors.is_empty() { 0 } else { crate::output::code::PARTIAL })
}
