//! `kura prune`: marks what no snapshot uses, and deletes what earlier
//! prunes marked once no backup can still need it (format.md §13).
use std::sync::Arc;

use kura_repo::prune::{prune, PruneOptions};
use kura_repo::Repository;

use crate::cli::{Global, PruneArgs};
use crate::output::{human_bytes, print_json, say, Failure};

pub async fn run(g: &Global, a: &PruneArgs) -> Result<u8, Failure> {
    // Bad flags are refused before a password is asked for.
    options(a)?;
    let repo = super::open_repo(g).await?;
    run_with(g, &repo, a).await
}

fn options(a: &PruneArgs) -> Result<PruneOptions, Failure> {
    if !(0.0..=100.0).contains(&a.repack_unused) {
        return Err(Failure::new("--repack-unused must be a percentage between 0 and 100"));
    }
    Ok(PruneOptions {
        grace: super::parse_duration(&a.grace)?,
        repack_unused: a.repack_unused / 100.0,
        dry_run: a.dry_run,
        hostname: super::hostname(),
    })
}

pub async fn run_with(g: &Global, repo: &Arc<Repository>, a: &PruneArgs) -> Result<u8, Failure> {
    let opts = options(a)?;
    let started = repo.now();
    let r = prune(repo, &opts).await;
    if !a.dry_run {
        super::record_operation(kura_runner::history::Operation {
            kind: "prune",
            repository: repo.store().location(),
            started,
            finished: repo.now(),
            status: if r.is_ok() { "ok" } else { "failed" },
            forgotten: 0,
            bytes_pruned: r.as_ref().map_or(0, |r| r.bytes_deleted),
            errors: r.as_ref().err().map(|e| e.to_string()).into_iter().collect(),
        });
    }
    let r = r?;
    if g.json {
        print_json(&r);
        return Ok(0);
    }
    let verb = if a.dry_run { "would" } else { "did" };
    say(g, format!("{} snapshots use {} blobs in {} packs", r.snapshots, r.blobs_used, r.packs));
    say(
        g,
        format!(
            "{verb} delete {} packs ({}) marked by earlier prunes",
            r.packs_deleted,
            human_bytes(r.bytes_deleted)
        ),
    );
    say(g, format!("{verb} repack {} packs ({} blobs copied)", r.packs_repacked, r.blobs_repacked));
    say(
        g,
        format!(
            "{verb} mark {} packs ({}) for deletion after the grace period ({})",
            r.packs_marked,
            human_bytes(r.bytes_marked),
            a.grace
        ),
    );
    if r.markers_waiting > 0 {
        say(
            g,
            format!("{} earlier markers wait for their grace period or a running backup", r.markers_waiting),
        );
    }
    Ok(0)
}
