//! Checking a repository: structure always, data on request.
//!
//! Structure: every snapshot, index file and tree opens, every blob a
//! snapshot needs is indexed, every indexed pack exists and is long enough.
//! Data (`--read-data`): every selected pack is downloaded, checked against
//! its name, its header against the index, and every blob opened and checked
//! against its id. Damage is then traced to the snapshots and paths that
//! need the damaged blobs, so the report says what is lost, not just where.
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use kura_format::index::IndexFile;
use kura_format::pack::read_header;
use kura_format::tree::NodeType;
use kura_format::{paths, Id};
use serde::Serialize;

use crate::index::{Index, Location};
use crate::repository::fetch_all;
use crate::saver::Counters;
use crate::{Repository, Result};

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum ReadData {
    #[default]
    None,
    All,
    /// A random subset of packs, in percent.
    Subset(f64),
}

#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    pub read_data: ReadData,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub index_files: u64,
    pub packs: u64,
    pub packs_read: u64,
    pub blobs_read: u64,
    pub trees: u64,
    /// Packs that no index names: left by an interrupted backup (or being
    /// written by a running one). Not an error; prune removes them.
    pub unindexed_packs: u64,
    pub errors: Vec<Problem>,
    pub affected: Vec<Affected>,
}

#[derive(Debug, Serialize, Clone)]
pub struct Problem {
    pub object: String,
    pub message: String,
}

#[derive(Debug, Serialize, Clone, PartialEq, Eq, Hash)]
pub struct Affected {
    pub snapshot: String,
    pub path: String,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn problem(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem { object: object.into(), message: message.into() });
    }
}

