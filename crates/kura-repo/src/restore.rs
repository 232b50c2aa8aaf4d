//! Restore of a snapshot into a directory, and `dump` of one file.
//!
//! No wrong byte ever reaches a restored file's name: every blob is
//! authenticated and checked against its id before it is written, each file
//! is written under a temporary name in its directory and renamed into place
//! only when complete, and a file that cannot be restored is reported and
//! left out. Directories are created without following symlinks, so a crafted
//! snapshot (or a hostile existing tree) cannot redirect writes outside the
//! target.
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use kura_format::tree::{Node, NodeType};
use kura_format::{paths, Id};

use crate::browse::{find_node, snapshot_path, walk};
use crate::index::{Index, Location};
use crate::saver::Counters;
use crate::{RepoError, Repository, Result};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Paths inside the snapshot to restore; empty restores everything.
    pub include: Vec<String>,
    /// Write into a non-empty target, replacing files of the same name.
    pub overwrite: bool,
    /// Restore owners (needs root).
    pub owners: bool,
    /// Files restored at once; 0 picks a default.
    pub concurrency: usize,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
}

fn selected(path: &Path, includes: &[Vec<Vec<u8>>]) -> (bool, bool) {
    // (restore this entry, descend into it)
    if includes.is_empty() {
        return (true, true);
    }
    let comps: Vec<&[u8]> = path.iter().map(|c| c.as_bytes()).collect();
    let mut under = false;
    let mut above = false;
    for inc in includes {
        if comps.len() >= inc.len() && inc.iter().zip(&comps).all(|(a, b)| a.as_slice() == *b) {
            under = true;
        } else if comps.len() < inc.len() && comps.iter().zip(inc).all(|(a, b)| *a == b.as_slice()) {
            above = true;
        }
    }
    (under || above, under || above)
}

/// The name prefix of a file being restored, renamed to its real name only
/// once complete and verified.
const PARTIAL_PREFIX: &str = ".kura-restore-";

