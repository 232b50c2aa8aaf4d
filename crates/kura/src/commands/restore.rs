//! `kura restore SNAPSHOT --target DIR`: a snapshot into a directory
//! (`--target NAME` of a configured target goes to target_restore).
use std::sync::Arc;

use kura_repo::restore::{restore, RestoreOptions};
use kura_repo::Counters;

use crate::cli::{Global, RestoreArgs};
use crate::output::{code, human_bytes, print_json, say, Failure};
use crate::progress::Progress;

pub async fn run(g: &Global, a: &RestoreArgs) -> Result<u8, Failure> {
    let Some(spec) = &a.snapshot else {
        return super::target_restore::run(g, a).await;
    };
    if a.start.is_some() || a.end.is_some() || a.force {
        return Err(Failure::new("--start, --end and --force are for object_store targets")
            .hint("directory restores take --include and --overwrite"));
    }
    let target = std::path::PathBuf::from(a.target.as_deref().ok_or_else(|| {
        Failure::new("restoring a snapshot needs --target DIR").hint("the directory to restore into")
    })?);
    if a.component.is_some() || a.plan.is_some() {
        return Err(Failure::new("--component and --plan restore configured targets; drop the snapshot id"));
    }
    let repo = super::open_repo(g).await?;
    let (id, snap) = repo.find_snapshot(spec).await?;
    let opts = RestoreOptions {
        include: a.include.clone(),
        overwrite: a.overwrite,
        owners: super::euid() == 0,
        concurrency: 0,
        after_dirs: test_gate(),
        sample: None,
    };
    let counters = Arc::new(Counters::default());
    let total = if a.include.is_empty() { Some(snap.summary.bytes) } else { None };
    let progress = Progress::start(g, "restore", counters.clone(), total);
    // A session keeps a concurrent prune off what the restore reads.
    let session = kura_runner::hold(&super::context(g)?, &repo, "restore").await;
    let report = restore(&repo, snap.tree, &target, &opts, counters).await;
    if let Some(s) = session {
        s.finish().await;
    }
    progress.finish();
    let report = report?;
    if g.json {
        print_json(&serde_json::json!({ "snapshot": id, "target": target, "report": report }));
    } else {
        say(
            g,
            format!(
                "restored {} files, {} dirs, {} symlinks, {} from snapshot {} into {}",
                report.files,
                report.dirs,
                report.links,
                human_bytes(report.bytes),
                id.short(),
                target.display()
            ),
        );
    }
    Ok(restore_outcome(&report))
}

/// `KURA_TEST_RESTORE_GATE=PATH`: once its directories are made, the
/// restore creates `PATH.waiting` and waits until `PATH` exists, so a test
/// can change the target in between, as a racing local user would.
pub fn test_gate() -> Option<kura_repo::restore::Hook> {
    let gate = std::path::PathBuf::from(std::env::var_os("KURA_TEST_RESTORE_GATE")?);
    Some(kura_repo::restore::Hook(Arc::new(move || {
        let _ = std::fs::write(gate.with_extension("waiting"), b"");
        while !gate.exists() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    })))
}

/// Lists what was left out and why, and picks the exit code: damage in the
/// repository first, then entries that could not be written here, then
/// entries skipped on purpose.
pub fn restore_outcome(report: &kura_repo::restore::RestoreReport) -> u8 {
    for (path, why) in &report.skipped {
        tracing::warn!("skipped {path}: {why}");
    }
    for (path, why) in &report.failed {
        crate::output::errln!("not restored: {path}: {why}");
    }
    if !report.failed.is_empty() {
        crate::output::errln!(
            "kura: {} entries could not be restored ({} of them damaged in the repository); \
             nothing was written outside the target and no file holds wrong bytes",
            report.failed.len(),
            report.damaged
        );
    }
    if report.damaged > 0 {
        code::DAMAGE
    } else if !report.failed.is_empty() {
        code::PARTIAL
    } else if !report.skipped.is_empty() {
        code::PARTIAL_BACKUP
    } else {
        code::OK
    }
}
