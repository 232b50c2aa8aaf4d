//! File trees as a restore target: each configured path is restored beside
//! itself, checked complete, and swapped in, keeping the old one.
use std::path::PathBuf;
use std::sync::Arc;

use kura_format::Id;
use kura_repo::restore::{restore as restore_tree, RestoreOptions};
use kura_repo::{Counters, Repository};

use crate::swap::{sweep_leftovers, Scratch, Swap};
use crate::SourceError;

pub use crate::merge::{Counts, Filters};

#[derive(Debug)]
pub struct RestoredPath {
    pub path: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub kept: Option<PathBuf>,
    /// What changed in the live tree.
    pub counts: Counts,
}

/// How a files target is restored in place.
pub struct InPlace<'a> {
    pub keep_old: bool,
    pub owners: bool,
    /// Also move aside what the snapshot lacks (but never what the
    /// target's filters leave out).
    pub mirror: bool,
    pub filters: &'a Filters,
}

/// Restores each of `paths` from the snapshot tree `tree`, in place: the
/// snapshot's entries replace the live ones and everything else stays
/// (format of the semantics: docs/reliability.md, "Restore semantics").
/// Nothing live is touched for a path until its new copy restored with no
/// error at all.
pub async fn restore_in_place(
    repo: &Arc<Repository>,
    tree: Id,
    paths: &[PathBuf],
    how: &InPlace<'_>,
) -> Result<Vec<RestoredPath>, SourceError> {
    let mut out = Vec::new();
    for live in paths {
        let live = std::path::absolute(live).map_err(|e| SourceError::io(live, e))?;
        let parent = live.parent().ok_or_else(|| SourceError::Refused("cannot restore over /".into()))?;
        std::fs::create_dir_all(parent).map_err(|e| SourceError::io(parent, e))?;
        // A scratch root beside the live path: same filesystem, so the
        // final moves are renames.
        sweep_leftovers(&live, &[]);
        let scratch = Scratch::dir(&live)?;
        let opts = RestoreOptions {
            include: vec![live.display().to_string()],
            owners: how.owners,
            ..RestoreOptions::default()
        };
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
            let both_dirs = std::fs::symlink_metadata(&live).map(|m| m.is_dir()).unwrap_or(false)
                && std::fs::symlink_metadata(&restored).map(|m| m.is_dir()).unwrap_or(false);
            if !both_dirs {
                // A file, or a path that is not there: one exchange.
                let existed = live.symlink_metadata().is_ok();
                let swap = Swap::replace(&restored, &live, &[], how.keep_old, repo.now().into())?;
                let counts =
                    Counts { overwritten: existed as u64, added: !existed as u64, ..Counts::default() };
                return Ok(RestoredPath {
                    path: live.clone(),
                    files: report.files,
                    bytes: report.bytes,
                    kept: swap.kept,
                    counts,
                });
            }
            let kept_at = how.keep_old.then(|| crate::swap::backup_name(&live, repo.now().into()));
            let (new, at) = (restored.clone(), live.clone());
            let mirror = how.mirror;
            let (counts, kept) = crate::merge::merge(&new, &at, kept_at.as_deref(), mirror, how.filters)?;
            Ok(RestoredPath { path: live.clone(), files: report.files, bytes: report.bytes, kept, counts })
        }
        .await;
        let _ = std::fs::remove_dir_all(&scratch.path);
        out.push(result?);
    }
    Ok(out)
}

/// What restoring `paths` in place would change, from the snapshot and the
/// live tree, for the plan shown before anything is done.
pub async fn plan_in_place(
    repo: &Repository,
    tree: Id,
    paths: &[PathBuf],
    mirror: bool,
    filters: &Filters,
) -> Result<Counts, SourceError> {
    use kura_format::tree::NodeType;
    let index = repo.load_index_present(&Default::default()).await?;
    let mut counts = Counts::default();
    for live in paths {
        let live = std::path::absolute(live).map_err(|e| SourceError::io(live, e))?;
        let node = kura_repo::browse::find_node(repo, &index, &tree, &live.display().to_string()).await?;
        let Some(node) = node else { continue };
        let mut entries = Vec::new();
        if let (NodeType::Dir, Some(sub)) = (node.kind, node.subtree) {
            kura_repo::browse::walk(repo, &index, sub, PathBuf::new(), &mut entries).await?;
        }
        let count = |c: &mut Counts, p: &std::path::Path| {
            if p.symlink_metadata().is_ok() {
                c.overwritten += 1
            } else {
                c.added += 1
            }
        };
        // A directory merged into a live directory is not itself an entry
        // the merge replaces (its counts are what lies below).
        if !(node.kind == NodeType::Dir && live.is_dir()) {
            count(&mut counts, &live);
        }
        let held: std::collections::HashSet<PathBuf> = entries.iter().map(|(rel, _)| rel.clone()).collect();
        for (rel, _) in &entries {
            count(&mut counts, &live.join(rel));
        }
        if node.kind != NodeType::Dir || !live.is_dir() {
            continue;
        }
        // What the snapshot lacks: moved aside with `mirror` unless the
        // filters leave it out; left alone otherwise.
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(live.join(&rel)) else { continue };
            for e in rd.flatten() {
                let r = rel.join(e.file_name());
                let Ok(m) = e.path().symlink_metadata() else { continue };
                if held.contains(&r) {
                    if m.is_dir() {
                        stack.push(r);
                    }
                    continue;
                }
                let st = rustix::fs::lstat(e.path()).map_err(|err| SourceError::io(e.path(), err.into()))?;
                if mirror && !filters.leaves_out(&e.path(), &st) {
                    counts.moved_aside += 1;
                } else {
                    counts.left_alone += 1;
                }
            }
        }
    }
    Ok(counts)
}
