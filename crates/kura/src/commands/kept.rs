//! `kura kept list|clean`: the copies in-place restores moved aside, found
//! by target, and removed on request or by the target's `kept_last` /
//! `kept_within` after a restore.
use std::io::IsTerminal;

use kura_policy::Target;
use kura_sources::kept::{self, Kept};

use crate::cli::{Global, KeptArgs, KeptCommand};
use crate::output::{human_bytes, print_json, say, Failure};

fn of_target(t: &Target) -> Result<Vec<Kept>, Failure> {
    Ok(kura_runner::kept::of_target(t)?)
}

fn chosen<'c>(cfg: &'c kura_policy::Config, names: &[String]) -> Result<Vec<&'c Target>, Failure> {
    if names.is_empty() {
        for u in cfg.unresolved.iter().filter(|u| u.section == "target") {
            tracing::warn!("target {} skipped: {}", u.name, u.error);
        }
        return Ok(cfg.targets.values().collect());
    }
    names.iter().map(|n| super::find_target(cfg, n)).collect()
}

fn row(t: &Target, k: &Kept) -> serde_json::Value {
    serde_json::json!({
        "target": t.name, "name": k.name(), "made": k.made.format("%Y-%m-%d %H:%M").to_string(), "bytes": k.bytes,
    })
}

pub async fn run(g: &Global, a: &KeptArgs) -> Result<u8, Failure> {
    let cfg = super::require_config(g)?;
    match &a.command {
        KeptCommand::List { targets } => {
            let mut rows = Vec::new();
            for t in chosen(&cfg, targets)? {
                for k in of_target(t)? {
                    rows.push(row(t, &k));
                }
            }
            if g.json {
                print_json(&rows);
                return Ok(0);
            }
            if rows.is_empty() {
                say(g, "no kept copies");
                return Ok(0);
            }
            crate::output::outln!("{:<16}  {:<16}  {:>10}  where", "target", "made", "size");
            for r in &rows {
                crate::output::outln!(
                    "{:<16}  {:<16}  {:>10}  {}",
                    r["target"].as_str().unwrap_or_default(),
                    r["made"].as_str().unwrap_or_default(),
                    r["bytes"].as_u64().map(human_bytes).unwrap_or_else(|| "?".into()),
                    r["name"].as_str().unwrap_or_default()
                );
            }
            Ok(0)
        }
        KeptCommand::Clean { targets, older_than, keep_last, dry_run, yes } => {
            let now = super::clock().now().with_timezone(&chrono::Local).naive_local();
            let mut doomed = Vec::new();
            for t in chosen(&cfg, targets)? {
                let all = of_target(t)?;
                // The command's own rules, else the target's, else all.
                let (last, within) = if older_than.is_some() || keep_last.is_some() {
                    (*keep_last, *older_than)
                } else {
                    (t.kept.last, t.kept.within)
                };
                doomed.extend(kept::to_remove(&all, last, within, now).into_iter().map(|k| (t, k)));
            }
            if doomed.is_empty() {
                say(g, "nothing to remove");
                if g.json {
                    print_json(&serde_json::json!({ "removed": [], "dry_run": dry_run }));
                }
                return Ok(0);
            }
            let bytes: u64 = doomed.iter().filter_map(|(_, k)| k.bytes).sum();
            say(
                g,
                format!(
                    "{} {} kept copies ({}):",
                    if *dry_run { "would remove" } else { "removing" },
                    doomed.len(),
                    human_bytes(bytes)
                ),
            );
            for (t, k) in &doomed {
                say(g, format!("  {}: {} (made {})", t.name, k.name(), k.made.format("%Y-%m-%d %H:%M")));
            }
            let rows: Vec<_> = doomed.iter().map(|(t, k)| row(t, k)).collect();
            if *dry_run {
                if g.json {
                    print_json(&serde_json::json!({ "removed": rows, "dry_run": true }));
                }
                return Ok(0);
            }
            if !yes {
                if !std::io::stdin().is_terminal() || g.json {
                    return Err(Failure::new("refusing to remove kept copies without confirmation")
                        .hint("pass --yes, or --dry-run to see the list"));
                }
                eprint!("remove them for good? [y/N] ");
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer).map_err(|e| Failure::new(e.to_string()))?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    return Err(Failure::new("cancelled; nothing was removed"));
                }
            }
            let mut failed = Vec::new();
            for (t, k) in &doomed {
                if let Err(e) = kept::remove(k) {
                    crate::output::errln!("kura: {}: cannot remove {}: {e}", t.name, k.name());
                    failed.push(k.name());
                }
            }
            if g.json {
                print_json(&serde_json::json!({ "removed": rows, "failed": failed, "dry_run": false }));
            }
            if !failed.is_empty() {
                return Err(Failure::new(format!(
                    "{} of {} kept copies could not be removed",
                    failed.len(),
                    doomed.len()
                ))
                .with_code(crate::output::code::PARTIAL));
            }
            say(g, format!("removed {} kept copies ({})", doomed.len(), human_bytes(bytes)));
            Ok(0)
        }
    }
}
