//! Copying snapshots into another repository (format.md §11.3).
//!
//! Blob ids are keyed, so a blob copied between repositories with different
//! keys gets a new id, and every tree above it is rewritten. What is costly
//! is reading a blob from the source only to find the destination already
//! has it; the previous copy of the same target avoids most of that: its
//! source and destination trees have the same shape, so walking the two
//! side by side pairs every old source id with its destination id without
//! reading any data, and a subtree whose source id did not change is reused
//! whole. Everything new is read, authenticated, resealed under the
//! destination's key, packed and uploaded through the same saver a backup
//! uses; the copy is read back and checked before its snapshot is written.
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt, TryStreamExt};
use kura_format::snapshot::{CopiedFrom, Snapshot};
use kura_format::tree::{Node, NodeType, Tree};
use kura_format::{BlobType, Id};

use crate::index::Index;
use crate::saver::{Counters, Saver};
use crate::session::SessionGuard;
use crate::{RepoError, Repository, Result};

/// Blobs read from the source at once while a file's content is copied.
const READS_AT_ONCE: usize = 8;

#[derive(Clone, Debug, Default)]
pub struct CopyOptions {
    /// Recorded in the sessions the copy holds (format.md §13).
    pub hostname: String,
}

/// What became of one snapshot asked for.
#[derive(Clone, Debug)]
pub enum Copied {
    /// The destination already held a copy of it (format.md §11.3).
    Present { source: Id, id: Id },
    /// Copied now, checked, and its snapshot written.
    New { source: Id, id: Id, snapshot: Box<Snapshot>, stats: CopyStats },
}

impl Copied {
    pub fn source(&self) -> Id {
        match self {
            Copied::Present { source, .. } | Copied::New { source, .. } => *source,
        }
    }

    pub fn id(&self) -> Id {
        match self {
            Copied::Present { id, .. } | Copied::New { id, .. } => *id,
        }
    }
}

/// The cost of one copied snapshot.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct CopyStats {
    /// Blobs read from the source: those the destination could not be shown
    /// to have already.
    pub blobs_read: u64,
    pub bytes_read: u64,
    /// Blobs (data and trees) the destination did not have.
    pub blobs_new: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub duration_ms: u64,
}

/// The snapshots copied, in the order asked, and the first failure, which
/// ends the run: what was copied before it stays copied.
#[derive(Debug, Default)]
pub struct CopyRun {
    pub done: Vec<Copied>,
    pub failed: Option<(Id, RepoError)>,
}

