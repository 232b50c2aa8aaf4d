//! Turning content into stored blobs: dedup against the index, seal, pack,
//! upload, and index what was uploaded.
//!
//! Content is chunked and hashed on worker threads; new blobs are sealed
//! there too and appended to an open pack. Full packs go through a bounded
//! channel to an uploader task with several uploads in flight, which records
//! each completed pack for the next index file (format.md §12.1: an index is
//! written only after all of its packs are stored).
use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use kura_format::index::{IndexFile, IndexPack};
use kura_format::pack::{seal_trailer, PackEntry};
use kura_format::{paths, BlobType, Id};
use rayon::prelude::*;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::chunker::Chunker;
use crate::index::Index;
use crate::{RepoError, Repository, Result};

/// Uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 3;
/// Packs per index file written during a backup: a crash loses at most this
/// many packs' worth of dedup, never data.
const PACKS_PER_INDEX: usize = 64;
/// Bytes read from a file before chunking them as a batch: twice the
/// default largest chunk, so a batch yields several chunks to seal in
/// parallel while memory stays bounded per file in flight.
const READ_BATCH: usize = 8 << 20;
/// Files smaller than this are read into a buffer of their own size.
pub(crate) const SMALL_READ: u64 = 1 << 20;

/// Buffers kept for reuse: a fresh multi-megabyte buffer is a fresh mmap
/// whose every page faults in, which cost about 8% of a backup's CPU. Only
/// as many exist as were in use at once, so memory stays bounded by the
/// work in flight.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    /// Larger buffers are freed rather than kept: they are rare (one per
    /// chunk near the largest size) and would otherwise stay resident.
    keep_up_to: usize,
}

impl Pool {
    fn new(keep_up_to: usize) -> Pool {
        Pool { free: Mutex::new(Vec::new()), keep_up_to }
    }

    fn take(&self) -> Vec<u8> {
        let mut b = self.free.lock().expect("pool lock").pop().unwrap_or_default();
        b.clear();
        b
    }

    fn give(&self, b: Vec<u8>) {
        if b.capacity() <= self.keep_up_to {
            self.free.lock().expect("pool lock").push(b);
        }
    }
}

/// A counting gate on compression and sealing. Files are read by more
/// threads than there are cores, so that a cold disk always has requests
/// queued; but each thread sealing at once holds a zstd context (over a
/// megabyte at level 3) and a sealing buffer, which the pools then keep.
/// Sealing a core's worth at a time keeps the cores busy and memory
/// bounded by the cores, not by the reads in flight.
struct Slots {
    free: Mutex<usize>,
    freed: std::sync::Condvar,
}

struct Slot<'a>(&'a Slots);

impl Slots {
    fn new(n: usize) -> Slots {
        Slots { free: Mutex::new(n), freed: std::sync::Condvar::new() }
    }

    fn enter(&self) -> Slot<'_> {
        let mut free = self.free.lock().expect("slots lock");
        while *free == 0 {
            free = self.freed.wait(free).expect("slots lock");
        }
        *free -= 1;
        Slot(self)
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().expect("slots lock") += 1;
        self.0.freed.notify_one();
    }
}

/// A pack being assembled. Its bytes go to a spool file, not to memory: in
/// the local store's own tree, where publishing it is a link, or in the
/// system's temp directory for a remote store, from which it is uploaded.
/// Memory then holds no pack, however many wait for upload.
struct Packer {
    file: Option<(std::fs::File, SpoolFile)>,
    len: u64,
    hasher: blake3::Hasher,
    entries: Vec<PackEntry>,
}

/// A spool file's name; the file is removed when this is dropped (after
/// its upload, or when the backup fails), so no spool outlives its use.
/// Its lock, held as long as this lives, tells a later backup on this
/// machine that a spool without one was left by a killed run.
pub(crate) struct SpoolFile {
    path: PathBuf,
    _lock: std::fs::File,
}

