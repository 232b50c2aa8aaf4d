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
use futures::stream::{self, StreamExt, TryStreamExt};
use globset::{Glob, GlobSet, GlobSetBuilder};
use kura_format::snapshot::{Snapshot, Summary, Warning};
use kura_format::tree::{Node, NodeType, Tree};
use kura_format::{BlobType, Id};
use tokio::sync::Semaphore;

use crate::saver::{Counters, Saver, StreamError, SMALL_READ};
use crate::session::SessionGuard;
use crate::{RepoError, Repository, Result};

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
    /// Recorded in the snapshot (format.md §11).
    pub target: Option<String>,
    pub run: Option<Id>,
    /// The snapshot's time; a run gives all its snapshots the same one.
    pub time: Option<chrono::DateTime<chrono::Utc>>,
    /// What produced the content; defaults to `files` or `stream`.
    pub source: Option<String>,
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
            let glob = Glob::new(p).map_err(|e| RepoError::Refused(format!("exclude pattern {p:?}: {e}")))?;
            if p.contains('/') {
                paths.add(glob);
            } else {
                names.add(glob);
            }
        }
        let build =
            |b: GlobSetBuilder| b.build().map_err(|e| RepoError::Refused(format!("exclude patterns: {e}")));
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
        let pending = repo.pending_deletion().await?;
        let index = repo.load_index_present(&pending).await?;
        let parent = pick_parent(repo, opts, &path_strings).await?;
        let parent_tree = match &parent {
            Some((_, snap)) if index.contains(&snap.tree) => repo.load_tree(&index, &snap.tree).await.ok(),
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

/// Called when a stream ends; an `Err` (a command that failed) vetoes the
/// snapshot.
pub type StreamFinish = Box<dyn FnOnce() -> std::result::Result<(), String> + Send>;

/// Backs up a stream (stdin, a command's output) as one file named `name`.
/// `finish` is called after the stream ends and may veto the snapshot (a
/// command that exited non-zero).
pub async fn backup_stream(
    repo: &Arc<Repository>,
    name: &str,
    reader: Box<dyn std::io::Read + Send>,
    opts: &BackupOptions,
    counters: Arc<Counters>,
    finish: StreamFinish,
) -> Result<BackupResult> {
    let mut stream = Stream::new(name, reader);
    stream.finish = finish;
    backup_streams(repo, vec![stream], opts, counters).await
}

/// One named stream of a multi-stream snapshot.
pub struct Stream {
    /// A relative path: `/` separates directories, which are created as
    /// needed (an object store's keys).
    pub name: String,
    pub reader: Box<dyn std::io::Read + Send>,
    pub finish: StreamFinish,
    /// The content's modification time (seconds since the epoch), if the
    /// source knows one; otherwise the time it was read.
    pub mtime: Option<i64>,
    /// The content list and length of an earlier copy the source knows to be
    /// the same (an object whose size and mtime are unchanged). Used instead
    /// of reading `reader` when every blob is still indexed (format.md §12.4).
    pub known: Option<(Vec<Id>, u64)>,
}

impl Stream {
    pub fn new(name: impl Into<String>, reader: Box<dyn std::io::Read + Send>) -> Stream {
        Stream { name: name.into(), reader, finish: Box::new(|| Ok(())), mtime: None, known: None }
    }
}

/// Files under a directory of a stream snapshot, for building its trees.
#[derive(Default)]
struct StreamDir {
    files: Vec<Node>,
    dirs: BTreeMap<String, StreamDir>,
}

impl StreamDir {
    fn insert(&mut self, path: &[&str], node: Node) {
        match path {
            [] | [_] => self.files.push(node),
            [dir, rest @ ..] => self.dirs.entry(dir.to_string()).or_default().insert(rest, node),
        }
    }

    /// Saves this directory's tree (children first); returns its id and the
    /// number of directories under it.
    fn save(self, saver: &Saver, now: (i64, u32)) -> Result<(Id, u64)> {
        let mut nodes = self.files;
        let mut dirs = 0;
        for (name, dir) in self.dirs {
            let (id, below) = dir.save(saver, now)?;
            dirs += below + 1;
            let mut node = Node::new(name, NodeType::Dir);
            node.mode = 0o755;
            node.mtime = now;
            node.ctime = now;
            node.subtree = Some(id);
            nodes.push(node);
        }
        let mut tree = Tree { nodes };
        Ok((saver.save_blob(BlobType::Tree, &tree.encode())?, dirs))
    }
}

/// A stream name's components, or why it is not a relative path.
fn stream_path(name: &str) -> std::result::Result<Vec<&str>, String> {
    let parts: Vec<&str> = name.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0')) {
        return Err(format!("stream name {name:?} must be a relative path without empty, . or .. parts"));
    }
    if parts.len() > kura_format::tree::MAX_DEPTH {
        return Err(format!(
            "stream name has {} parts; at most {} directories may nest (format.md §10)",
            parts.len(),
            kura_format::tree::MAX_DEPTH
        ));
    }
    Ok(parts)
}