pub async fn restore(
    repo: &Arc<Repository>,
    tree: Id,
    target: &Path,
    opts: &RestoreOptions,
    counters: Arc<Counters>,
) -> Result<RestoreReport> {
    // Packs pending deletion still exist and are still valid to read.
    let index = Arc::new(repo.load_index(&Default::default()).await?);
    let includes: Vec<Vec<Vec<u8>>> = opts.include.iter().map(|p| snapshot_path(p)).collect();
    for (inc, raw) in includes.iter().zip(&opts.include) {
        if !inc.is_empty() {
            find_node(repo, &index, &tree, raw).await?;
        }
    }
    match std::fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() && !opts.overwrite {
                return Err(RepoError::TargetNotEmpty(target.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|e| RepoError::io(target, e))?
        }
        Err(e) => return Err(RepoError::io(target, e)),
    }

    let mut entries = Vec::new();
    walk(repo, &index, tree, PathBuf::new(), &mut entries).await?;
    let mut report = RestoreReport::default();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut link_leaders: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut followers = Vec::new();
    for (rel, node) in entries {
        if !selected(&rel, &includes).0 {
            continue;
        }
        let dest = target.join(&rel);
        match node.kind {
            NodeType::Dir => {
                if let Err(e) = make_dir(&dest, opts.overwrite) {
                    report.failed.push((rel.display().to_string(), e.to_string()));
                    continue;
                }
                if opts.overwrite {
                    sweep_partial_files(&dest);
                }
                report.dirs += 1;
                dirs.push((dest, node));
            }
            NodeType::File => {
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(leader) = link_leaders.get(&key) {
                        followers.push((rel, dest, leader.clone()));
                        continue;
                    }
                    link_leaders.insert(key, dest.clone());
                }
                files.push((rel, dest, node));
            }
            NodeType::Symlink => match restore_symlink(&dest, &node, opts) {
                Ok(()) => report.links += 1,
                Err(e) => report.failed.push((rel.display().to_string(), e.to_string())),
            },
            other => report
                .failed
                .push((rel.display().to_string(), format!("{other:?} special files are not restored"))),
        }
    }

    let concurrency = if opts.concurrency == 0 { 8 } else { opts.concurrency };
    let results: Vec<(PathBuf, PathBuf, u64, Result<()>)> = stream::iter(files)
        .map(|(rel, dest, node)| {
            let repo = repo.clone();
            let index = index.clone();
            let counters = counters.clone();
            let owners = opts.owners;
            async move {
                let size = node.size.unwrap_or(0);
                let r = restore_file(&repo, &index, &dest, &node, owners, &counters).await;
                (rel, dest, size, r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut failed_paths = std::collections::HashSet::new();
    for (rel, dest, size, r) in results {
        match r {
            Ok(()) => {
                report.files += 1;
                report.bytes += size;
            }
            Err(e) => {
                failed_paths.insert(dest);
                report.failed.push((rel.display().to_string(), e.to_string()));
            }
        }
    }
    for (rel, dest, leader) in followers {
        if failed_paths.contains(&leader) {
            report
                .failed
                .push((rel.display().to_string(), "its hard-link target could not be restored".into()));
            continue;
        }
        let r = (|| {
            if opts.overwrite && dest.symlink_metadata().is_ok() {
                std::fs::remove_file(&dest)?;
            }
            std::fs::hard_link(&leader, &dest)
        })();
        match r {
            Ok(()) => report.files += 1,
            Err(e) => report.failed.push((rel.display().to_string(), format!("hard link: {e}"))),
        }
    }
    // Directory metadata last, deepest first, so writing children does not
    // disturb mtimes and read-only directories are still writable meanwhile.
    for (dest, node) in dirs.iter().rev() {
        if let Err(e) = apply_metadata(dest, node, opts.owners, false) {
            report.failed.push((dest.display().to_string(), format!("metadata: {e}")));
        }
    }
    Ok(report)
}

/// Removes the temporary files a restore killed midway left in `dir`:
/// they are only ever partial copies, never a file's only version.
fn sweep_partial_files(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let stale = e.file_name().to_string_lossy().starts_with(PARTIAL_PREFIX)
            && e.file_type().is_ok_and(|t| t.is_file());
        if stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Creates a directory, refusing to go through a symlink.
fn make_dir(dest: &Path, overwrite: bool) -> std::io::Result<()> {
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) if overwrite => {
            std::fs::remove_file(dest)?;
            std::fs::create_dir(dest)
        }
        Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory")),
        Err(_) => std::fs::create_dir(dest),
    }
}

fn restore_symlink(dest: &Path, node: &Node, opts: &RestoreOptions) -> std::io::Result<()> {
    let target = node.target_bytes().map_err(std::io::Error::other)?.unwrap_or_default();
    if dest.symlink_metadata().is_ok() {
        if !opts.overwrite {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists"));
        }
        std::fs::remove_file(dest)?;
    }
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), dest)?;
    apply_metadata(dest, node, opts.owners, true)
}

fn apply_metadata(dest: &Path, node: &Node, owners: bool, symlink: bool) -> std::io::Result<()> {
    if owners {
        std::os::unix::fs::lchown(dest, Some(node.uid), Some(node.gid))?;
    }
    let mtime = filetime::FileTime::from_unix_time(node.mtime.0, node.mtime.1);
    if symlink {
        filetime::set_symlink_file_times(dest, mtime, mtime)?;
    } else {
        // chmod after chown: chown clears setuid bits.
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(node.mode))?;
        filetime::set_file_times(dest, mtime, mtime)?;
    }
    Ok(())
}

/// Consecutive blobs of one pack, read with one request.
struct Run {
    pack: Id,
    start: u64,
    end: u64,
    blobs: Vec<(Id, Location)>,
}

fn plan_reads(index: &Index, content: &[Id]) -> Result<Vec<Run>> {
    const MAX_RUN: u64 = 32 << 20;
    let mut runs: Vec<Run> = Vec::new();
    for id in content {
        let loc = index.get(id).ok_or_else(|| RepoError::MissingBlob { blob: id.to_hex() })?;
        let (s, e) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        match runs.last_mut() {
            Some(r) if r.pack == loc.pack && r.end == s && e - r.start <= MAX_RUN => {
                r.end = e;
                r.blobs.push((*id, loc));
            }
            _ => runs.push(Run { pack: loc.pack, start: s, end: e, blobs: vec![(*id, loc)] }),
        }
    }
    Ok(runs)
}