impl SpoolFile {
    fn locked(path: PathBuf) -> Result<SpoolFile> {
        let lock = std::fs::File::open(&path).map_err(|e| RepoError::io(&path, e))?;
        crate::try_lock(&lock).map_err(|e| RepoError::io(&path, e))?;
        Ok(SpoolFile { path, _lock: lock })
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Spool files start with this (the local store's listings skip it).
const SPOOL_PREFIX: &str = ".tmp-pack-";
/// A spool file untouched for this long was left by a killed backup.
const STALE_SPOOL: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

pub(crate) struct FinishedPack {
    spool: SpoolFile,
    index: IndexPack,
}

impl Packer {
    fn new() -> Packer {
        Packer { file: None, len: 0, hasher: blake3::Hasher::new(), entries: Vec::new() }
    }

    fn append(&mut self, dir: &Path, bytes: &[u8]) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        if self.file.is_none() {
            std::fs::create_dir_all(dir).map_err(|e| RepoError::io(dir, e))?;
            let path = dir.join(format!("{SPOOL_PREFIX}{:016x}", rand::random::<u64>()));
            // Private while it is assembled; the store gives it its mode.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| RepoError::io(&path, e))?;
            let spool = SpoolFile::locked(path.clone());
            let spool = match spool {
                Ok(s) => s,
                Err(e) => {
                    let _ = std::fs::remove_file(&path);
                    return Err(e);
                }
            };
            self.file = Some((f, spool));
        }
        let (f, spool) = self.file.as_mut().expect("opened above");
        f.write_all(bytes).map_err(|e| RepoError::io(&spool.path, e))?;
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn finish(&mut self, repo: &Repository, dir: &Path) -> Result<Option<FinishedPack>> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let entries = std::mem::take(&mut self.entries);
        self.append(dir, &seal_trailer(repo.key(), &entries))?;
        let (_, spool) = self.file.take().expect("a pack with entries has a file");
        let id = Id(*std::mem::replace(&mut self.hasher, blake3::Hasher::new()).finalize().as_bytes());
        self.len = 0;
        Ok(Some(FinishedPack { spool, index: IndexPack::of(id, &entries) }))
    }
}

/// Counters a progress display may read while the work runs.
#[derive(Default, Debug)]
pub struct Counters {
    pub files: AtomicU64,
    pub bytes_read: AtomicU64,
    pub blobs_new: AtomicU64,
    pub bytes_new: AtomicU64,
    pub bytes_stored: AtomicU64,
}

pub(crate) struct Saver {
    pub repo: Arc<Repository>,
    pub index: Index,
    pub chunker: Chunker,
    /// The zstd level blobs are sealed with.
    level: i32,
    /// Smaller chunks for the first [`SMALL_PREFIX`] bytes of each stream,
    /// and the level they are sealed with (format.md §6.1).
    small: Option<(Chunker, i32)>,
    reserved: Mutex<HashSet<Id>>,
    data: Mutex<Packer>,
    trees: Mutex<Packer>,
    tx: Mutex<Option<mpsc::Sender<FinishedPack>>>,
    pub counters: Arc<Counters>,
    /// Read batches of files being chunked.
    read_buffers: Pool,
    /// Sealed blobs on their way into a pack.
    seal_buffers: Pool,
    seal_slots: Slots,
    spool_dir: PathBuf,
}

/// What storing a stream can fail with: the source (a file that vanished,
/// a pipe that broke) or the repository.
pub(crate) enum StreamError {
    Source(std::io::Error),
    Repo(RepoError),
}

impl From<RepoError> for StreamError {
    fn from(e: RepoError) -> Self {
        StreamError::Repo(e)
    }
}

/// The least zstd level of blobs cut smaller than the repository's chunks.
const SMALL_CHUNK_LEVEL: i32 = 7;

/// How much of a stream is cut in small chunks when they are asked for:
/// 2 GiB in 16 KiB chunks is 131,072 blobs, whose ids in the file's tree
/// node take about 9 MB; beyond it, the repository's chunks.
const SMALL_PREFIX: u64 = 2 << 30;

impl Saver {
    /// Starts the uploader; returns the saver and the task to await with
    /// [`Saver::finish`].
    pub fn start(
        repo: Arc<Repository>,
        index: Index,
        counters: Arc<Counters>,
    ) -> (Arc<Saver>, tokio::task::JoinHandle<Result<Vec<IndexPack>>>) {
        Saver::start_chunking(repo, index, counters, None)
    }

    /// [`Saver::start`], cutting chunks of other sizes than the
    /// repository's (format.md §6.1: database streams).
    pub fn start_chunking(
        repo: Arc<Repository>,
        index: Index,
        counters: Arc<Counters>,
        chunking: Option<kura_format::config::ChunkerParams>,
    ) -> (Arc<Saver>, tokio::task::JoinHandle<Result<Vec<IndexPack>>>) {
        let (tx, rx) = mpsc::channel(1);
        let chunker = Chunker::new(repo.key().gear_table(), repo.config().chunker);
        let level = repo.write_level();
        // A small blob compresses with less context; a higher level wins
        // most of it back (a 450 MB dump in 16 KiB chunks: 9% larger than
        // in 1 MiB ones at level 3, 4% at level 7). Only when no
        // compression was asked for: `fast` or `off` are kept.
        let small = chunking.filter(|c| *c != repo.config().chunker).map(|c| {
            let small_level =
                if c.avg_size < repo.config().chunker.avg_size && level == repo.config().zstd_level {
                    level.max(SMALL_CHUNK_LEVEL)
                } else {
                    level
                };
            (Chunker::new(repo.key().gear_table(), c), small_level)
        });
        // Spool files that killed backups left behind. In the system's temp
        // directory, only this machine's processes write, so a spool no
        // process holds locked is one; in a repository's own folder, which
        // another host may share over a network filesystem where locks do
        // not reach, only an old one is.
        let spool_dir = match repo.store().spool_dir() {
            Some(dir) => {
                crate::remove_leftovers(&dir, SPOOL_PREFIX, crate::Abandoned::OlderThan(STALE_SPOOL), &[]);
                dir
            }
            None => {
                let dir = std::env::temp_dir();
                crate::remove_leftovers(&dir, SPOOL_PREFIX, crate::Abandoned::Unlocked, &[]);
                dir
            }
        };
        let saver = Arc::new(Saver {
            level,
            small,
            repo: repo.clone(),
            index,
            chunker,
            reserved: Mutex::new(HashSet::new()),
            data: Mutex::new(Packer::new()),
            trees: Mutex::new(Packer::new()),
            tx: Mutex::new(Some(tx)),
            counters,
            read_buffers: Pool::new(usize::MAX),
            seal_buffers: Pool::new(1 << 20),
            seal_slots: Slots::new(std::thread::available_parallelism().map_or(2, |n| n.get()) + 1),
            spool_dir,
        });
        let uploader = tokio::spawn(upload_loop(repo, rx));
        (saver, uploader)
    }

    fn is_known(&self, id: &Id) -> bool {
        self.index.contains(id) || self.reserved.lock().expect("reserved lock").contains(id)
    }

    /// Whether the repository has blob `id` or this saver is storing it.
    pub fn knows(&self, id: &Id) -> bool {
        self.is_known(id)
    }

    /// Adds a sealed blob unless another thread got there first. Blocking:
    /// call from worker threads only.
    fn add_sealed(&self, ty: BlobType, id: Id, sealed: &[u8], raw_len: usize) -> Result<()> {
        if !self.reserved.lock().expect("reserved lock").insert(id) {
            return Ok(());
        }
        self.counters.blobs_new.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_new.fetch_add(raw_len as u64, Ordering::Relaxed);
        self.counters.bytes_stored.fetch_add(sealed.len() as u64, Ordering::Relaxed);
        let finished = {
            let mut p = match ty {
                BlobType::Data => self.data.lock(),
                BlobType::Tree => self.trees.lock(),
            }
            .expect("packer lock");
            p.entries.push(PackEntry { ty, id, length: sealed.len() as u32, raw_length: raw_len as u32 });
            p.append(&self.spool_dir, sealed)?;
            if p.len >= self.repo.config().pack_size as u64 {
                p.finish(&self.repo, &self.spool_dir)?
            } else {
                None
            }
        };
        if let Some(pack) = finished {
            self.send(pack)?;
        }
        Ok(())
    }

    /// Seals `content` (unless its blob is known) into this thread's
    /// scratch buffer and appends it to the open pack; returns its id.
    fn store_chunk(&self, ty: BlobType, content: &[u8], level: i32) -> Result<Id> {
        let key = self.repo.key();
        let id = key.blob_id(content);
        if !self.is_known(&id) {
            let _slot = self.seal_slots.enter();
            let mut sealed = self.seal_buffers.take();
            let added = key
                .seal_blob_into(content, level, &mut sealed)
                .map_err(RepoError::from)
                .and_then(|()| self.add_sealed(ty, id, &sealed, content.len()));
            self.seal_buffers.give(sealed);
            added?;
        }
        Ok(id)
    }

    fn send(&self, pack: FinishedPack) -> Result<()> {
        let tx = self.tx.lock().expect("tx lock").clone();
        let sent = tx.map(|tx| tx.blocking_send(pack).is_ok()).unwrap_or(false);
        if !sent {
            return Err(RepoError::UploadStopped);
        }
        Ok(())
    }

    /// Stores one blob of content; returns its id. Blocking.
    pub fn save_blob(&self, ty: BlobType, content: &[u8]) -> Result<Id> {
        self.store_chunk(ty, content, self.level)
    }

    /// Chunks and stores a whole stream; returns its blob ids and length.
    /// Blocking. Chunks of one batch are hashed and sealed in parallel.
    pub fn save_stream(
        &self,
        r: &mut dyn Read,
        size_hint: Option<u64>,
    ) -> Result<(Vec<Id>, u64), StreamError> {
        // A small file gets a buffer of its own size, from the allocator's
        // free lists; only large reads use (and grow) the pooled buffers,
        // and those the caller runs a few at a time (backup: two).
        if size_hint.is_some_and(|n| n < SMALL_READ) {
            return self.save_stream_with(r, size_hint, &mut Vec::new());
        }
        let mut buf = self.read_buffers.take();
        let result = self.save_stream_with(r, size_hint, &mut buf);
        self.read_buffers.give(buf);
        result
    }

    fn save_stream_with(
        &self,
        r: &mut dyn Read,
        size_hint: Option<u64>,
        buf: &mut Vec<u8>,
    ) -> Result<(Vec<Id>, u64), StreamError> {
        let mut ids = Vec::new();
        let mut total = 0u64;
        let mut eof = false;
        while !eof || !buf.is_empty() {
            if !eof && buf.len() < READ_BATCH {
                let want = (READ_BATCH - buf.len()) as u64;
                // Exact reservation: read_to_end would otherwise double.
                let expect =
                    size_hint.map_or(want, |h| h.saturating_sub(total + buf.len() as u64).saturating_add(1));
                buf.reserve_exact(want.min(expect) as usize);
                match (&mut *r).take(want).read_to_end(buf) {
                    Ok(n) if (n as u64) < want => eof = true,
                    Ok(_) => {}
                    Err(e) => return Err(StreamError::Source(e)),
                }
            }
            // A stream's first bytes in small chunks, if asked; the rest in
            // the repository's, so that a huge dump's list of blobs stays
            // bounded (format.md §6.1).
            let (chunker, mut level) = match &self.small {
                Some((c, l)) if total < SMALL_PREFIX => (c, *l),
                _ => (&self.chunker, self.level),
            };
            let max = chunker.max_size();
            // Cut every chunk that is final: all of them at end of input,
            // otherwise those followed by at least max_size bytes.
            let mut cuts = Vec::new();
            let mut pos = 0;
            while pos < buf.len() && (eof || buf.len() - pos >= max) {
                let len = chunker.cut(&buf[pos..]);
                cuts.push((pos, len));
                pos += len;
            }
            let data: &[u8] = buf;
            if level > self.level {
                level = self.level_for(data, &cuts, level);
            }
            let chunk_ids: Vec<Id> = if cuts.len() == 1 {
                // One chunk (most files): no hand-off to the pool.
                vec![self.store_chunk(BlobType::Data, &data[..pos], level)?]
            } else {
                cuts.par_iter()
                    .map(|&(s, l)| self.store_chunk(BlobType::Data, &data[s..s + l], level))
                    .collect::<Result<_, RepoError>>()?
            };
            ids.extend(chunk_ids);
            total += pos as u64;
            self.counters.bytes_read.fetch_add(pos as u64, Ordering::Relaxed);
            buf.drain(..pos);
        }
        Ok((ids, total))
    }

    /// The level for a batch of small chunks: the raised one, unless the
    /// batch's first chunk already shrinks to a sixteenth at the ordinary
    /// level. Such filler (pgbench's blank columns, zeroed pages) gains
    /// nothing worth the time from a higher level, whose match finder is
    /// at its slowest on it (a 204 MB pgbench dump took 2.4 s at level 7
    /// against 0.6 s).
    fn level_for(&self, data: &[u8], cuts: &[(usize, usize)], raised: i32) -> i32 {
        let Some(&(s, l)) = cuts.first() else { return raised };
        match kura_format::crypto::compressed_len(&data[s..s + l], self.level) {
            Some(n) if n * 16 <= l => self.level,
            _ => raised,
        }
    }

    /// Flushes open packs and waits for every upload and index write;
    /// returns the index entries of every pack written.
    pub async fn finish(
        self: Arc<Self>,
        uploader: tokio::task::JoinHandle<Result<Vec<IndexPack>>>,
    ) -> Result<Vec<IndexPack>> {
        let s = self.clone();
        let flushed = tokio::task::spawn_blocking(move || -> Result<()> {
            for packer in [&s.data, &s.trees] {
                let pack = packer.lock().expect("packer lock").finish(&s.repo, &s.spool_dir)?;
                if let Some(p) = pack {
                    s.send(p)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(RepoError::worker)?;
        self.tx.lock().expect("tx lock").take();
        let uploaded = uploader.await.map_err(RepoError::worker)?;
        // The uploader's error is the cause; a failed flush is its symptom.
        let packs = uploaded?;
        flushed?;
        Ok(packs)
    }

    /// [`Saver::finish`], then the index this saver deduplicated against
    /// with the new packs in it, for the next saver on the same repository.
    /// The caller must hold no other handle to the saver.
    pub async fn finish_into_index(
        self: Arc<Self>,
        uploader: tokio::task::JoinHandle<Result<Vec<IndexPack>>>,
    ) -> Result<Index> {
        let packs = self.clone().finish(uploader).await?;
        let saver =
            Arc::try_unwrap(self).map_err(|_| RepoError::Worker("the saver is still shared".into()))?;
        let mut index = saver.index;
        for p in &packs {
            index.add_pack(p);
        }
        index.finish();
        Ok(index)
    }

    /// Stops uploads after a failure elsewhere, so nothing keeps running.
    pub fn abort(&self) {
        self.tx.lock().expect("tx lock").take();
    }
}

async fn upload_loop(repo: Arc<Repository>, mut rx: mpsc::Receiver<FinishedPack>) -> Result<Vec<IndexPack>> {
    let mut set: JoinSet<Result<IndexPack>> = JoinSet::new();
    let mut done: Vec<IndexPack> = Vec::new();
    let mut indexed: Vec<IndexPack> = Vec::new();
    let upload = |repo: Arc<Repository>, p: FinishedPack| async move {
        repo.put_object_file(&paths::pack(&p.index.id), &p.spool.path).await?;
        drop(p.spool);
        Ok(p.index)
    };
    let result: Result<()> = async {
        while let Some(pack) = rx.recv().await {
            while set.len() >= UPLOAD_CONCURRENCY {
                done.push(set.join_next().await.expect("non-empty").map_err(join_err)??);
            }
            set.spawn(upload(repo.clone(), pack));
            if done.len() >= PACKS_PER_INDEX {
                let packs = std::mem::take(&mut done);
                repo.write_index(&IndexFile { packs: packs.clone() }).await?;
                indexed.extend(packs);
            }
        }
        while let Some(r) = set.join_next().await {
            done.push(r.map_err(join_err)??);
        }
        Ok(())
    }
    .await;
    // Index whatever did upload, even after a failure: those packs are
    // complete and the next backup can reuse them (format.md §12.1 holds:
    // each is already stored).
    if !done.is_empty() {
        let written = repo.write_index(&IndexFile { packs: done.clone() }).await;
        result?;
        written?;
        indexed.extend(done);
        return Ok(indexed);
    }
    result.map(|()| indexed)
}

fn join_err(e: tokio::task::JoinError) -> RepoError {
    RepoError::worker(e)
}