/// Copies `wanted` (snapshots of `src`, with their ids) into `dst`, oldest
/// first. `on_done` hears of each as it is finished, so a caller can report
/// progress and a kill loses only the snapshot in flight.
pub async fn copy(
    src: &Arc<Repository>,
    dst: &Arc<Repository>,
    mut wanted: Vec<(Id, Snapshot)>,
    opts: &CopyOptions,
    counters: Arc<Counters>,
    on_done: &mut (dyn FnMut(&Copied) + Send),
) -> Result<CopyRun> {
    if src.config().id == dst.config().id {
        return Err(RepoError::SameRepository);
    }
    // format.md §12.3 in the destination; in the source, the session keeps
    // its prune from deleting packs this copy is about to read. A source
    // this host may only read is still copied from, unprotected.
    let dst_session = SessionGuard::start(dst, "copy", &opts.hostname).await?;
    let src_session = match SessionGuard::start(src, "copy", &opts.hostname).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write a session into the source; its prune may remove data this copy reads");
            None
        }
    };
    let run = async {
        let src_id = src.config().id;
        let src_index = src.load_index(&HashSet::new()).await?;
        let (src_snaps, _) = src.snapshots().await?;
        let src_trees: HashMap<Id, Id> = src_snaps.iter().map(|(id, s)| (*id, s.tree)).collect();
        let (dst_snaps, _) = dst.snapshots().await?;
        // Copies already in the destination, by source snapshot.
        let mut present: HashMap<Id, Id> = HashMap::new();
        let mut earlier: Vec<(Snapshot, Id)> = Vec::new();
        for (id, s) in dst_snaps {
            if let Some(from) = s.copied_from.filter(|f| f.repository == src_id) {
                present.insert(from.snapshot, id);
                earlier.push((s, from.snapshot));
            }
        }
        let pending = dst.pending_deletion().await?;
        let mut index = dst.load_index_present(&pending).await?;
        wanted.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        let mut out = CopyRun::default();
        for (id, snap) in wanted {
            if let Some(have) = present.get(&id) {
                let c = Copied::Present { source: id, id: *have };
                on_done(&c);
                out.done.push(c);
                continue;
            }
            // The newest earlier copy of the same host and target whose
            // source is still there pairs old ids with new ones.
            let hint = earlier
                .iter()
                .filter(|(d, _)| {
                    d.hostname == snap.hostname && d.target == snap.target && d.time <= snap.time
                })
                .filter_map(|(d, from)| src_trees.get(from).map(|t| (d.time, (*t, d.tree))))
                .max_by_key(|(t, _)| *t)
                .map(|(_, pair)| pair);
            let result =
                copy_one(src, &src_index, dst, index, &dst_session, id, &snap, hint, counters.clone()).await;
            match result {
                Ok((c, next)) => {
                    index = next;
                    if let Copied::New { snapshot, .. } = &c {
                        earlier.push(((**snapshot).clone(), id));
                    }
                    present.insert(id, c.id());
                    on_done(&c);
                    out.done.push(c);
                }
                Err(e) => {
                    out.failed = Some((id, e));
                    break;
                }
            }
        }
        Ok(out)
    }
    .await;
    dst_session.finish().await;
    if let Some(s) = src_session {
        s.finish().await;
    }
    run
}

/// Copies one snapshot; returns it and the destination's index with its
/// packs added.
#[allow(clippy::too_many_arguments)]
async fn copy_one(
    src: &Arc<Repository>,
    src_index: &Index,
    dst: &Arc<Repository>,
    index: Index,
    session: &SessionGuard,
    id: Id,
    snap: &Snapshot,
    hint: Option<(Id, Id)>,
    counters: Arc<Counters>,
) -> Result<(Copied, Index)> {
    let started = Instant::now();
    // Bounds first (format.md §10): the walk below follows the source's
    // shape, and a hostile source must not make it recurse without end.
    crate::browse::shape(src, src_index, snap.tree).await?;
    let before = Before::of(&counters);
    let mut index = index;
    // A hint that does not survive the check below is dropped and the
    // snapshot copied again without one, reading everything.
    for hint in [hint, None].into_iter().take(if hint.is_some() { 2 } else { 1 }) {
        let (saver, uploader) = Saver::start(dst.clone(), index, counters.clone());
        let mut c = Copier { src, src_index, dst, saver: saver.clone(), ids: HashMap::new(), read: (0, 0) };
        let root = match c.tree(snap.tree, hint).await {
            Ok(root) => root,
            Err(e) => {
                saver.abort();
                let _ = uploader.await;
                return Err(e);
            }
        };
        let read = c.read;
        drop(c);
        index = saver.finish_into_index(uploader).await?;
        let listed = dst.list_packs().await?;
        match check(dst, &index, &listed, root).await {
            Ok(()) => {}
            Err(reason) if hint.is_some() => {
                tracing::warn!(snapshot = %id.short(), %reason, "the earlier copy could not be reused; copying everything");
                continue;
            }
            Err(reason) => return Err(RepoError::CopyCheck { snapshot: id.short(), reason }),
        }
        let mut copy = snap.clone();
        copy.tree = root;
        copy.parent = None;
        copy.copied_from = Some(CopiedFrom { repository: src.config().id, snapshot: id });
        if !session.held() {
            return Err(RepoError::SessionLapsed);
        }
        let new_id = dst.save_snapshot(&copy).await?;
        let stats = before.stats(&counters, read, started);
        return Ok((Copied::New { source: id, id: new_id, snapshot: Box::new(copy), stats }, index));
    }
    unreachable!("the last attempt returns")
}