pub async fn verify(
    repo: &Arc<Repository>,
    opts: &VerifyOptions,
    counters: Arc<Counters>,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    // Everything below is listed and read side by side: across a network
    // each listing is a round trip, and none depends on another.
    let (snapshots, markers, keys, index_files, listed) = futures::join!(
        repo.snapshots(),
        fetch_all(repo.store().as_ref(), paths::DELETIONS, |_, b| {
            Ok(kura_format::session::DeletionMarker::open(repo.key(), &b).err())
        }),
        fetch_all(repo.store().as_ref(), paths::KEYS, |_, b| Ok(kura_format::key::KeyFile::decode(&b).err())),
        fetch_all(repo.store().as_ref(), paths::INDEX, |id, bytes| {
            if Id::of_object(&bytes) != *id {
                return Err(crate::RepoError::BadPack("content does not match its name"));
            }
            let content = repo.key().open_object(&bytes, "index")?;
            Ok(IndexFile::decode(&content)?)
        }),
        repo.list_packs(),
    );
    let (snapshots, bad) = snapshots?;
    let (markers, keys, index_files, listed) = (markers?, keys?, index_files?, listed?);
    report.snapshots = (snapshots.len() + bad.len()) as u64;
    for (id, e) in bad {
        report.problem(paths::snapshot(&id), e.to_string());
    }

    // Deletion markers and key files anyone who can write the store could
    // plant: readers skip what they cannot use, and verify names it. One
    // that cannot be read at all is not reported (it may be gone by now).
    for (key, id, unreadable) in markers {
        if let Ok(Some(e)) = unreadable {
            report.problem(key, format!("unreadable deletion marker {} (ignored): {e}", id.short()));
        }
    }
    for (key, _, unreadable) in keys {
        if let Ok(Some(e)) = unreadable {
            report.problem(key, format!("unreadable key file (skipped when opening): {e}"));
        }
    }

    // Index files one by one, so one bad file is reported, not fatal.
    let mut index = Index::new();
    let mut files: Vec<IndexFile> = Vec::new();
    for (_, id, file) in index_files {
        report.index_files += 1;
        match file {
            Ok(f) => {
                index.add_file(&f, &HashSet::new());
                files.push(f);
            }
            Err(e) => report.problem(paths::index(&id), e.to_string()),
        }
    }
    index.finish();

    report.packs = listed.len() as u64;
    report.unindexed_packs = listed.keys().filter(|id| !index.has_pack(id)).count() as u64;

    // Blobs known to be unusable, with the reason.
    let mut damaged: HashMap<Id, String> = HashMap::new();
    for f in &files {
        for p in &f.packs {
            let need = p.blobs.iter().map(|b| b.offset as u64 + b.length as u64).max().unwrap_or(0) + 4;
            let why = match listed.get(&p.id) {
                None => Some("pack missing".to_string()),
                Some(size) if *size < need => {
                    Some(format!("pack truncated ({size} of at least {need} bytes)"))
                }
                _ => None,
            };
            if let Some(why) = why {
                if !report.errors.iter().any(|e| e.object == paths::pack(&p.id)) {
                    report.problem(paths::pack(&p.id), why.clone());
                }
                for b in &p.blobs {
                    // A blob stored again in a pack that is there (a backup
                    // that found this pack missing) is not lost.
                    let elsewhere =
                        index.get_all(&b.id).iter().any(|l| l.pack != p.id && listed.contains_key(&l.pack));
                    if !elsewhere {
                        damaged.insert(b.id, why.clone());
                    }
                }
            }
        }
    }

    // Reads go to packs that are there: a blob stored again after its pack
    // was lost is read from its new copy.
    let missing: HashSet<Id> = index.packs().iter().filter(|p| !listed.contains_key(*p)).copied().collect();
    if !missing.is_empty() {
        let mut present = Index::new();
        for f in &files {
            present.add_file(f, &missing);
        }
        present.finish();
        index = present;
    }

    let selected: Vec<Id> = match opts.read_data {
        ReadData::None => Vec::new(),
        ReadData::All => listed.keys().copied().collect(),
        ReadData::Subset(pct) => {
            listed.keys().copied().filter(|_| rand::random::<f64>() * 100.0 < pct).collect()
        }
    };
    let mut by_pack: HashMap<Id, Vec<(Id, Location)>> = HashMap::new();
    for f in &files {
        for p in &f.packs {
            by_pack.entry(p.id).or_insert_with(|| {
                p.blobs
                    .iter()
                    .map(|b| {
                        let loc = Location {
                            pack: p.id,
                            ty: b.ty,
                            offset: b.offset,
                            length: b.length,
                            raw_length: b.raw_length,
                        };
                        (b.id, loc)
                    })
                    .collect()
            });
        }
    }
    let by_pack = Arc::new(by_pack);
    let index = Arc::new(index);
    // Reading and checking overlap: reads are tasks of their own, up to four
    // at once, and a read that finishes frees its place for the next at
    // once, checked or not (a place held through the check left the link
    // idle for a tenth of a second per pack). Two packs are checked at a
    // time, as many as the cores keep busy, and at most six are held in
    // memory, read or being read.
    let (tx, mut rx) = tokio::sync::mpsc::channel(PACKS_HELD);
    let reader = {
        let repo = repo.clone();
        let held = Arc::new(tokio::sync::Semaphore::new(PACKS_HELD));
        let reading = Arc::new(tokio::sync::Semaphore::new(repo.store().read_concurrency().min(4)));
        tokio::spawn(async move {
            for pack in selected {
                let (Ok(place), Ok(slot)) =
                    (held.clone().acquire_owned().await, reading.clone().acquire_owned().await)
                else {
                    return;
                };
                let (repo, tx) = (repo.clone(), tx.clone());
                tokio::spawn(async move {
                    let read = repo.store().get(&paths::pack(&pack)).await.map_err(|e| e.to_string());
                    drop(slot);
                    let _ = tx.send((pack, read, place)).await;
                });
            }
        })
    };
    let checks = stream::poll_fn(|cx| rx.poll_recv(cx))
        .map(|(pack, read, place)| {
            let repo = repo.clone();
            let by_pack = by_pack.clone();
            let counters = counters.clone();
            async move {
                let checked = check_pack(&repo, &by_pack, pack, read, &counters).await;
                drop(place);
                checked
            }
        })
        .buffer_unordered(2)
        .collect::<Vec<PackCheck>>();
    // The trees are read meanwhile: they are needed after the checks.
    let roots: Vec<Id> = snapshots.iter().map(|(_, snap)| snap.tree).collect();
    let prefetch = async {
        // Across a network the read-ahead saves a round trip per tree; on a
        // disk it would only hold up to its cap in memory for a walk that
        // reads each tree once anyway.
        if repo.store().remote() {
            repo.prefetch_trees(&index, &roots).await;
        }
    };
    let (checks, ()) = futures::join!(checks, prefetch);
    reader.await.map_err(crate::RepoError::worker)?;
    for (pack, problems, blobs) in checks {
        report.packs_read += 1;
        report.blobs_read += blobs;
        for (blob, message) in problems {
            if let Some(b) = blob {
                damaged.insert(b, message.clone());
            }
            report.problem(paths::pack(&pack), message);
        }
    }

    // Trace damage and missing blobs to snapshots and paths.
    let mut clean: HashSet<Id> = HashSet::new();
    let mut affected: HashSet<Affected> = HashSet::new();
    let mut shapes = HashMap::new();
    for (sid, snap) in &snapshots {
        let mut ctx = TraceCtx {
            repo,
            index: &index,
            damaged: &damaged,
            clean: &mut clean,
            affected: &mut affected,
            problems: Vec::new(),
            trees: 0,
            snapshot: sid.short(),
        };
        let intact = trace(&mut ctx, snap.tree, PathBuf::from("/"), 0).await;
        report.trees += ctx.trees;
        // What restore and ls would refuse, verify reports.
        if intact {
            if let Err(e) = crate::browse::shape_with(repo, &index, snap.tree, &mut shapes).await {
                report.problem(paths::snapshot(sid), e.to_string());
            }
        }
        let problems = std::mem::take(&mut ctx.problems);
        for (o, m) in problems {
            if !report.errors.iter().any(|e| e.object == o && e.message == m) {
                report.problem(o, m);
            }
        }
    }
    repo.clear_tree_cache();
    let mut affected: Vec<Affected> = affected.into_iter().collect();
    affected.sort_by(|a, b| (&a.snapshot, &a.path).cmp(&(&b.snapshot, &b.path)));
    report.affected = affected;
    Ok(report)
}

