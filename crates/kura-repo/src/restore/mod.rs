//! Restore of a snapshot into a directory.
//!
//! File contents are restored pack by pack rather than file by file
//! ([`content`]): each pack is read once, in spans of nearby blobs, and every
//! blob is written at its offset into each file that holds it.
//!
//! No wrong byte ever reaches a restored file's name: every blob is
//! authenticated and checked against its id before it is written, and a
//! file that cannot be restored is reported and left out. Into a target
//! that holds files, each file is written under a private temporary name
//! in its directory and renamed into place only when complete. Into an
//! empty one, files are written under their real names, and the target
//! holds [`INCOMPLETE_MARKER`] from before the first file is made until
//! the restore ends (docs/reliability.md, "Restore into an empty target").
//!
//! Nothing is written outside the target, whatever the snapshot or the
//! existing tree holds: every path is resolved from directory handles
//! restore opened itself, never following a symlink ([`beneath`]). A
//! directory that cannot be made skips its whole subtree, reported.
pub mod beneath;
mod content;

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kura_format::tree::{Node, NodeType};
use kura_format::Id;

pub use crate::dump::{dump, dump_files, dump_indexed, write_content};

use crate::browse::{find_node, snapshot_path, Walker};
use crate::saver::Counters;
use crate::{RepoError, Repository, Result};
use beneath::Beneath;

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Paths inside the snapshot to restore; empty restores everything.
    pub include: Vec<String>,
    /// Write into a non-empty target, replacing files of the same name.
    pub overwrite: bool,
    /// Restore owners and device nodes (needs root).
    pub owners: bool,
    /// Files restored at once; 0 picks a default.
    pub concurrency: usize,
    /// Called before any file's content is written, once the directories
    /// of the first batch of files are made (every directory, for trees
    /// of fewer than 4,096 files): tests use it to race the restore
    /// deterministically.
    pub after_dirs: Option<Hook>,
    /// Restore only a share of the regular files, chosen by their path
    /// (see [`Sample`]); the rest are counted in the report as left out.
    pub sample: Option<Sample>,
}

/// A share of the files, chosen by a keyed hash of each path: the same
/// seed picks the same files, another seed others, so drills with a fresh
/// seed each time cover every file over enough of them.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Out of 1.0.
    pub share: f64,
    pub seed: [u8; 32],
}

impl Sample {
    pub fn picks(&self, path: &Path) -> bool {
        let h = blake3::keyed_hash(&self.seed, path.as_os_str().as_bytes());
        let v = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        (v as f64) < self.share * u64::MAX as f64
    }
}

/// A callback in [`RestoreOptions`].
#[derive(Clone)]
pub struct Hook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    /// FIFOs and device nodes.
    pub specials: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
    /// Of `failed`, those lost to damage in the repository (the rest could
    /// not be written here: a permission, a full disk, something in the way).
    pub damaged: u64,
    /// Entries left out on purpose, with the reason (sockets; device nodes
    /// without root): not damage, and nothing is missing from the snapshot.
    pub skipped: Vec<(String, String)>,
    /// Files a [`Sample`] left out, and their bytes.
    pub sampled_out: u64,
    pub sampled_out_bytes: u64,
}

impl RestoreReport {
    fn fail(&mut self, rel: &Path, why: impl Into<String>) {
        self.failed.push((rel.display().to_string(), why.into()));
    }
}

fn selected(path: &Path, includes: &[Vec<Vec<u8>>]) -> bool {
    if includes.is_empty() {
        return true;
    }
    let comps: Vec<&[u8]> = path.iter().map(|c| c.as_bytes()).collect();
    includes.iter().any(|inc| {
        let n = comps.len().min(inc.len());
        inc[..n].iter().zip(&comps[..n]).all(|(a, b)| a.as_slice() == *b)
    })
}

