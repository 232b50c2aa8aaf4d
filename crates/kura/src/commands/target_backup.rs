//! `kura backup --target A --target B`: one run over configured targets
//! (`kura_runner::backup::backup_run`), rendered. A target that fails does
//! not stop the others; the exit code reports it.
use kura_runner::backup::{backup_run, BackupRequest};

use crate::cli::{BackupArgs, Global};
use crate::output::{code, print_json, say, Failure};

pub async fn run(g: &Global, a: &BackupArgs) -> Result<u8, Failure> {
    if !a.paths.is_empty() {
        return Err(
            Failure::new("paths cannot be combined with --target").hint("list paths in the target's config")
        );
    }
    let cfg = super::require_config(g)?;
    let targets = a.targets.iter().map(|n| super::find_target(&cfg, n)).collect::<Result<Vec<_>, _>>()?;
    let ctx = super::context(g)?;
    let repos = super::repos(g, Some(&cfg))?;
    let req =
        BackupRequest { host: a.host.clone(), tags: a.tags.clone(), force: a.force, ..Default::default() };
    let report = backup_run(&ctx, &repos, &cfg, &targets, &req).await;

    let mut rows = Vec::new();
    for t in report.targets {
        match t.result {
            Ok(s) => rows.push(serde_json::json!({
                "target": t.target, "ok": true, "id": s.id, "summary": s.summary, "warnings": s.warnings,
            })),
            // A single target whose repository did not open: its own
            // failure, with its own exit code.
            Err(f) if f.opening && a.targets.len() == 1 => return Err(f.error.into()),
            Err(f) => {
                let f = Failure::from(f.error);
                crate::output::errln!("kura: {}: {}", t.target, f.message);
                if let Some(h) = &f.hint {
                    crate::output::errln!("hint: {h}");
                }
                rows.push(serde_json::json!({ "target": t.target, "ok": false, "error": f.message, "hint": f.hint }));
            }
        }
    }
    let saved: Vec<&str> =
        rows.iter().filter(|r| r["ok"] == true).filter_map(|r| r["target"].as_str()).collect();
    let failed: Vec<&str> =
        rows.iter().filter(|r| r["ok"] == false).filter_map(|r| r["target"].as_str()).collect();
    let warned = rows.iter().any(|r| r["warnings"].as_array().is_some_and(|w| !w.is_empty()));
    // Exit codes (README.md): all saved 0 (3 with warnings); some saved and
    // some failed 5, each listed; none saved 1, and no run exists.
    let exit = match (saved.is_empty(), failed.is_empty()) {
        (_, true) if warned => code::PARTIAL_BACKUP,
        (_, true) => code::OK,
        (false, false) => code::PARTIAL,
        (true, false) => code::FAILED,
    };
    let run = report.run;
    if g.json {
        let run = (!saved.is_empty()).then_some(run);
        print_json(
            &serde_json::json!({ "run": run, "time": report.time, "targets": rows, "exit_code": exit }),
        );
    } else if saved.is_empty() {
        crate::output::errln!("kura: no target was saved ({}); nothing was recorded", failed.join(", "));
    } else if !failed.is_empty() {
        crate::output::errln!(
            "kura: run {}: saved {}; FAILED {}",
            run.short(),
            saved.join(", "),
            failed.join(", ")
        );
    } else {
        say(g, format!("run {}", run.short()));
    }
    Ok(exit)
}