/// Packs held in memory at once by `verify --read-data`, read or being read.
const PACKS_HELD: usize = 6;

/// A pack read: its id, problems (with the damaged blob when known), and
/// how many blobs were checked.
type PackCheck = (Id, Vec<(Option<Id>, String)>, u64);

async fn check_pack(
    repo: &Repository,
    by_pack: &HashMap<Id, Vec<(Id, Location)>>,
    pack: Id,
    read: std::result::Result<bytes::Bytes, String>,
    counters: &Counters,
) -> PackCheck {
    let mut problems = Vec::new();
    let bytes = match read {
        Ok(b) => b,
        Err(e) => return (pack, vec![(None, format!("cannot read: {e}"))], 0),
    };
    counters.bytes_read.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    if Id::of_object(&bytes) != pack {
        problems.push((None, "content does not match its name (damaged)".to_string()));
    }
    if let Some(locs) = by_pack.get(&pack) {
        // Check every indexed blob of this pack where the index says it is.
        let key = repo.key().clone();
        let locs = locs.clone();
        let (found, blobs) = tokio::task::spawn_blocking(move || {
            let mut found = Vec::new();
            for (id, loc) in &locs {
                let (s, e) = (loc.offset as usize, loc.offset as usize + loc.length as usize);
                let r = match bytes.get(s..e) {
                    None => Err("beyond the end of the pack".to_string()),
                    Some(sealed) => key
                        .open_blob(sealed, loc.ty, id, loc.raw_length)
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                };
                if let Err(m) = r {
                    found.push((Some(*id), format!("blob {}: {m}", id.short())));
                }
            }
            if let Err(e) = read_header(&key, &bytes) {
                found.push((None, format!("header: {e}")));
            }
            (found, locs.len() as u64)
        })
        .await
        .unwrap_or_else(|e| (vec![(None, e.to_string())], 0));
        problems.extend(found);
        return (pack, problems, blobs);
    }
    (pack, problems, 0)
}

struct TraceCtx<'a> {
    repo: &'a Repository,
    index: &'a Index,
    damaged: &'a HashMap<Id, String>,
    clean: &'a mut HashSet<Id>,
    affected: &'a mut HashSet<Affected>,
    problems: Vec<(String, String)>,
    trees: u64,
    snapshot: String,
}

impl TraceCtx<'_> {
    fn hit(&mut self, path: &std::path::Path, blob: &Id, why: &str) {
        self.affected.insert(Affected { snapshot: self.snapshot.clone(), path: path.display().to_string() });
        self.problems.push((format!("blob {}", blob.short()), why.to_string()));
    }
}

/// Returns whether everything under `tree` is intact.
fn trace<'a, 'b>(ctx: &'a mut TraceCtx<'b>, tree: Id, path: PathBuf, depth: usize) -> BoxFuture<'a, bool> {
    Box::pin(async move {
        if ctx.clean.contains(&tree) {
            return true;
        }
        if depth > kura_format::tree::MAX_DEPTH {
            let why = crate::RepoError::TreeTooDeep { max: kura_format::tree::MAX_DEPTH }.to_string();
            ctx.hit(&path, &tree, &why);
            return false;
        }
        ctx.trees += 1;
        if let Some(why) = ctx.damaged.get(&tree).cloned() {
            ctx.hit(&path, &tree, &format!("tree unreadable: {why}"));
            return false;
        }
        let t = match ctx.repo.load_tree(ctx.index, &tree).await {
            Ok(t) => t,
            Err(e) => {
                ctx.hit(&path, &tree, &format!("tree unreadable: {e}"));
                return false;
            }
        };
        let mut ok = true;
        for node in t.nodes {
            use std::os::unix::ffi::OsStrExt;
            let name = node.name_bytes().unwrap_or_default();
            let p = path.join(std::ffi::OsStr::from_bytes(&name));
            match node.kind {
                NodeType::Dir => {
                    if let Some(sub) = node.subtree {
                        ok &= trace(ctx, sub, p, depth + 1).await;
                    }
                }
                NodeType::File => {
                    for id in node.content.iter().flatten() {
                        let why = match ctx.damaged.get(id) {
                            Some(w) => Some(w.clone()),
                            None if !ctx.index.contains(id) => {
                                Some("blob missing from the index".to_string())
                            }
                            None => None,
                        };
                        if let Some(w) = why {
                            ctx.hit(&p, id, &w);
                            ok = false;
                        }
                    }
                }
                _ => {}
            }
        }
        if ok {
            ctx.clean.insert(tree);
        }
        ok
    })
}
