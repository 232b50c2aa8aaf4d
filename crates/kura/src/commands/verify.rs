//! `kura verify [--read-data]`: the repository's integrity, with damage
//! traced to the snapshots and paths that need it.
use std::sync::Arc;

use kura_repo::verify::{verify, ReadData, VerifyOptions};
use kura_repo::Counters;

use crate::cli::{Global, VerifyArgs};
use crate::output::{code, print_json, say, Failure};
use crate::progress::Progress;

pub async fn run(g: &Global, a: &VerifyArgs) -> Result<u8, Failure> {
    let read_data = match (&a.read_data_subset, a.read_data) {
        (_, true) => ReadData::All,
        (Some(s), _) => {
            let pct: f64 =
                s.trim_end_matches('%').parse().ok().filter(|p| (0.0..=100.0).contains(p)).ok_or_else(
                    || Failure::new(format!("--read-data-subset {s:?} is not a percentage")).hint("e.g. 10%"),
                )?;
            ReadData::Subset(pct)
        }
        _ => ReadData::None,
    };
    let repo = super::open_repo(g).await?;
    let counters = Arc::new(Counters::default());
    let progress = Progress::start(g, "verify", counters.clone(), None);
    let started = repo.now();
    let report = verify(&repo, &VerifyOptions { read_data }, counters).await;
    progress.finish();
    super::record_operation(kura_runner::history::Operation {
        kind: "verify",
        repository: repo.store().location(),
        started,
        finished: repo.now(),
        status: match &report {
            Ok(r) if r.ok() => "ok",
            Ok(_) => "damage",
            Err(_) => "failed",
        },
        forgotten: 0,
        bytes_pruned: 0,
        errors: match &report {
            Ok(r) => r.errors.iter().map(|p| format!("{}: {}", p.object, p.message)).collect(),
            Err(e) => vec![e.to_string()],
        },
    });
    let report = report?;
    if g.json {
        print_json(&serde_json::json!({ "ok": report.ok(), "report": report }));
    } else {
        say(
            g,
            format!(
                "checked {} snapshots, {} trees, {} index files, {} packs ({} read, {} blobs checked)",
                report.snapshots,
                report.trees,
                report.index_files,
                report.packs,
                report.packs_read,
                report.blobs_read
            ),
        );
        if report.unindexed_packs > 0 {
            say(g, format!("{} packs are not indexed yet (an interrupted or running backup's); prune removes leftovers", report.unindexed_packs));
        }
    }
    if report.ok() {
        say(g, "no errors found");
        return Ok(code::OK);
    }
    if !g.json {
        for p in &report.errors {
            crate::output::errln!("error: {}: {}", p.object, p.message);
        }
        for a in &report.affected {
            crate::output::errln!("affected: snapshot {} {}", a.snapshot, a.path);
        }
        crate::output::errln!("kura: the repository is damaged: {} problems", report.errors.len());
    }
    Ok(code::DAMAGE)
}
