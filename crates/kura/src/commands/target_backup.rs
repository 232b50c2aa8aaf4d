//! `kura backup --target A --target B`: one run over configured targets.
//! Every snapshot of the run shares its id and its time, so an application
//! (database, configs, uploads) is restorable as of one moment. A target
//! that fails does not stop the others; the exit code reports it.
use std::collections::HashMap;
use std::sync::Arc;

use kura_format::Id;
use kura_policy::TargetKind;
use kura_repo::backup::{backup, BackupOptions};
use kura_repo::{Counters, Repository};

use crate::cli::{BackupArgs, Global};
use crate::output::{code, human_bytes, print_json, say, Failure};
use crate::progress::Progress;

pub async fn run(g: &Global, a: &BackupArgs) -> Result<u8, Failure> {
    if !a.paths.is_empty() {
        return Err(
            Failure::new("paths cannot be combined with --target").hint("list paths in the target's config")
        );
    }
    let cfg = super::require_config(g)?;
    let targets = a.targets.iter().map(|n| super::find_target(&cfg, n)).collect::<Result<Vec<_>, _>>()?;
    let run = Id::random();
    let time = super::clock().now();
    let mut repos: HashMap<String, Arc<Repository>> = HashMap::new();
    let mut report = Vec::new();
    let mut warned = false;
    let (mut saved, mut failed) = (Vec::new(), Vec::new());
    for t in targets {
        let repo = match repos.get(&t.repository) {
            Some(r) => r.clone(),
            None => match super::open_repo_for(g, &cfg, t).await {
                Ok(r) => {
                    repos.insert(t.repository.clone(), r.clone());
                    r
                }
                Err(f) => {
                    // A single target: its own failure, with its own code.
                    if a.targets.len() == 1 {
                        return Err(f);
                    }
                    crate::output::errln!("kura: {}: {}", t.name, f.message);
                    failed.push(t.name.clone());
                    report.push(serde_json::json!({ "target": t.name, "ok": false, "error": f.message, "hint": f.hint }));
                    continue;
                }
            },
        };
        let mut opts = BackupOptions {
            hostname: a.host.clone().unwrap_or_else(super::hostname),
            username: super::username(),
            tags: a.tags.clone(),
            target: Some(t.name.clone()),
            run: Some(run),
            time: Some(time),
            force: a.force,
            ..BackupOptions::default()
        };
        let counters = Arc::new(Counters::default());
        let progress = Progress::start(g, "backup", counters.clone(), None);
        let result: Result<_, Failure> = match &t.kind {
            TargetKind::Sqlite(s) => {
                kura_sources::sqlite::backup(&repo, &s.path, &opts, counters).await.map_err(Into::into)
            }
            TargetKind::Files(f) => {
                opts.excludes = f.exclude.clone();
                opts.changed_within = f.changed_within;
                opts.one_file_system = f.one_file_system;
                backup(&repo, &f.paths, &opts, counters).await.map_err(Into::into)
            }
            TargetKind::Postgres(pg) => {
                let what = kura_sources::postgres::PgSource {
                    url: &pg.url,
                    databases: &pg.databases,
                    tables: &pg.tables,
                    exclude_tables: &pg.exclude_tables,
                    jobs: pg.jobs,
                };
                kura_sources::postgres::backup(&repo, &what, &opts, counters).await.map_err(Into::into)
            }
            TargetKind::Command(c) => {
                kura_sources::command::backup(&repo, &c.backup, &c.name, &opts, counters)
                    .await
                    .map_err(Into::into)
            }
            TargetKind::ObjectStore(o) => match super::object_store(o, &o.url) {
                Ok(store) => kura_sources::object_store::backup(&repo, store, &opts, counters)
                    .await
                    .map_err(Into::into),
                Err(f) => Err(f),
            },
            TargetKind::Mysql(my) => kura_sources::mysql::backup(&repo, &my.url, &my.tables, &opts, counters)
                .await
                .map_err(Into::into),
            other => {
                Err(Failure::new(format!("target type {} is not supported by this kura", other.type_name())))
            }
        };
        progress.finish();
        match result {
            Ok(r) => {
                let s = &r.snapshot.summary;
                say(
                    g,
                    format!(
                        "{}: snapshot {} ({}, {} new, {:.1}s)",
                        t.name,
                        r.id.short(),
                        human_bytes(s.bytes),
                        human_bytes(s.bytes_new),
                        s.duration_ms as f64 / 1000.0
                    ),
                );
                for w in &r.snapshot.warnings {
                    tracing::warn!("{}: {}: {}", t.name, w.path, w.message);
                }
                warned |= !r.snapshot.warnings.is_empty();
                saved.push(t.name.clone());
                report.push(serde_json::json!({
                    "target": t.name, "ok": true, "id": r.id, "summary": r.snapshot.summary,
                    "warnings": r.snapshot.warnings,
                }));
            }
            Err(f) => {
                crate::output::errln!("kura: {}: {}", t.name, f.message);
                if let Some(h) = &f.hint {
                    crate::output::errln!("hint: {h}");
                }
                failed.push(t.name.clone());
                report.push(
                    serde_json::json!({ "target": t.name, "ok": false, "error": f.message, "hint": f.hint }),
                );
            }
        }
    }
    // Exit codes (README.md): all saved 0 (3 with warnings); some saved and
    // some failed 5, each listed; none saved 1, and no run exists.
    let exit = match (saved.is_empty(), failed.is_empty()) {
        (_, true) if warned => code::PARTIAL_BACKUP,
        (_, true) => code::OK,
        (false, false) => code::PARTIAL,
        (true, false) => code::FAILED,
    };
    if g.json {
        let run = (!saved.is_empty()).then_some(run);
        print_json(&serde_json::json!({ "run": run, "time": time, "targets": report, "exit_code": exit }));
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
