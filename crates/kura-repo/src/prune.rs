//! Forgetting snapshots and reclaiming space (format.md §13).
//!
//! Backups never wait on prune and prune never deletes what a backup may be
//! using: unused packs are first written to a deletion marker, and only a
//! later prune deletes them, once the grace period has passed and every
//! backup that could have seen them has finished (its session is gone) or
//! died (its session went stale). Partly used packs are repacked: their used
//! blobs are copied into new packs, indexed, and the old pack is marked.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use futures::future::BoxFuture;
use kura_format::index::IndexFile;
use kura_format::session::{DeletionMarker, Session};
use kura_format::tree::NodeType;
use kura_format::{paths, Id};
use kura_store::ErrorKind;
use serde::Serialize;

use crate::index::Index;
use crate::saver::{Counters, Saver};
use crate::{RepoError, Repository, Result};

/// Deletes snapshots. Their data stays until prune reclaims it (§12.7).
pub async fn forget(repo: &Repository, ids: &[Id]) -> Result<()> {
    for id in ids {
        repo.store().delete(&paths::snapshot(id)).await?;
    }
    Ok(())
}

#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// How old a deletion marker must be before its packs are deleted. Also
    /// bounds the clock skew tolerated between hosts.
    pub grace: Duration,
    /// Repack a pack when more than this fraction of its bytes is unused.
    pub repack_unused: f64,
    pub dry_run: bool,
    pub hostname: String,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::minutes(10),
            repack_unused: 0.2,
            dry_run: false,
            hostname: String::new(),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub snapshots: u64,
    pub packs: u64,
    pub blobs_used: u64,
    /// Packs written to a new deletion marker by this run.
    pub packs_marked: u64,
    pub bytes_marked: u64,
    pub packs_repacked: u64,
    pub blobs_repacked: u64,
    /// Packs deleted by this run (marked by an earlier one).
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
    /// Packs kept because they became used again after being marked.
    pub packs_revived: u64,
    /// Markers not yet old enough, or held back by a live backup.
    pub markers_waiting: u64,
    pub index_files_rewritten: u64,
}

pub(crate) struct PruneLock {
    repo: Arc<Repository>,
    heartbeat: tokio::task::JoinHandle<()>,
    /// How far this host's clock is ahead of the store's.
    skew: Duration,
}

/// The store's modification time of an object, if it reports one.
async fn stored_at(repo: &Repository, key: &str) -> kura_store::Result<Option<DateTime<Utc>>> {
    Ok(crate::repository::stored_time(&repo.store().stat(key).await?))
}

/// How far this host's clock (the repository handle's) is ahead of the store's,
/// measured by writing a scratch object and reading its modification time
/// back (format.md §13). Zero on a store that reports none.
async fn clock_skew(repo: &Repository) -> Result<Duration> {
    let key = format!("locks/clock-{}", Id::random().to_hex());
    let before = repo.now();
    repo.store().put(&key, Bytes::new()).await?;
    let after = repo.now();
    let stored = stored_at(repo, &key).await;
    let _ = repo.store().delete(&key).await;
    Ok(match stored? {
        Some(t) => before + (after - before) / 2 - t,
        None => Duration::zero(),
    })
}

impl PruneLock {
    /// The store's clock now, as this host best knows it.
    fn store_now(&self) -> DateTime<Utc> {
        self.repo.now() - self.skew
    }