/// Streams produced one after the other, each known only once the one
/// before it has been read to its end (a dump split into its tables, say).
/// `Err` ends the sequence and fails the snapshot.
pub type Streams = Box<dyn Iterator<Item = std::result::Result<Stream, String>> + Send>;

/// Backs up several streams, one after the other, as the files of one
/// snapshot (a database dump and its server's globals, say). Any stream that
/// fails, or whose `finish` vetoes, fails the whole snapshot.
pub async fn backup_streams(
    repo: &Arc<Repository>,
    streams: Vec<Stream>,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult> {
    backup_stream_sequence(repo, Box::new(streams.into_iter().map(Ok)), opts, counters).await
}

/// [`backup_streams`] over a lazy sequence: the next stream is asked for on
/// a worker thread, since producing it may wait on a child process.
pub async fn backup_stream_sequence(
    repo: &Arc<Repository>,
    streams: Streams,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult> {
    backup_stream_set(repo, streams, 1, opts, counters).await
}

/// What one saved stream became.
struct Saved {
    order: usize,
    name: String,
    mtime: Option<i64>,
    reused: bool,
    content: std::result::Result<(Vec<Id>, u64), StreamError>,
    /// The source's own verdict (a dump's exit status).
    finished: std::result::Result<(), String>,
}

/// [`backup_stream_sequence`] with up to `parallel` streams saved at once
/// (dumps of several tables, say). The next stream is asked for only when
/// fewer than `parallel` are being saved, so with 1 each stream is asked
/// for after the one before it was read to its end.
pub async fn backup_stream_set(
    repo: &Arc<Repository>,
    streams: Streams,
    parallel: usize,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let started = Instant::now();
    let session = SessionGuard::start(repo, "backup", &opts.hostname).await?;
    let run = async {
        let pending = repo.pending_deletion().await?;
        let index = repo.load_index_present(&pending).await?;
        let (saver, uploader) = Saver::start(repo.clone(), index, counters);
        let mut seen = std::collections::HashSet::new();
        let mut saved: Vec<Saved> = Vec::new();
        let mut running = FuturesUnordered::new();
        let mut streams = Some(streams);
        let mut exhausted = false;
        let mut pulled = 0usize;
        loop {
            while !exhausted && running.len() < parallel.max(1) {
                let mut iter = streams.take().expect("the sequence is handed back every round");
                let (iter, item) = tokio::task::spawn_blocking(move || {
                    let item = iter.next();
                    (iter, item)
                })
                .await
                .map_err(|e| RepoError::Refused(e.to_string()))?;
                streams = Some(iter);
                let stream = match item {
                    None => {
                        exhausted = true;
                        break;
                    }
                    Some(Err(msg)) => {
                        saver.abort();
                        let _ = uploader.await;
                        return Err(RepoError::StreamSource(msg));
                    }
                    Some(Ok(stream)) => stream,
                };
                if let Err(msg) = stream_path(&stream.name) {
                    saver.abort();
                    let _ = uploader.await;
                    return Err(RepoError::StreamSource(msg));
                }
                if !seen.insert(stream.name.clone()) {
                    saver.abort();
                    let _ = uploader.await;
                    return Err(RepoError::StreamSource(format!("two streams are named {:?}", stream.name)));
                }
                let s = saver.clone();
                let order = pulled;
                pulled += 1;
                running.push(tokio::task::spawn_blocking(move || {
                    let Stream { name, reader, finish, mtime, known } = stream;
                    if let Some((content, size)) =
                        known.filter(|(c, _)| c.iter().all(|id| s.index.contains(id)))
                    {
                        return Saved {
                            order,
                            name,
                            mtime,
                            reused: true,
                            content: Ok((content, size)),
                            finished: finish(),
                        };
                    }
                    let mut reader = reader;
                    let r = s.save_stream(&mut reader, None);
                    drop(reader);
                    Saved { order, name, mtime, reused: false, content: r, finished: finish() }
                }));
            }
            let Some(done) = running.next().await else { break };
            let done = done.map_err(|e| RepoError::Refused(e.to_string()))?;
            let failure = match (&done.content, &done.finished) {
                (Ok(_), Ok(())) => None,
                (Err(StreamError::Repo(_)), _) => Some(None),
                (Err(StreamError::Source(e)), _) => Some(Some(format!("{}: {e}", done.name))),
                (Ok(_), Err(msg)) => Some(Some(msg.clone())),
            };
            if let Some(source_error) = failure {
                saver.abort();
                let uploaded = uploader.await;
                return Err(match (source_error, done.content) {
                    (Some(msg), _) => RepoError::StreamSource(msg),
                    (None, Err(StreamError::Repo(e))) => match uploaded {
                        Ok(Err(upload_error)) => upload_error,
                        _ => e,
                    },
                    (None, _) => unreachable!("a repository failure carries its error"),
                });
            }
            saved.push(done);
        }
        if saved.is_empty() {
            saver.abort();
            let _ = uploader.await;
            return Err(RepoError::StreamSource("the source produced nothing to back up".into()));
        }
        // Top-level names, in the order the streams came (format.md §11).
        saved.sort_by_key(|s| s.order);
        let t = repo.now();
        let now = (t.timestamp(), t.timestamp_subsec_nanos());
        let mut names: Vec<String> = Vec::new();
        let mut root = StreamDir::default();
        let (mut files, mut unchanged, mut total) = (0u64, 0u64, 0u64);
        for s in saved {
            let (content, size) = match s.content {
                Ok(x) => x,
                Err(_) => unreachable!("failures returned above"),
            };
            let parts = stream_path(&s.name).expect("checked above");
            let mut node = Node::new(*parts.last().expect("a path has a last part"), NodeType::File);
            node.mode = 0o600;
            node.mtime = (s.mtime.unwrap_or(now.0), if s.mtime.is_some() { 0 } else { now.1 });
            node.ctime = node.mtime;
            node.size = Some(size);
            node.content = Some(content);
            root.insert(&parts, node);
            if !names.contains(&parts[0].to_string()) {
                names.push(parts[0].to_string());
            }
            files += 1;
            unchanged += u64::from(s.reused);
            total += size;
        }
        let s = saver.clone();
        let (tree_id, dirs) = tokio::task::spawn_blocking(move || root.save(&s, now))
            .await
            .map_err(|e| RepoError::Refused(e.to_string()))??;
        saver.clone().finish(uploader).await?;
        let mut snap = Snapshot::new(tree_id, names, repo.now());
        opts.stamp(&mut snap, "stream");
        let summary = Summary {
            files,
            dirs,
            bytes: total,
            files_new: files - unchanged,
            files_unchanged: unchanged,
            ..Summary::default()
        };
        commit_snapshot(repo, &session, snap, summary, &saver.counters, started).await
    }
    .await;
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

fn node_from_metadata(name: &[u8], m: &Metadata) -> Node {
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_dir() {
        NodeType::Dir
    } else if ft.is_symlink() {
        NodeType::Symlink
    } else if ft.is_fifo() {
        NodeType::Fifo
    } else if ft.is_socket() {
        NodeType::Socket
    } else if ft.is_char_device() {
        NodeType::Chardev
    } else if ft.is_block_device() {
        NodeType::Blockdev
    } else {
        NodeType::File
    };
    let mut n = Node::new("", kind);
    n.set_name_bytes(name);
    n.mode = m.mode() & 0o7777;
    n.uid = m.uid();
    n.gid = m.gid();
    n.mtime = (m.mtime(), m.mtime_nsec() as u32);
    n.ctime = (m.ctime(), m.ctime_nsec() as u32);
    n.inode = m.ino();
    n.device = m.dev();
    n.links = m.nlink();
    if matches!(kind, NodeType::Chardev | NodeType::Blockdev) {
        n.rdev = Some(m.rdev());
    }
    if kind == NodeType::File {
        n.size = Some(m.len());
    }
    n
}

impl Walker {
    fn too_old(&self, meta: &Metadata) -> bool {
        let Some(window) = self.opts.changed_within else { return false };
        match meta.modified().ok().and_then(|m| m.elapsed().ok()) {
            Some(age) => age > window,
            None => false,
        }
    }

    fn warn(&self, path: &Path, message: String) {
        tracing::warn!(path = %path.display(), "{message}");
        self.warnings
            .lock()
            .expect("warnings lock")
            .push(Warning { path: path.display().to_string(), message });
    }

    async fn save_tree(&self, mut tree: Tree) -> Result<Id> {
        let saver = self.saver.clone();
        let bytes = tree.encode();
        tokio::task::spawn_blocking(move || saver.save_blob(BlobType::Tree, &bytes))
            .await
            .map_err(|e| RepoError::Refused(e.to_string()))?
    }

    async fn parent_subtree(&self, parent: Option<&Node>) -> Option<Tree> {
        let id = parent.filter(|n| n.kind == NodeType::Dir)?.subtree?;
        if !self.saver.index.contains(&id) {
            return None;
        }
        self.saver.repo.load_tree(&self.saver.index, &id).await.ok()
    }

    /// The synthetic directories above the backed-up paths.
    fn save_root(
        self: Arc<Self>,
        dir: RootDir,
        path: PathBuf,
        parent: Option<Tree>,
    ) -> BoxFuture<'static, Result<Id>> {
        Box::pin(async move {
            let mut tree = Tree::default();
            for (name, child) in dir.children {
                let child_path = path.join(std::ffi::OsStr::from_bytes(&name));
                let parent_node = parent.as_ref().and_then(|t| find(t, &name)).cloned();
                let node = if let Some(real) = child.real {
                    let depth = real.components().count();
                    match self.clone().save_path(real, parent_node, depth).await? {
                        Some(n) => n,
                        None => continue,
                    }
                } else {
                    let meta = std::fs::metadata(&child_path).map_err(|e| RepoError::io(&child_path, e))?;
                    let mut node = node_from_metadata(&name, &meta);
                    let sub = self.parent_subtree(parent_node.as_ref()).await;
                    node.subtree = Some(self.clone().save_root(child, child_path, sub).await?);
                    node
                };
                tree.nodes.push(node);
            }
            self.save_tree(tree).await
        })
    }

    /// One path: returns its node, or `None` when it is excluded or
    /// vanished.
    fn save_path(
        self: Arc<Self>,
        path: PathBuf,
        parent: Option<Node>,
        depth: usize,
    ) -> BoxFuture<'static, Result<Option<Node>>> {
        Box::pin(async move {
            let name = path.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => {
                    self.warn(&path, format!("cannot stat: {e}"));
                    return Ok(None);
                }
            };
            let mut node = node_from_metadata(&name, &meta);
            if node.kind == NodeType::File && self.too_old(&meta) {
                return Ok(None);
            }
            match node.kind {
                NodeType::File => self.save_file(&path, &mut node, parent.as_ref()).await?,
                NodeType::Symlink => match std::fs::read_link(&path) {
                    Ok(t) => node.set_target_bytes(t.as_os_str().as_bytes()),
                    Err(e) => {
                        self.warn(&path, format!("cannot read link: {e}"));
                        return Ok(None);
                    }
                },
                NodeType::Dir => {
                    self.summary.lock().expect("summary lock").dirs += 1;
                    if depth >= kura_format::tree::MAX_DEPTH {
                        self.warn(
                            &path,
                            format!(
                                "nested deeper than {} directories: stored empty, its contents are not backed up",
                                kura_format::tree::MAX_DEPTH
                            ),
                        );
                        node.subtree = Some(self.save_tree(Tree::default()).await?);
                        return Ok(Some(node));
                    }
                    let sub = self.parent_subtree(parent.as_ref()).await;
                    node.subtree = Some(self.clone().save_dir(&path, &meta, sub, depth).await?);
                }
                _ => {}
            }
            Ok(Some(node))
        })
    }

    async fn save_dir(
        self: Arc<Self>,
        path: &Path,
        meta: &Metadata,
        parent: Option<Tree>,
        depth: usize,
    ) -> Result<Id> {
        let dev = meta.dev();
        let entries = match list_dir(path, meta) {
            Ok(v) => v,
            Err(e) => {
                self.warn(path, format!("cannot list: {e}"));
                Vec::new()
            }
        };
        let mut children = Vec::new();
        for p in entries {
            if self.excludes.excluded(&p) {
                continue;
            }
            if self.opts.one_file_system {
                if let Ok(m) = std::fs::symlink_metadata(&p) {
                    if m.is_dir() && m.dev() != dev {
                        continue;
                    }
                }
            }
            let name = p.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            let parent_node = parent.as_ref().and_then(|t| find(t, &name)).cloned();
            children.push((p, parent_node));
        }
        let nodes: Vec<Option<Node>> = stream::iter(children)
            .map(|(p, pn)| self.clone().save_path(p, pn, depth + 1))
            .buffered(64)
            .try_collect()
            .await?;
        self.save_tree(Tree { nodes: nodes.into_iter().flatten().collect() }).await
    }

    async fn save_file(&self, path: &Path, node: &mut Node, parent: Option<&Node>) -> Result<()> {
        let size = node.size.unwrap_or(0);
        {
            let mut s = self.summary.lock().expect("summary lock");
            s.files += 1;
            s.bytes += size;
        }
        if let Some(content) = self.unchanged_content(node, parent) {
            self.summary.lock().expect("summary lock").files_unchanged += 1;
            self.saver.counters.files.fetch_add(1, Ordering::Relaxed);
            self.saver.counters.bytes_read.fetch_add(size, Ordering::Relaxed);
            node.content = Some(content);
            return Ok(());
        }
        if let Some(PathHook(hook)) = &self.opts.before_open {
            let (hook, p) = (hook.clone(), path.to_path_buf());
            let _ = tokio::task::spawn_blocking(move || hook(&p)).await;
        }
        let early = self.prefetch(path, size);
        let gate = if size >= SMALL_READ { &self.large_files } else { &self.small_files };
        let _permit = gate.acquire().await.expect("semaphore open");
        let saver = self.saver.clone();
        let p = path.to_path_buf();
        let stored = tokio::task::spawn_blocking(move || {
            let (mut f, before) = match early {
                Some((f, m, _ahead)) => (f, m),
                None => open_regular(&p).map_err(StreamError::Source)?,
            };
            let (content, read) = saver.save_stream(&mut f, Some(before.len()))?;
            let after = f.metadata().map_err(StreamError::Source)?;
            Ok((content, read, before, after))
        })
        .await
        .map_err(|e| RepoError::Refused(e.to_string()))?;
        self.saver.counters.files.fetch_add(1, Ordering::Relaxed);
        match stored {
            Ok((content, read, before, after)) => {
                // What the file is, from the handle its bytes came from: a
                // path swapped for a symlink to another file after our lstat
                // is stored with that file's owner and mode, never ours.
                let name = node.name_bytes().unwrap_or_default();
                *node = node_from_metadata(&name, &before);
                let changed = read != before.len()
                    || after.len() != before.len()
                    || (after.mtime(), after.mtime_nsec()) != (before.mtime(), before.mtime_nsec());
                if changed {
                    self.warn(
                        path,
                        format!(
                            "changed while it was read ({} bytes before, {} after, {read} read); \
                             the snapshot holds what was read, which may mix both",
                            before.len(),
                            after.len()
                        ),
                    );
                }
                node.size = Some(read);
                node.content = Some(content);
                let mut s = self.summary.lock().expect("summary lock");
                if parent.is_some_and(|p| p.kind == NodeType::File) {
                    s.files_changed += 1;
                } else {
                    s.files_new += 1;
                }
                Ok(())
            }
            Err(StreamError::Source(e)) => {
                let msg = format!("cannot read: {e}");
                self.warn(path, msg.clone());
                node.error = Some(msg);
                node.size = Some(0);
                node.content = Some(Vec::new());
                Ok(())
            }
            Err(StreamError::Repo(e)) => Err(e),
        }
    }

    /// Opens a file that waits for its turn and asks the kernel to read its
    /// first bytes in the background (`POSIX_FADV_WILLNEED`), so that on a
    /// cold cache the disk works on the next files while the current ones
    /// are compressed. At most [`PREFETCH_FILES`] are held open this way;
    /// beyond that, files are opened when their turn comes.
    fn prefetch(
        &self,
        path: &Path,
        size: u64,
    ) -> Option<(std::fs::File, Metadata, tokio::sync::OwnedSemaphorePermit)> {
        let permit = self.prefetch.clone().try_acquire_owned().ok()?;
        let (f, m) = open_regular(path).ok()?;
        if let Some(len) = std::num::NonZeroU64::new(size.min(PREFETCH_BYTES)) {
            let _ = rustix::fs::fadvise(&f, 0, Some(len), rustix::fs::Advice::WillNeed);
        }
        Some((f, m, permit))
    }

    fn unchanged_content(&self, node: &Node, parent: Option<&Node>) -> Option<Vec<Id>> {
        if self.opts.force {
            return None;
        }
        let p = parent?;
        let same = p.kind == NodeType::File
            && p.error.is_none()
            && p.size == node.size
            && p.mtime == node.mtime
            && p.ctime == node.ctime
            && p.inode == node.inode
            && p.device == node.device;
        if !same {
            return None;
        }
        let content = p.content.clone()?;
        content.iter().all(|id| self.saver.index.contains(id)).then_some(content)
    }
}