/// Files planned and restored at a time on a disk. Restore walks the
/// snapshot and restores its files a batch at a time, so its memory is
/// bounded by a batch (about 500 bytes a file, 100 a blob), not by the
/// snapshot. A pack holds blobs of files from all over the walk (a backup
/// reads several directories at once), so smaller batches read each pack
/// in more, smaller spans: about 1,300 reads for the 150 MB of 60,000 small
/// files at 4,096 a batch, 700 at 8,192. On a disk that costs nothing
/// measurable.
const BATCH_FILES: usize = 4096;
/// Across a network every read is a request, waited for and billed, and
/// every byte too: remote stores (`Store::remote`) plan this many files at
/// a time. A pack holds files from all over the tree (a day's new files sit
/// in that day's packs wherever they are), so each batch reads spans of the
/// same packs again: at 32,768 a batch, the 60,000 small files read 423 MB
/// for 272 MB of distinct spans (12.2 s through a 50 MB/s link; 8.9 s in
/// one batch). About 35 MB of plan at most, against egress billed per GB.
const BATCH_FILES_REMOTE: usize = 65_536;
/// Blobs planned at a time: a batch of a few huge files ends early.
const BATCH_BLOBS: usize = 65_536;
const BATCH_BLOBS_REMOTE: usize = 131_072;

/// Regular files waiting to be restored.
#[derive(Default)]
struct Batch {
    files: Vec<(PathBuf, Node)>,
    blobs: usize,
}

/// The name prefix of a file being restored, renamed to its real name only
/// once complete and verified.
pub(crate) const PARTIAL_PREFIX: &str = ".kura-restore-";

/// In a target that was empty, present while the restore runs: files
/// beside it may be incomplete. It shares the partial files' prefix, so a
/// restore run again with `overwrite` sweeps it with them.
pub const INCOMPLETE_MARKER: &str = ".kura-restore-incomplete";

