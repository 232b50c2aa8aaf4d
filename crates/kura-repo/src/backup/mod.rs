//! Backup of files and directories, and of streams.
//!
//! The tree is walked depth-first in name order; files of a directory are
//! processed concurrently on worker threads while the directory's own tree
//! blob waits for its children. A file whose size, mtime, ctime, inode and
//! device match its node in the parent snapshot is not read again: its
//! content list is reused, provided every blob of it is still indexed.
use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use kura_format::snapshot::{Snapshot, Summary, Warning};
use kura_format::tree::{Node, NodeType, Tree};
use kura_format::{BlobType, Id};
use tokio::sync::Semaphore;

use crate::saver::{Counters, Saver, StreamError, SMALL_READ};
use crate::session::SessionGuard;
use crate::{RepoError, Repository, Result};

mod streams;
mod walker;
pub use streams::{
    backup_stream, backup_stream_sequence, backup_stream_set, backup_streams, Stream, StreamFinish, Streams,
};

/// Files opened ahead of their turn at most, and how much of each the
/// kernel is asked to read ahead (larger files are read ahead by the
/// kernel's own sequential readahead once reading starts).
const PREFETCH_FILES: usize = 32;
const PREFETCH_BYTES: u64 = 1 << 20;
/// Small files read at once. Reading one is mostly waiting for the disk
/// when the cache is cold, so there must be more of them in flight than
/// cores to keep a disk's queue full; their compression goes through the
/// saver's core-sized gate, so this costs no zstd contexts, and their
/// buffers are their own size (under [`SMALL_READ`]). Measured on the
/// 1 GB tree from a cold cache: 5.7 s with 3 at once, about 5.1 s with 16.
const SMALL_FILES_AT_ONCE: usize = 16;

#[derive(Clone, Debug, Default)]
pub struct BackupOptions {
    /// Glob patterns. A pattern without `/` matches a name anywhere; one
    /// with `/` matches the whole absolute path.
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub tags: Vec<String>,
    pub hostname: String,
    pub username: String,
    /// The snapshot to compare against; `None` picks the latest one of the
    /// same host and paths.
    pub parent: Option<Id>,
    /// Read every file even when the parent says it is unchanged.
    pub force: bool,
    /// Small files read at once; 0 picks a default that keeps a cold disk's
    /// queue full (see `SMALL_FILES_AT_ONCE`). Large files are read two at
    /// a time whatever this says (fewer if it is 1).
    pub concurrency: usize,
    /// Only files modified this recently (log folders); directories are
    /// still walked.
    pub changed_within: Option<std::time::Duration>,
    /// Chunk sizes other than the repository's, for streams whose edits
    /// are small and scattered (database dumps, format.md §6.1).
    pub chunking: Option<kura_format::config::ChunkerParams>,
    /// Recorded in the snapshot (format.md §11).
    pub target: Option<String>,
    pub run: Option<Id>,
    /// The snapshot's time; a run gives all its snapshots the same one.
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// What produced the content; defaults to `files` or `stream`.
    pub source: Option<String>,
    /// The plan whose run this is (format.md §11).
    pub plan: Option<String>,
    /// Called with each file's path after it was looked at and before it is
    /// opened: tests use it to race the backup deterministically.
    pub before_open: Option<PathHook>,
}

/// A callback in [`BackupOptions`].
#[derive(Clone)]
pub struct PathHook(pub Arc<dyn Fn(&Path) + Send + Sync>);

impl std::fmt::Debug for PathHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PathHook")
    }
}

impl BackupOptions {
    fn stamp(&self, snap: &mut Snapshot, default_source: &str) {
        snap.hostname = self.hostname.clone();
        snap.username = self.username.clone();
        snap.tags = self.tags.clone();
        snap.target = self.target.clone();
        snap.run = self.run;
        snap.plan = self.plan.clone();
        snap.source = Some(self.source.clone().unwrap_or_else(|| default_source.to_string()));
        if let Some(t) = self.time {
            snap.time = t;
        }
    }
}

#[derive(Debug)]
pub struct BackupResult {
    pub id: Id,
    pub snapshot: Snapshot,
}

/// A target's exclude patterns, compiled once.
pub struct Excludes {
    names: GlobSet,
    paths: GlobSet,
}

