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
    if a.component.is_some() {
        return Err(Failure::new("--component restores configured targets; drop the snapshot id"));
    }
    let repo = super::open_repo(g).await?;
    let (id, snap) = repo.find_snapshot(spec).await?;
    let opts = RestoreOptions {
        include: a.include.clone(),
        overwrite: a.overwrite,
        owners: super::euid() == 0,
        concurrency: 0,
    };
    let counters = Arc::new(Counters::default());
    let total = if a.include.is_empty() { Some(snap.summary.bytes) } else { None };
    let progress = Progress::start(g, "restore", counters.clone(), total);
    let report = restore(&repo, snap.tree, &target, &opts, counters).await;
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
    if !report.failed.is_empty() {
        for (path, why) in &report.failed {
            eprintln!("not restored: {path}: {why}");
        }
        eprintln!("kura: {} entries could not be restored; nothing wrong was written", report.failed.len());
        return Ok(code::DAMAGE);
    }
    Ok(code::OK)
}
