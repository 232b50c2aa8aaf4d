//! Streams as snapshots: stdin, a command's output, a database dump, an
//! object store's objects, each a named file of the snapshot's tree.
use super::*;

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
        let (saver, uploader) = Saver::start_chunking(repo.clone(), index, counters, opts.chunking);
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
                .map_err(RepoError::worker)?;
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
            let done = done.map_err(RepoError::worker)?;
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
        let (tree_id, dirs) =
            tokio::task::spawn_blocking(move || root.save(&s, now)).await.map_err(RepoError::worker)??;
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
