//! File trees as a restore target: each configured path is restored beside
//! itself, checked complete, and swapped in, keeping the old one.
use std::path::PathBuf;
use std::sync::Arc;

use kura_format::Id;
use kura_repo::restore::{restore as restore_tree, RestoreOptions};
use kura_repo::{Counters, Repository};

use crate::swap::{sweep_leftovers, Scratch, Swap};
use crate::SourceError;

#[derive(Debug)]
pub struct RestoredPath {
    pub path: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub kept: Option<PathBuf>,
}

/// Restores each of `paths` from the snapshot tree `tree`, in place.
/// Nothing live is touched for a path until its new copy restored with no
/// error at all.
pub async fn restore_in_place(
    repo: &Arc<Repository>,
    tree: Id,
    paths: &[PathBuf],
    keep_old: bool,
    owners: bool,
) -> Result<Vec<RestoredPath>, SourceError> {
    let mut out = Vec::new();
    for live in paths {
        let live = std::path::absolute(live).map_err(|e| SourceError::io(live, e))?;
        let parent = live.parent().ok_or_else(|| SourceError::Refused("cannot restore over /".into()))?;
        std::fs::create_dir_all(parent).map_err(|e| SourceError::io(parent, e))?;
        // A scratch root beside the live path: same filesystem, so the final
        // move is a rename.
        sweep_leftovers(&live, &[]);
        let scratch = Scratch::dir(&live)?;
        let opts =
            RestoreOptions { include: vec![live.display().to_string()], owners, ..RestoreOptions::default() };
        let result = async {
            let report =
                restore_tree(repo, tree, &scratch.path, &opts, Arc::new(Counters::default())).await?;
            if !report.failed.is_empty() {
                let list: Vec<String> = report.failed.iter().map(|(p, why)| format!("{p}: {why}")).collect();
                return Err(SourceError::Refused(format!(
                    "{} entries of {} could not be restored ({}); {} was not touched",
                    report.failed.len(),
                    live.display(),
                    list.join("; "),
                    live.display()
                )));
            }
            let restored = scratch.path.join(live.strip_prefix("/").expect("absolute"));
            let swap = Swap::replace(&restored, &live, &[], keep_old)?;
            Ok(RestoredPath { path: live.clone(), files: report.files, bytes: report.bytes, kept: swap.kept })
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch.path);
        out.push(result?);
    }
    Ok(out)
}