/// Counter values when a snapshot's copy began.
struct Before {
    blobs_new: u64,
    bytes_new: u64,
    bytes_stored: u64,
}

impl Before {
    fn of(c: &Counters) -> Before {
        Before {
            blobs_new: c.blobs_new.load(Ordering::Relaxed),
            bytes_new: c.bytes_new.load(Ordering::Relaxed),
            bytes_stored: c.bytes_stored.load(Ordering::Relaxed),
        }
    }

    fn stats(&self, c: &Counters, read: (u64, u64), started: Instant) -> CopyStats {
        CopyStats {
            blobs_read: read.0,
            bytes_read: read.1,
            blobs_new: c.blobs_new.load(Ordering::Relaxed) - self.blobs_new,
            bytes_new: c.bytes_new.load(Ordering::Relaxed) - self.bytes_new,
            bytes_stored: c.bytes_stored.load(Ordering::Relaxed) - self.bytes_stored,
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}

struct Copier<'a> {
    src: &'a Arc<Repository>,
    src_index: &'a Index,
    dst: &'a Arc<Repository>,
    saver: Arc<Saver>,
    /// Source id → destination id, of trees and blobs.
    ids: HashMap<Id, Id>,
    /// Blobs and bytes read from the source.
    read: (u64, u64),
}

impl Copier<'_> {
    /// The destination id of source tree `id`, copying what it needs.
    /// `hint` is the same place in the earlier copy: (its source tree, its
    /// destination tree).
    fn tree(&mut self, id: Id, hint: Option<(Id, Id)>) -> BoxFuture<'_, Result<Id>> {
        Box::pin(async move {
            if let Some(d) = self.ids.get(&id).filter(|d| self.saver.knows(d)) {
                return Ok(*d);
            }
            if let Some((old_src, old_dst)) = hint {
                // Unchanged since the earlier copy: that copy's tree is this
                // one's, provided the destination still has it; the check
                // before the snapshot is written reads it all back.
                if old_src == id && self.saver.knows(&old_dst) {
                    self.ids.insert(id, old_dst);
                    return Ok(old_dst);
                }
            }
            let tree = self.src.load_tree(self.src_index, &id).await?;
            self.read.0 += 1;
            let (old_src, old_dst) = match hint {
                Some((s, d)) if self.saver.knows(&d) => {
                    let s = self.src.load_tree(self.src_index, &s).await.ok();
                    let d = self.dst.load_tree(&self.saver.index, &d).await.ok();
                    (by_place(s), by_place(d))
                }
                _ => (HashMap::new(), HashMap::new()),
            };
            let mut nodes = Vec::with_capacity(tree.nodes.len());
            for mut node in tree.nodes {
                let place = (node.name.clone(), node.name_raw.clone(), node.kind);
                let (was_src, was_dst) = (old_src.get(&place).cloned(), old_dst.get(&place).cloned());
                match node.kind {
                    NodeType::Dir => {
                        if let Some(sub) = node.subtree {
                            let h = was_src.and_then(|s| s.subtree).zip(was_dst.and_then(|d| d.subtree));
                            node.subtree = Some(self.tree(sub, h).await?);
                        }
                    }
                    NodeType::File => {
                        if let Some(content) = node.content.take() {
                            if let (Some(Some(s)), Some(Some(d))) =
                                (was_src.map(|s| s.content), was_dst.map(|d| d.content))
                            {
                                // Same chunking on both sides: equal lengths
                                // or the pairing means nothing.
                                if s.len() == d.len() {
                                    for (a, b) in s.into_iter().zip(d) {
                                        self.ids.entry(a).or_insert(b);
                                    }
                                }
                            }
                            node.content = Some(self.content(content).await?);
                        }
                    }
                    _ => {}
                }
                nodes.push(node);
            }
            let mut tree = Tree { nodes };
            let bytes = tree.encode();
            let saver = self.saver.clone();
            let new = tokio::task::spawn_blocking(move || saver.save_blob(BlobType::Tree, &bytes))
                .await
                .map_err(RepoError::worker)??;
            self.ids.insert(id, new);
            Ok(new)
        })
    }

    /// A file's content list in the destination: known blobs mapped, the
    /// rest read from the source a few at a time and saved.
    async fn content(&mut self, content: Vec<Id>) -> Result<Vec<Id>> {
        let mut missing: Vec<Id> = content
            .iter()
            .filter(|s| !self.ids.get(s).is_some_and(|d| self.saver.knows(d)))
            .copied()
            .collect();
        missing.dedup();
        let fetched: Vec<(Id, Id, u64)> = stream::iter(missing)
            .map(|s| fetch(self.src.clone(), self.src_index, self.saver.clone(), s))
            .buffered(READS_AT_ONCE)
            .try_collect()
            .await?;
        for (s, d, len) in fetched {
            self.read.0 += 1;
            self.read.1 += len;
            self.ids.insert(s, d);
        }
        Ok(content.iter().map(|s| self.ids[s]).collect())
    }
}