    pub(crate) async fn take(repo: &Arc<Repository>, hostname: &str) -> Result<PruneLock> {
        let skew = clock_skew(repo).await?;
        let mut session = Session::new("prune", hostname, repo.now());
        for _ in 0..2 {
            match repo.store().put_new(paths::PRUNE_LOCK, Bytes::from(session.seal(repo.key()))).await {
                Ok(()) => {
                    let r = repo.clone();
                    let heartbeat = tokio::spawn(async move {
                        let every = kura_format::session::HEARTBEAT_EVERY.to_std().expect("positive");
                        loop {
                            tokio::time::sleep(every).await;
                            session.heartbeat = r.now();
                            let _ =
                                r.store().put(paths::PRUNE_LOCK, Bytes::from(session.seal(r.key()))).await;
                        }
                    });
                    return Ok(PruneLock { repo: repo.clone(), heartbeat, skew });
                }
                Err(e) if e.kind == ErrorKind::AlreadyExists => {
                    let holder = match repo.store().get(paths::PRUNE_LOCK).await {
                        Ok(b) => Session::open(repo.key(), &b).ok(),
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e.into()),
                    };
                    // Judged on the store's clock, so a holder whose clock
                    // runs late does not look dead (format.md §13).
                    let stored = match stored_at(repo, paths::PRUNE_LOCK).await {
                        Ok(t) => t,
                        Err(e) if e.is_not_found() => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let holder = holder.map(|h| match stored {
                        Some(t) => h.on_store_clock(t),
                        None => h,
                    });
                    match holder {
                        Some(h) if h.is_live(repo.now() - skew) => {
                            return Err(RepoError::PruneRunning {
                                host: h.hostname,
                                started: h.started.to_rfc3339(),
                            })
                        }
                        _ => {
                            tracing::warn!("taking over a stale prune lock");
                            repo.store().delete(paths::PRUNE_LOCK).await?;
                            session = Session::new("prune", hostname, repo.now());
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(RepoError::PruneLockLost)
    }

    pub(crate) async fn release(self) {
        self.heartbeat.abort();
        let _ = self.repo.store().delete(paths::PRUNE_LOCK).await;
    }
}

pub async fn prune(repo: &Arc<Repository>, opts: &PruneOptions) -> Result<PruneReport> {
    let lock = PruneLock::take(repo, &opts.hostname).await?;
    let r = prune_locked(repo, opts, lock.store_now()).await;
    lock.release().await;
    r
}

/// Sessions still live at `now` (the store's clock), their times moved onto
/// the store's clock: a backup host whose clock runs late is not taken for
/// dead, nor one whose clock runs early for younger than it is (format.md §13).
async fn live_sessions(repo: &Repository, now: DateTime<Utc>) -> Result<Vec<Session>> {
    let mut out = Vec::new();
    for meta in repo.store().list(paths::SESSIONS).await? {
        let Some(id) = paths::id_of(&meta.key) else { continue };
        let stored = crate::repository::stored_time(&meta);
        match repo.store().get(&paths::session(&id)).await {
            Ok(b) => match Session::open(repo.key(), &b).map(|s| match stored {
                Some(t) => s.on_store_clock(t),
                None => s,
            }) {
                Ok(s) if s.is_live(now) => out.push(s),
                Ok(_) => {
                    // Stale: left by a backup that died. Tidy it away.
                    let _ = repo.store().delete(&paths::session(&id)).await;
                }
                Err(e) => tracing::warn!(session = %id.short(), error = %e, "unreadable session ignored"),
            },
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(out)
}

/// What prune knows of the repository, read once and in the order
/// format.md §12.5 requires (sessions before snapshots).
struct View {
    sessions: Vec<Session>,
    markers: Vec<(Id, DeletionMarker)>,
    index_files: Vec<(Id, IndexFile)>,
    index: Index,
    used: HashSet<Id>,
    /// Every pack present, with its size.
    listed: HashMap<Id, u64>,
    all_marked: HashSet<Id>,
    pack_blobs: HashMap<Id, Vec<kura_format::index::IndexBlob>>,
}

impl View {
    async fn read(repo: &Repository, now: DateTime<Utc>, report: &mut PruneReport) -> Result<View> {
        let sessions = live_sessions(repo, now).await?;
        let markers = repo.deletion_markers().await?;
        let (snapshots, bad) = repo.snapshots().await?;
        if let Some((id, e)) = bad.first() {
            return Err(RepoError::Unsure {
                what: format!("snapshot {}", id.short()),
                reason: e.to_string(),
            });
        }
        report.snapshots = snapshots.len() as u64;
        let index_files = repo
            .read_index_files()
            .await
            .map_err(|e| RepoError::Unsure { what: "an index file".into(), reason: e.to_string() })?;
        let mut index = Index::new();
        for (_, f) in &index_files {
            index.add_file(f, &HashSet::new());
        }
        index.finish();
        let used = used_blobs(repo, &index, snapshots.iter().map(|(_, s)| s.tree)).await?;
        report.blobs_used = used.len() as u64;
        let listed = repo.list_packs().await?;
        report.packs = listed.len() as u64;
        let all_marked = markers.iter().flat_map(|(_, m)| m.packs.iter().copied()).collect();
        let pack_blobs = index.to_packs(|_| true).into_iter().map(|p| (p.id, p.blobs)).collect();
        Ok(View { sessions, markers, index_files, index, used, listed, all_marked, pack_blobs })
    }

    /// A blob is safe to lose from pack `except` if it has a copy in a pack
    /// that exists and is not marked.
    fn has_safe_copy(&self, blob: &Id, except: &Id) -> bool {
        self.index.get_all(blob).iter().any(|l| {
            l.pack != *except && !self.all_marked.contains(&l.pack) && self.listed.contains_key(&l.pack)
        })
    }

    /// Whether a pack holds a used blob with no safe copy elsewhere.
    fn pack_needed(&self, pack: &Id) -> bool {
        self.pack_blobs.get(pack).is_some_and(|blobs| {
            blobs.iter().any(|b| self.used.contains(&b.id) && !self.has_safe_copy(&b.id, pack))
        })
    }

    fn size(&self, packs: impl IntoIterator<Item = Id>) -> u64 {
        packs.into_iter().map(|p| self.listed.get(&p).copied().unwrap_or(0)).sum()
    }
}

async fn prune_locked(
    repo: &Arc<Repository>,
    opts: &PruneOptions,
    now: DateTime<Utc>,
) -> Result<PruneReport> {
    let mut report = PruneReport::default();
    let view = View::read(repo, now, &mut report).await?;
    let deleted = delete_marked(repo, &view, opts, now, &mut report).await?;
    let (home, mut candidates, to_repack) = choose_marks(&view, &deleted, opts);
    if !to_repack.is_empty() && !opts.dry_run {
        repack(repo, &view, &home, &to_repack, &mut report).await?;
        report.packs_repacked = to_repack.len() as u64;
        candidates.extend(to_repack);
    } else if opts.dry_run {
        report.packs_repacked = to_repack.len() as u64;
    }
    report.packs_marked = candidates.len() as u64;
    report.bytes_marked = view.size(candidates.iter().copied());
    if !candidates.is_empty() && !opts.dry_run {
        candidates.sort();
        let (id, bytes) = DeletionMarker::new(candidates, repo.now()).seal(repo.key());
        repo.put_object(&paths::deletion(&id), bytes).await?;
    }
    Ok(report)
}

/// Phase two: deletes what earlier runs marked, once their grace has passed
/// and no backup that could use it is live; a marked pack something needs
/// again is revived. Returns the packs deleted (or that would be).
async fn delete_marked(
    repo: &Repository,
    view: &View,
    opts: &PruneOptions,
    now: DateTime<Utc>,
    report: &mut PruneReport,
) -> Result<HashSet<Id>> {
    let mut delete: HashSet<Id> = HashSet::new();
    let mut done_markers = Vec::new();
    for (mid, m) in &view.markers {
        let ripe = m.created + opts.grace < now;
        // At or before: stores give times in whole seconds, and a session
        // begun in the marker's second may not have seen what it marks.
        let blocked = view.sessions.iter().any(|s| s.started <= m.created + opts.grace);
        if !ripe || blocked {
            report.markers_waiting += 1;
            continue;
        }
        for p in &m.packs {
            if view.pack_needed(p) {
                report.packs_revived += 1;
            } else if view.listed.contains_key(p) {
                delete.insert(*p);
            }
        }
        done_markers.push(*mid);
    }
    if opts.dry_run {
        report.packs_deleted = delete.len() as u64;
        report.bytes_deleted = view.size(delete.iter().copied());
        return Ok(delete);
    }
    let rewrite = view.index_files.iter().any(|(_, f)| f.packs.iter().any(|p| delete.contains(&p.id)));
    if rewrite {
        // §12.6: successors first, then the index files they replace, then
        // the packs.
        let keep = view.index.to_packs(|p| !delete.contains(p));
        for chunk in keep.chunks(4096) {
            repo.write_index(&IndexFile { packs: chunk.to_vec() }).await?;
            report.index_files_rewritten += 1;
        }
        for (id, _) in &view.index_files {
            repo.store().delete(&paths::index(id)).await?;
        }
    }
    for p in &delete {
        repo.store().delete(&paths::pack(p)).await?;
        report.packs_deleted += 1;
        report.bytes_deleted += view.size([*p]);
    }
    for m in &done_markers {
        repo.store().delete(&paths::deletion(m)).await?;
    }
    Ok(delete)
}

/// Phase one, deciding: which packs hold nothing needed (to be marked) and
/// which hold so little that their needed blobs are copied out first.
/// Each used blob gets one home: its copy in the unmarked, existing pack
/// with the smallest id. Only home copies keep a pack alive, so two packs
/// holding the same blob cannot each count on the other.
fn choose_marks(
    view: &View,
    deleted: &HashSet<Id>,
    opts: &PruneOptions,
) -> (HashMap<Id, Id>, Vec<Id>, Vec<Id>) {
    let mut home: HashMap<Id, Id> = HashMap::new();
    for b in &view.used {
        let best = view
            .index
            .get_all(b)
            .into_iter()
            .map(|l| l.pack)
            .filter(|p| !view.all_marked.contains(p) && !deleted.contains(p) && view.listed.contains_key(p))
            .min();
        if let Some(p) = best {
            home.insert(*b, p);
        }
    }
    let mut candidates: Vec<Id> = Vec::new();
    let mut to_repack: Vec<Id> = Vec::new();
    for (pack, size) in &view.listed {
        if view.all_marked.contains(pack) || deleted.contains(pack) {
            continue;
        }
        let Some(blobs) = view.pack_blobs.get(pack) else {
            // Unindexed: an interrupted backup's, or a running one's.
            // Marking is safe: phase two waits for that backup.
            candidates.push(*pack);
            continue;
        };
        let needed: Vec<_> = blobs.iter().filter(|b| home.get(&b.id) == Some(pack)).collect();
        if needed.is_empty() {
            candidates.push(*pack);
            continue;
        }
        let total: u64 = blobs.iter().map(|b| b.length as u64).sum();
        let kept: u64 = needed.iter().map(|b| b.length as u64).sum();
        if total > 0 && (total - kept) as f64 / (*size).max(1) as f64 > opts.repack_unused {
            to_repack.push(*pack);
        }
    }
    (home, candidates, to_repack)
}

/// Copies the blobs whose home is one of `to_repack` into new packs; the
/// copies are stored and indexed before their originals are marked.
async fn repack(
    repo: &Arc<Repository>,
    view: &View,
    home: &HashMap<Id, Id>,
    to_repack: &[Id],
    report: &mut PruneReport,
) -> Result<()> {
    let counters = Arc::new(Counters::default());
    let (saver, uploader) = Saver::start(repo.clone(), Index::new(), counters);
    let mut copied = HashSet::new();
    let result: Result<()> = async {
        for pack in to_repack {
            for b in &view.pack_blobs[pack] {
                if home.get(&b.id) != Some(pack) || !copied.insert(b.id) {
                    continue;
                }
                let content = repo.read_blob(&view.index, &b.id).await?;
                let s = saver.clone();
                let ty = b.ty;
                tokio::task::spawn_blocking(move || s.save_blob(ty, &content))
                    .await
                    .map_err(RepoError::worker)??;
                report.blobs_repacked += 1;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        saver.abort();
        let _ = uploader.await;
        return Err(e);
    }
    saver.finish(uploader).await.map(drop)
}

/// Every blob the given trees reach. Fails if a tree cannot be read: prune
/// must never guess.
async fn used_blobs(
    repo: &Repository,
    index: &Index,
    roots: impl Iterator<Item = Id>,
) -> Result<HashSet<Id>> {
    let mut used = HashSet::new();
    for root in roots {
        collect(repo, index, root, &mut used).await?;
    }
    Ok(used)
}

fn collect<'a>(
    repo: &'a Repository,
    index: &'a Index,
    tree: Id,
    used: &'a mut HashSet<Id>,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        if !used.insert(tree) {
            return Ok(());
        }
        let t = repo.load_tree(index, &tree).await.map_err(|e| RepoError::Unsure {
            what: format!("tree {}", tree.short()),
            reason: e.to_string(),
        })?;
        for n in t.nodes {
            match n.kind {
                NodeType::Dir => {
                    if let Some(sub) = n.subtree {
                        collect(repo, index, sub, used).await?;
                    }
                }
                _ => used.extend(n.content.into_iter().flatten()),
            }
        }
        Ok(())
    })
}