/// The entries of directory `path`, listed from a handle opened without
/// following a symlink and checked to be the directory `meta` describes: a
/// directory swapped for a symlink after it was looked at is not listed.
fn list_dir(path: &Path, meta: &Metadata) -> std::io::Result<Vec<PathBuf>> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let st = rustix::fs::fstat(&fd).map_err(std::io::Error::from)?;
    if (st.st_dev, st.st_ino) != (meta.dev(), meta.ino()) {
        return Err(std::io::Error::other("it was replaced while the backup ran"));
    }
    let mut out = Vec::new();
    let mut dir = rustix::fs::Dir::read_from(&fd).map_err(std::io::Error::from)?;
    while let Some(e) = dir.read() {
        let e = e.map_err(std::io::Error::from)?;
        let name = e.file_name().to_bytes();
        if name != b"." && name != b".." {
            out.push(path.join(std::ffi::OsStr::from_bytes(name)));
        }
    }
    Ok(out)
}

/// Opens a file to back it up, and says what it is from the open handle.
///
/// `O_NOFOLLOW`: a file swapped for a symlink after it was listed is not
/// followed. `O_NONBLOCK`: a FIFO swapped in does not hang the backup (a
/// regular file ignores the flag). Anything that is not a regular file once
/// open is refused.
fn open_regular(path: &Path) -> std::io::Result<(std::fs::File, Metadata)> {
    use rustix::fs::{Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(std::io::Error::from)?;
    let f = std::fs::File::from(fd);
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(std::io::Error::other(
            "is no longer a regular file (it was replaced while the backup ran)",
        ));
    }
    Ok((f, m))
}

fn find<'a>(tree: &'a Tree, name: &[u8]) -> Option<&'a Node> {
    // Nodes are sorted by name bytes (format.md §10).
    let i = tree.nodes.partition_point(|n| n.name_bytes().unwrap_or_default().as_slice() < name);
    tree.nodes.get(i).filter(|n| n.name_bytes().map(|b| b == name).unwrap_or(false))
}