impl Excludes {
    pub fn new(patterns: &[String]) -> Result<Excludes> {
        let mut names = GlobSetBuilder::new();
        let mut paths = GlobSetBuilder::new();
        for p in patterns {
            let glob = Glob::new(p)
                .map_err(|e| RepoError::BadExclude { pattern: p.clone(), message: e.to_string() })?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build = |b: GlobSetBuilder| {
            b.build().map_err(|e| RepoError::BadExclude { pattern: String::new(), message: e.to_string() })
        };
        Ok(Excludes { names: build(names)?, paths: build(paths)? })
    }

    /// Whether backup leaves `path` out (restore in place leaves it alone).
    pub fn excluded(&self, path: &Path) -> bool {
        path.file_name().is_some_and(|n| self.names.is_match(n)) || self.paths.is_match(path)
    }
}

struct Walker {
    saver: Arc<Saver>,
    opts: BackupOptions,
    excludes: Excludes,
    /// Files under [`SMALL_READ`] being read.
    small_files: Semaphore,
    /// Files of at least [`SMALL_READ`] being read: each holds an 8 MiB read
    /// batch, and one such file already keeps every core busy sealing its
    /// chunks, so two at a time bound memory at no cost in speed.
    large_files: Semaphore,
    /// Files opened ahead of their turn, whose first bytes the kernel is
    /// asked to read in the background (see [`Walker::prefetch`]).
    prefetch: Arc<Semaphore>,
    warnings: Mutex<Vec<Warning>>,
    summary: Mutex<Summary>,
}

/// A directory of the snapshot's root: either a real path given by the
/// user, or a parent of one (`/srv` for `/srv/app`).
#[derive(Default)]
struct RootDir {
    real: Option<PathBuf>,
    children: BTreeMap<Vec<u8>, RootDir>,
}

pub async fn backup(
    repo: &Arc<Repository>,
    paths: &[PathBuf],
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult> {
    let started = Instant::now();
    let mut abs = Vec::new();
    for p in paths {
        let a = std::path::absolute(p).map_err(|e| RepoError::io(p, e))?;
        std::fs::symlink_metadata(&a).map_err(|e| RepoError::io(&a, e))?;
        abs.push(normalize(&a));
    }
    abs.sort();
    abs.dedup();
    let path_strings: Vec<String> = abs.iter().map(|p| p.display().to_string()).collect();

    // format.md §12.3: the session exists before we read markers or index.
    let session = SessionGuard::start(repo, "backup", &opts.hostname).await?;
    let run = async {
        // The parent is found while the index loads: across a network each
        // listing is a round trip, and the two do not depend on each other.
        let index = async {
            let pending = repo.pending_deletion().await?;
            repo.load_index_present(&pending).await
        };
        let (index, parent) = futures::try_join!(index, pick_parent(repo, opts, &path_strings))?;
        let parent_tree = match &parent {
            Some((_, snap)) if index.contains(&snap.tree) => {
                // The walk loads one parent tree per directory it enters.
                repo.prefetch_trees(&index, &[snap.tree]).await;
                repo.load_tree(&index, &snap.tree).await.ok()
            }
            _ => None,
        };
        let (saver, uploader) = Saver::start(repo.clone(), index, counters);
        let concurrency = if opts.concurrency == 0 {
            SMALL_FILES_AT_ONCE.max(std::thread::available_parallelism().map_or(2, |n| n.get()) + 1)
        } else {
            opts.concurrency
        };
        let walker = Arc::new(Walker {
            saver: saver.clone(),
            opts: opts.clone(),
            excludes: Excludes::new(&opts.excludes)?,
            small_files: Semaphore::new(concurrency),
            large_files: Semaphore::new(concurrency.min(2)),
            prefetch: Arc::new(Semaphore::new(PREFETCH_FILES)),
            warnings: Mutex::new(Vec::new()),
            summary: Mutex::new(Summary::default()),
        });

        let mut root = RootDir::default();
        for p in &abs {
            let mut node = &mut root;
            for comp in p.components().skip(1) {
                node = node.children.entry(comp.as_os_str().as_bytes().to_vec()).or_default();
            }
            node.real = Some(p.clone());
        }
        let tree_result = if root.real.is_some() {
            // The whole filesystem was asked for: "/" is itself a real path.
            let meta = std::fs::symlink_metadata("/").map_err(|e| RepoError::io("/", e))?;
            walker.clone().save_dir(Path::new("/"), &meta, parent_tree, 0).await
        } else {
            walker.clone().save_root(root, PathBuf::from("/"), parent_tree).await
        };
        repo.clear_tree_cache();
        let tree_id = match tree_result {
            Ok(id) => id,
            Err(e) => {
                saver.abort();
                // When uploads failed, that is the cause; the walker's error
                // ("upload stopped") is only its symptom.
                return Err(match uploader.await {
                    Ok(Err(upload_error)) => upload_error,
                    _ => e,
                });
            }
        };
        saver.clone().finish(uploader).await?;

        let mut snap = Snapshot::new(tree_id, path_strings.clone(), repo.now());
        opts.stamp(&mut snap, "files");
        snap.parent = parent.map(|(id, _)| id);
        snap.warnings = std::mem::take(&mut *walker.warnings.lock().expect("warnings lock"));
        let summary = walker.summary.lock().expect("summary lock").clone();
        commit_snapshot(repo, &session, snap, summary, &walker.saver.counters, started).await
    }
    .await;
    // §12.3: the session ends only after the snapshot is written (or the
    // backup failed, in which case there is nothing to protect).
    session.finish().await;
    run
}

/// Adds the engine's counters to the summary and writes the snapshot —
/// format.md §12.1: by now every pack and index file is stored — unless the
/// session lapsed (§13), when a prune may have removed reused data.
async fn commit_snapshot(
    repo: &Repository,
    session: &SessionGuard,
    mut snap: Snapshot,
    mut summary: Summary,
    counters: &Counters,
    started: Instant,
) -> Result<BackupResult> {
    summary.blobs_new = counters.blobs_new.load(Ordering::Relaxed);
    summary.bytes_new = counters.bytes_new.load(Ordering::Relaxed);
    summary.bytes_stored = counters.bytes_stored.load(Ordering::Relaxed);
    summary.duration_ms = started.elapsed().as_millis() as u64;
    snap.summary = summary;
    if !session.held() {
        return Err(RepoError::SessionLapsed);
    }
    let id = repo.save_snapshot(&snap).await?;
    Ok(BackupResult { id, snapshot: snap })
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

async fn pick_parent(
    repo: &Repository,
    opts: &BackupOptions,
    paths: &[String],
) -> Result<Option<(Id, Snapshot)>> {
    if opts.force {
        return Ok(None);
    }
    if let Some(id) = opts.parent {
        return repo.find_snapshot(&id.to_hex()).await.map(Some);
    }
    let (all, _) = repo.snapshots().await?;
    Ok(all.into_iter().rev().find(|(_, s)| s.hostname == opts.hostname && s.paths == paths))
}