async fn restore_file(
    repo: &Arc<Repository>,
    index: &Index,
    dest: &Path,
    node: &Node,
    owners: bool,
    counters: &Counters,
) -> Result<()> {
    if let Some(err) = &node.error {
        return Err(RepoError::Refused(format!("was not readable at backup time: {err}")));
    }
    let content = node.content.clone().unwrap_or_default();
    let runs = plan_reads(index, &content)?;
    let dir = dest.parent().expect("restored paths have a parent");
    let tmp = dir.join(format!("{PARTIAL_PREFIX}{:016x}", rand::random::<u64>()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| RepoError::io(&tmp, e))?;
    let result: Result<()> = async {
        for run in runs {
            let bytes = repo.store().get_range(&paths::pack(&run.pack), run.start..run.end).await?;
            let key = repo.key().clone();
            let start = run.start;
            let (f, written) = tokio::task::spawn_blocking(move || -> Result<(std::fs::File, u64)> {
                let mut written = 0;
                for (id, loc) in &run.blobs {
                    let s = (loc.offset as u64 - start) as usize;
                    let sealed = &bytes[s..s + loc.length as usize];
                    let plain = key.open_blob(sealed, loc.ty, id, loc.raw_length)?;
                    file.write_all(&plain).map_err(|e| RepoError::io("restore", e))?;
                    written += plain.len() as u64;
                }
                Ok((file, written))
            })
            .await
            .map_err(|e| RepoError::Refused(e.to_string()))??;
            file = f;
            counters.bytes_read.fetch_add(written, Ordering::Relaxed);
        }
        // No fsync per file: a journal commit per file made restores of many
        // small files twice as slow as restic's, which does not sync either.
        // A restore cut short by power loss is simply run again; what matters
        // is that a file appears under its name only complete and verified.
        drop(file);
        apply_metadata(&tmp, node, owners, false).map_err(|e| RepoError::io(&tmp, e))?;
        if dest.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err(RepoError::Refused("a directory is in the way".into()));
        }
        std::fs::rename(&tmp, dest).map_err(|e| RepoError::io(dest, e))?;
        Ok(())
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else {
        counters.files.fetch_add(1, Ordering::Relaxed);
    }
    result
}

/// Writes one file of a snapshot to `out`, verifying every blob first.
pub async fn dump(repo: &Repository, tree: Id, path: &str, out: &mut (dyn Write + Send)) -> Result<u64> {
    dump_files(repo, tree, &[path.to_string()], out).await
}

/// Writes several files of a snapshot to `out`, one after the other, as one
/// stream (the parts of a split database dump), loading the index once.
pub async fn dump_files(
    repo: &Repository,
    tree: Id,
    paths: &[String],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let index = repo.load_index(&Default::default()).await?;
    let mut total = 0;
    for path in paths {
        total += dump_one(repo, &index, tree, path, out).await?;
    }
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(total)
}

async fn dump_one(
    repo: &Repository,
    index: &crate::index::Index,
    tree: Id,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let node = find_node(repo, index, &tree, path)
        .await?
        .ok_or_else(|| RepoError::Refused("dump needs a file path, not the snapshot root".into()))?;
    if node.kind != NodeType::File {
        return Err(RepoError::Refused(format!("{path} is a {:?}, not a file", node.kind)));
    }
    write_content(repo, index, node.content.as_deref().unwrap_or_default(), out).await
}

/// Writes the blobs of a content list to `out`, each authenticated before
/// its bytes are written, reading adjacent blobs of a pack in one request.
pub async fn write_content(
    repo: &Repository,
    index: &crate::index::Index,
    content: &[Id],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let mut total = 0;
    for run in plan_reads(index, content)? {
        let bytes = repo.store().get_range(&paths::pack(&run.pack), run.start..run.end).await?;
        for (id, loc) in &run.blobs {
            let s = (loc.offset as u64 - run.start) as usize;
            let plain =
                repo.key().open_blob(&bytes[s..s + loc.length as usize], loc.ty, id, loc.raw_length)?;
            out.write_all(&plain).map_err(|e| RepoError::io("<output>", e))?;
            total += plain.len() as u64;
        }
    }
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(total)
}