pub async fn restore(
    repo: &Arc<Repository>,
    tree: Id,
    target: &Path,
    opts: &RestoreOptions,
    counters: Arc<Counters>,
) -> Result<RestoreReport> {
    // Packs pending deletion still exist and are still valid to read.
    let index = Arc::new(repo.load_index_present(&Default::default()).await?);
    repo.prefetch_trees(&index, &[tree]).await;
    let includes: Vec<Vec<Vec<u8>>> = opts.include.iter().map(|p| snapshot_path(p)).collect();
    for (inc, raw) in includes.iter().zip(&opts.include) {
        if !inc.is_empty() {
            find_node(repo, &index, &tree, raw).await?;
        }
    }
    let empty = match std::fs::read_dir(target) {
        Ok(mut rd) => {
            let empty = rd.next().is_none();
            if !empty && !opts.overwrite {
                if target.join(INCOMPLETE_MARKER).symlink_metadata().is_ok() {
                    return Err(RepoError::TargetInterrupted(target.to_path_buf()));
                }
                return Err(RepoError::TargetNotEmpty(target.to_path_buf()));
            }
            empty
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|e| RepoError::io(target, e))?;
            true
        }
        Err(e) => return Err(RepoError::io(target, e)),
    };
    let root = Arc::new(Beneath::open(target).map_err(|e| RepoError::io(target, e))?);

    let walker = async {
        let walker = Walker::new(repo, &index, tree, PathBuf::new()).await?;
        // A snapshot with a file of the marker's own name is restored the
        // careful way, so the marker never stands in for it.
        let marker = INCOMPLETE_MARKER.as_bytes();
        let root_nodes = repo.load_tree(&index, &tree).await?.nodes;
        Ok((walker, !root_nodes.iter().any(|n| n.name_bytes().is_ok_and(|b| b == marker))))
    };
    let (mut walker, marker_free) = match walker.await {
        Ok(w) => w,
        Err(e) => {
            repo.clear_tree_cache();
            return Err(e);
        }
    };
    let placing = if empty && marker_free && mark_incomplete(&root, tree).is_ok() {
        content::Placing::Direct
    } else {
        content::Placing::Rename
    };
    let mut report = RestoreReport::default();
    let mut batch = Batch::default();
    let mut dirs: Vec<(PathBuf, beneath::Meta)> = Vec::new();
    let mut link_leaders: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut followers = Vec::new();
    // A directory that could not be made: where it is reported, and how
    // many entries below it were skipped.
    let mut lost_dirs: HashMap<PathBuf, (usize, u64)> = HashMap::new();
    if opts.overwrite {
        root.sweep(Path::new(""), PARTIAL_PREFIX);
    }
    let (batch_files, batch_blobs) = if repo.store().remote() {
        (BATCH_FILES_REMOTE, BATCH_BLOBS_REMOTE)
    } else {
        (BATCH_FILES, BATCH_BLOBS)
    };
    let mut contents = Contents {
        repo,
        index: &index,
        root: &root,
        opts,
        placing,
        concurrency: if opts.concurrency == 0 { repo.store().read_concurrency() } else { opts.concurrency },
        counters: &counters,
        hooked: false,
        failed: HashSet::new(),
    };
    loop {
        let (rel, node) = match walker.next().await {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(e) => {
                repo.clear_tree_cache();
                return Err(e);
            }
        };
        if !selected(&rel, &includes) {
            continue;
        }
        if !lost_dirs.is_empty() {
            if let Some(lost) = rel.ancestors().skip(1).find(|a| lost_dirs.contains_key(*a)) {
                let lost = lost.to_path_buf();
                lost_dirs.get_mut(&lost).expect("found").1 += 1;
                continue;
            }
        }
        match node.kind {
            NodeType::Dir => {
                if let Err(e) = root.mkdir(&rel, opts.overwrite) {
                    lost_dirs.insert(rel.clone(), (report.failed.len(), 0));
                    report.fail(&rel, format!("cannot make the directory: {e}"));
                    continue;
                }
                if opts.overwrite {
                    // Partial files of a restore killed midway.
                    root.sweep(&rel, PARTIAL_PREFIX);
                }
                report.dirs += 1;
                dirs.push((rel, beneath::Meta::from(&node)));
            }
            NodeType::File => {
                if opts.sample.is_some_and(|s| !s.picks(&rel)) {
                    report.sampled_out += 1;
                    report.sampled_out_bytes += node.size.unwrap_or(0);
                    continue;
                }
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(leader) = link_leaders.get(&key) {
                        followers.push((rel, leader.clone()));
                        continue;
                    }
                    link_leaders.insert(key, rel.clone());
                }
                batch.blobs += node.content.as_ref().map_or(0, Vec::len);
                batch.files.push((rel, node));
                if batch.files.len() >= batch_files || batch.blobs >= batch_blobs {
                    contents.restore(&mut batch, &mut report).await;
                }
            }
            NodeType::Symlink => match restore_symlink(&root, &rel, &node, opts) {
                Ok(()) => report.links += 1,
                Err(e) => report.fail(&rel, e.to_string()),
            },
            NodeType::Fifo | NodeType::Chardev | NodeType::Blockdev => {
                match restore_special(&root, &rel, &node, opts) {
                    Ok(true) => report.specials += 1,
                    Ok(false) => report
                        .skipped
                        .push((rel.display().to_string(), "device nodes are made only by root".into())),
                    Err(e) => report.fail(&rel, e.to_string()),
                }
            }
            NodeType::Socket => report.skipped.push((
                rel.display().to_string(),
                "a socket belongs to the program that listens on it; it is not restored".into(),
            )),
        }
    }
    repo.clear_tree_cache();
    contents.restore(&mut batch, &mut report).await;
    let failed_paths = contents.failed;
    for (i, skipped) in lost_dirs.into_values() {
        if skipped > 0 {
            report.failed[i].1 += &format!("; the {skipped} entries below it were skipped");
        }
    }
    for (rel, leader) in followers {
        if failed_paths.contains(&leader) {
            report.fail(&rel, "its hard-link target could not be restored");
            continue;
        }
        let r = (|| {
            let (dir, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default());
            if opts.overwrite {
                root.remove(dir, name)?;
            }
            root.hard_link(&leader, &rel)
        })();
        match r {
            Ok(()) => report.files += 1,
            Err(e) => report.fail(&rel, format!("hard link: {e}")),
        }
    }
    // Every file is now complete or removed; a marker left by an earlier,
    // interrupted restore goes too.
    if marker_free {
        let _ = root.remove(Path::new(""), OsStr::new(INCOMPLETE_MARKER));
    }
    // Directory metadata last, deepest first, so writing children does not
    // disturb mtimes and read-only directories are still writable meanwhile.
    for (rel, meta) in dirs.iter().rev() {
        if let Err(e) = root.set_dir_metadata(rel, meta, opts.owners) {
            report.fail(rel, format!("metadata: {e}"));
        }
    }
    Ok(report)
}