/// A node's place in its directory: its name (both forms) and kind.
type Place = (String, Option<String>, NodeType);

/// An earlier tree's nodes by place, for pairing with the current one's.
fn by_place(tree: Option<Tree>) -> HashMap<Place, Node> {
    tree.map(|t| t.nodes.into_iter().map(|n| ((n.name.clone(), n.name_raw.clone(), n.kind), n)).collect())
        .unwrap_or_default()
}

/// Reads source blob `s` and stores it in the destination; returns both
/// ids and its length.
async fn fetch(src: Arc<Repository>, index: &Index, saver: Arc<Saver>, s: Id) -> Result<(Id, Id, u64)> {
    let plain = src.read_blob(index, &s).await?;
    let len = plain.len() as u64;
    saver.counters.bytes_read.fetch_add(len, Ordering::Relaxed);
    let d = tokio::task::spawn_blocking(move || saver.save_blob(BlobType::Data, &plain))
        .await
        .map_err(RepoError::worker)??;
    Ok((s, d, len))
}

/// Reads the copy back from the destination: every tree opens under the
/// destination's key, every file's blobs are indexed as data in packs the
/// store lists, long enough, and add up to the file's size.
async fn check(
    dst: &Repository,
    index: &Index,
    listed: &HashMap<Id, u64>,
    root: Id,
) -> std::result::Result<(), String> {
    let mut seen = HashSet::new();
    let mut stack = vec![root];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let tree = dst.load_tree(index, &id).await.map_err(|e| format!("tree {}: {e}", id.short()))?;
        for node in tree.nodes {
            match node.kind {
                NodeType::Dir => stack.extend(node.subtree),
                NodeType::File => {
                    let mut total = 0u64;
                    for blob in node.content.iter().flatten() {
                        let loc = index
                            .get(blob)
                            .filter(|l| l.ty == BlobType::Data)
                            .ok_or_else(|| format!("{}: blob {} is not indexed", node.name, blob.short()))?;
                        let end = u64::from(loc.offset) + u64::from(loc.length);
                        if listed.get(&loc.pack).is_none_or(|size| *size < end) {
                            return Err(format!(
                                "{}: pack {} is missing or short",
                                node.name,
                                loc.pack.short()
                            ));
                        }
                        total += u64::from(loc.raw_length);
                    }
                    if node.content.is_some() && node.size.is_some_and(|s| s != total) {
                        return Err(format!(
                            "{}: its blobs hold {total} bytes, the file {}",
                            node.name,
                            node.size.unwrap_or(0)
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    Ok(())
}