/// Restores the files of each [`Batch`], and remembers those that failed
/// (their hard links are not made).
struct Contents<'a> {
    repo: &'a Arc<Repository>,
    index: &'a Arc<crate::index::Index>,
    root: &'a Arc<Beneath>,
    opts: &'a RestoreOptions,
    placing: content::Placing,
    concurrency: usize,
    counters: &'a Arc<Counters>,
    hooked: bool,
    failed: HashSet<PathBuf>,
}

impl Contents<'_> {
    async fn restore(&mut self, batch: &mut Batch, report: &mut RestoreReport) {
        if !std::mem::replace(&mut self.hooked, true) {
            if let Some(Hook(hook)) = &self.opts.after_dirs {
                hook();
            }
        }
        batch.blobs = 0;
        let lost = content::restore_files(
            self.repo,
            self.index,
            self.root,
            std::mem::take(&mut batch.files),
            self.opts.owners,
            self.placing,
            self.concurrency,
            self.counters,
            report,
        )
        .await;
        self.failed.extend(lost);
    }
}

/// Puts the marker that says the target's files may be incomplete.
fn mark_incomplete(root: &Beneath, tree: Id) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = root.create_new(Path::new(""), OsStr::new(INCOMPLETE_MARKER))?;
    write!(
        f,
        "A kura restore (tree {}) began writing here and has not finished.\n\
         Files beside this one may be incomplete. Run the restore again with\n\
         --overwrite (it rewrites every file and removes this marker), or\n\
         remove this directory.\n",
        tree.to_hex()
    )
}

fn restore_symlink(root: &Beneath, rel: &Path, node: &Node, opts: &RestoreOptions) -> std::io::Result<()> {
    let target = node.target_bytes().map_err(std::io::Error::other)?.unwrap_or_default();
    let (dir, name) = (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default());
    if root.exists(dir, name)? {
        if !opts.overwrite {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists"));
        }
        root.remove(dir, name)?;
    }
    root.symlink(rel, &target)?;
    root.set_link_metadata(rel, node, opts.owners)
}

/// Makes a FIFO (anyone may) or a device node (root only: `Ok(false)`
/// otherwise, so the caller reports it skipped).
fn restore_special(root: &Beneath, rel: &Path, node: &Node, opts: &RestoreOptions) -> std::io::Result<bool> {
    use rustix::fs::FileType;
    let ty = match node.kind {
        NodeType::Fifo => FileType::Fifo,
        NodeType::Chardev => FileType::CharacterDevice,
        _ => FileType::BlockDevice,
    };
    if ty != FileType::Fifo && !opts.owners {
        return Ok(false);
    }
    let (dir, name): (&Path, &OsStr) =
        (rel.parent().unwrap_or(Path::new("")), rel.file_name().unwrap_or_default());
    if root.exists(dir, name)? {
        if !opts.overwrite {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists"));
        }
        root.remove(dir, name)?;
    }
    root.special(rel, ty, node.rdev.unwrap_or(0))?;
    root.set_special_metadata(rel, node, opts.owners)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_picks_its_share_and_another_seed_picks_others() {
        let paths: Vec<PathBuf> = (0..10_000).map(|i| PathBuf::from(format!("d/{i}.txt"))).collect();
        let pick = |seed: u8| -> Vec<bool> {
            let s = Sample { share: 0.25, seed: [seed; 32] };
            paths.iter().map(|p| s.picks(p)).collect()
        };
        let (a, b) = (pick(1), pick(2));
        let n = a.iter().filter(|x| **x).count();
        assert!((2_200..=2_800).contains(&n), "{n}");
        assert_eq!(a, pick(1), "the same seed picks the same files");
        let both = a.iter().zip(&b).filter(|(x, y)| **x && **y).count();
        assert!(both < n / 2, "another seed picks mostly others: {both} of {n}");
        assert!(paths.iter().all(|p| Sample { share: 1.0, seed: [3; 32] }.picks(p)));
    }
}
