//! Opening, creating and reading a repository.
//!
//! A [`Repository`] is an opened repository: its config has been read and
//! checked, and a key has unwrapped the master key. Reading the index is a
//! separate step ([`Repository::load_index`]), since several operations
//! (listing snapshots, managing keys) do not need it.
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use kura_format::clock::{Clock, SystemClock};
use kura_format::config::{ChunkerParams, RepoConfig};
use kura_format::crypto::{KdfParams, MasterKey};
use kura_format::index::IndexFile;
use kura_format::key::KeyFile;
use kura_format::session::DeletionMarker;
use kura_format::snapshot::Snapshot;
use kura_format::tree::Tree;
use kura_format::{paths, FormatError, Id};
use kura_store::{ErrorKind, Store};

use crate::error::KeyRefusal;
use crate::index::{Index, Location};
use crate::{RepoError, Result};

/// How many objects to fetch at once when loading many small ones.
pub(crate) const FETCH_CONCURRENCY: usize = 16;

#[derive(Clone, Debug)]
pub struct InitOptions {
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub zstd_level: i32,
    pub kdf: KdfParams,
    pub hostname: String,
    pub username: String,
    /// When the repository is made (its config and first key say so); now
    /// by default.
    pub time: Option<chrono::DateTime<chrono::Utc>>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            zstd_level: 3,
            kdf: KdfParams::default(),
            hostname: String::new(),
            username: String::new(),
            time: None,
        }
    }
}

pub struct Repository {
    store: Arc<dyn Store>,
    config: RepoConfig,
    key: MasterKey,
    key_id: Id,
    /// The zstd level blobs written through this handle are sealed at: the
    /// repository's own unless a run chose another. Readers need no level,
    /// so blobs of any level mix freely in one repository.
    write_level: i32,
    /// Where this handle's "now" comes from (sessions, markers, snapshot
    /// times, prune's grace): the system's unless the caller gave another.
    clock: Arc<dyn Clock>,
    /// Sealed tree blobs read ahead by [`Repository::prefetch_trees`].
    trees: std::sync::Mutex<TreeCache>,
}

/// Tree blobs as stored (sealed and compressed: a tenth of their decoded
/// size or less), so a walk after a prefetch reads none over the network.
#[derive(Default)]
struct TreeCache {
    blobs: HashMap<Id, Bytes>,
    bytes: usize,
}

/// The most a tree prefetch keeps; past it, trees are read when needed.
const TREE_CACHE_MAX: usize = 128 << 20;
/// The most of one pack's trees a read-ahead across a network takes beyond
/// those it needs (a pack is 16 MiB by default).
const TREE_SWEEP_MAX: usize = 16 << 20;
/// The most one level of a read-ahead takes beyond its own trees, over all
/// the packs it touches.
const TREE_SWEEP_LEVEL_MAX: usize = 32 << 20;

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Repository({})", self.store.location())
    }
}

/// A repository whose config and key files have been read, waiting for a
/// password ([`Repository::locked`]). Several passwords may be tried on it
/// without reading the store again.
pub struct Locked {
    store: Arc<dyn Store>,
    config: RepoConfig,
    key_files: Vec<(Id, Bytes)>,
}

impl Locked {
    /// The repository, opened by the first key file `password` unwraps.
    pub fn unlock(&self, password: &[u8]) -> Result<Repository> {
        let location = self.store.location();
        // Any key file that cannot be used is skipped, never fatal: anyone
        // who can write the store could plant one that sorts first. Only
        // when no key opens is a newer key version worth naming.
        let mut newer = None;
        for (id, bytes) in &self.key_files {
            let kf = match KeyFile::decode(bytes) {
                Ok(k) => k,
                Err(e @ FormatError::UnsupportedVersion { .. }) => {
                    newer = Some(e);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(key = %id.short(), error = %e, "skipping unreadable key file");
                    continue;
                }
            };
            match kf.unwrap_master(password) {
                Ok(key) => {
                    let write_level = self.config.zstd_level;
                    return Ok(Repository {
                        store: self.store.clone(),
                        config: self.config.clone(),
                        key,
                        key_id: *id,
                        write_level,
                        clock: Arc::new(SystemClock),
                        trees: Default::default(),
                    });
                }
                Err(FormatError::WrongPassword) => continue,
                Err(e) => tracing::warn!(key = %id.short(), error = %e, "skipping unusable key file"),
            }
        }
        if let Some(e) = newer {
            return Err(e.into());
        }
        Err(RepoError::WrongPassword { location })
    }
}

impl Repository {
    /// Creates a repository in an empty store.
    pub async fn init(store: Arc<dyn Store>, password: &[u8], opts: &InitOptions) -> Result<Repository> {
        opts.chunker.validate()?;
        kura_format::config::check_pack_size(opts.pack_size)?;
        let location = store.location();
        match store.stat(paths::CONFIG).await {
            Ok(_) => return Err(RepoError::AlreadyInitialized { location }),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        let created = opts.time.unwrap_or_else(|| SystemClock.now());
        let config = RepoConfig::new(opts.chunker, opts.pack_size, opts.zstd_level, created);
        let key = MasterKey::random();
        let kf = KeyFile::wrap(&key, password, opts.kdf, &opts.hostname, &opts.username, created)?;
        let (key_id, bytes) = kf.to_object();
        // The key first: a config without a key would be an unusable
        // repository, a key without a config is just a failed init.
        store.put_new(&paths::key(&key_id), Bytes::from(bytes)).await?;
        match store.put_new(paths::CONFIG, Bytes::from(config.encode())).await {
            Ok(()) => {}
            Err(e) if e.kind == ErrorKind::AlreadyExists => {
                let _ = store.delete(&paths::key(&key_id)).await;
                return Err(RepoError::AlreadyInitialized { location });
            }
            Err(e) => return Err(e.into()),
        }
        let write_level = config.zstd_level;
        Ok(Repository {
            store,
            config,
            key,
            key_id,
            write_level,
            clock: Arc::new(SystemClock),
            trees: Default::default(),
        })
    }

    /// Reads and checks `config`, without a password.
    pub async fn read_config(store: &dyn Store) -> Result<RepoConfig> {
        match store.get(paths::CONFIG).await {
            Ok(b) => Ok(RepoConfig::decode(&b)?),
            Err(e) if e.is_not_found() => Err(RepoError::NotARepository { location: store.location() }),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn open(store: Arc<dyn Store>, password: &[u8]) -> Result<Repository> {
        Repository::locked(store).await?.unlock(password)
    }

    /// Reads what opening needs, once, before any password is tried: the
    /// config and every key file. The config and the key listing are asked
    /// for together and the key files side by side, so across a network
    /// opening costs two round trips, not one per object.
    pub async fn locked(store: Arc<dyn Store>) -> Result<Locked> {
        let (config, keys) = futures::join!(
            Repository::read_config(store.as_ref()),
            fetch_all(store.as_ref(), paths::KEYS, |_, b| Ok(b))
        );
        // A missing or newer repository says so before anything else.
        let config = config?;
        let keys = keys?;
        if keys.is_empty() {
            return Err(RepoError::NoKeys { location: store.location() });
        }
        let mut key_files = Vec::new();
        for (_, id, got) in keys {
            match got {
                Ok(b) => key_files.push((id, b)),
                // Removed since the listing (`kura key remove` elsewhere).
                Err(RepoError::Store(e)) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(Locked { store, config, key_files })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Seals what this handle writes at zstd `level` (0: uncompressed)
    /// instead of the repository's default.
    pub fn with_compression(mut self, level: i32) -> Repository {
        self.write_level = level;
        self
    }

    /// This handle with another clock (a skewed host, simulated time).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Repository {
        self.clock = clock;
        self
    }

    /// Now, by this handle's clock.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn clock(&self) -> Arc<dyn Clock> {
        self.clock.clone()
    }

    /// The zstd level new blobs are sealed at.
    pub fn write_level(&self) -> i32 {
        self.write_level
    }

    pub fn key(&self) -> &MasterKey {
        &self.key
    }

    pub fn key_id(&self) -> Id {
        self.key_id
    }

    /// Ids of the objects under a prefix; foreign files are ignored.
    pub async fn list_ids(&self, prefix: &str) -> Result<Vec<Id>> {
        Ok(self.store.list(prefix).await?.iter().filter_map(|m| paths::id_of(&m.key)).collect())
    }

    /// Every pack in the store, with its size.
    pub async fn list_packs(&self) -> Result<std::collections::HashMap<Id, u64>> {
        Ok(self
            .store
            .list(paths::DATA)
            .await?
            .into_iter()
            .filter_map(|m| paths::id_of(&m.key).map(|id| (id, m.size)))
            .collect())
    }

    /// Every snapshot, oldest first. Snapshots that cannot be read are
    /// returned separately with the reason, so one damaged object does not
    /// hide the others.
    pub async fn snapshots(&self) -> Result<(Vec<(Id, Snapshot)>, Vec<(Id, RepoError)>)> {
        let ids = self.list_ids(paths::SNAPSHOTS).await?;
        let results: Vec<(Id, Result<Snapshot>)> = stream::iter(ids)
            .map(|id| async move {
                let r = async {
                    let bytes = self.store.get(&paths::snapshot(&id)).await?;
                    if Id::of_object(&bytes) != id {
                        return Err(FormatError::Corrupt {
                            what: "snapshot",
                            reason: "content does not match its name".into(),
                        }
                        .into());
                    }
                    Ok(Snapshot::open(&self.key, &bytes)?)
                }
                .await;
                (id, r)
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (id, r) in results {
            match r {
                Ok(s) => good.push((id, s)),
                // A snapshot forgotten between listing and reading is not damage.
                Err(RepoError::Store(e)) if e.is_not_found() => {}
                Err(e) => bad.push((id, e)),
            }
        }
        good.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((good, bad))
    }

    /// Finds a snapshot by id prefix, or `latest`.
    pub async fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        let (all, bad) = self.snapshots().await?;
        if spec == "latest" {
            let latest = all.into_iter().last();
            self.refuse_newer_damage(latest.as_ref().map(|(_, s)| s.time), &bad).await?;
            return latest.ok_or_else(|| RepoError::SnapshotNotFound(spec.into()));
        }
        let spec_l = spec.to_ascii_lowercase();
        let matches: Vec<_> = all.into_iter().filter(|(id, _)| id.to_hex().starts_with(&spec_l)).collect();
        match matches.len() {
            0 => Err(RepoError::SnapshotNotFound(spec.into())),
            1 => Ok(matches.into_iter().next().expect("one match")),
            _ if spec_l.len() < 4 => Err(RepoError::SnapshotNotFound(spec.into())),
            _ => Err(RepoError::AmbiguousId {
                prefix: spec.into(),
                candidates: matches.iter().map(|(id, _)| id.short()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// "latest" must not quietly mean an older snapshot than the newest: a
    /// snapshot that cannot be read has no readable time, so the store's
    /// modification time of its object decides. One that may be newer than
    /// `latest` (or any, when there is none) fails the choice; an older one
    /// is only warned about.
    pub async fn refuse_newer_damage(
        &self,
        latest: Option<chrono::DateTime<chrono::Utc>>,
        bad: &[(Id, RepoError)],
    ) -> Result<()> {
        // Hosts' clocks and the store's differ: within ten minutes is "may be newer".
        const SKEW: i64 = 600;
        for (id, e) in bad {
            let written = self.store.stat(&paths::snapshot(id)).await.ok().and_then(|m| m.modified);
            match (latest, written) {
                (Some(l), Some(w)) if w < l.timestamp() - SKEW => {
                    tracing::warn!(snapshot = %id.short(), error = %e, "an older snapshot is unreadable");
                }
                _ => return Err(RepoError::DamagedSnapshot { id: id.short(), reason: e.to_string() }),
            }
        }
        Ok(())
    }

    /// Packs listed by deletion markers (format.md §13).
    pub async fn pending_deletion(&self) -> Result<HashSet<Id>> {
        let mut out = HashSet::new();
        for (_, m) in self.deletion_markers().await? {
            out.extend(m.packs);
        }
        Ok(out)
    }

    /// Every deletion marker, its `created` on the store's clock where the
    /// store reports modification times (format.md §13).
    pub async fn deletion_markers(&self) -> Result<Vec<(Id, DeletionMarker)>> {
        let mut out = Vec::new();
        for meta in self.store.list(paths::DELETIONS).await? {
            let Some(id) = paths::id_of(&meta.key) else { continue };
            match self.store.get(&paths::deletion(&id)).await {
                Ok(b) => match DeletionMarker::open(&self.key, &b) {
                    Ok(mut m) => {
                        if let Some(stored) = stored_time(&meta) {
                            m.created = stored;
                        }
                        out.push((id, m))
                    }
                    // Anyone who can write the store could plant one: an
                    // unreadable marker protects nothing and deletes
                    // nothing, so it never blocks backups or prune. `kura
                    // verify` reports it.
                    Err(e) => {
                        tracing::warn!(marker = %id.short(), error = %e, "ignoring an unreadable deletion marker")
                    }
                },
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(out)
    }

    /// Reads every index file. Returns the ids read, so that prune knows
    /// exactly which files its rewrite replaces.
    pub async fn read_index_files(&self) -> Result<Vec<(Id, IndexFile)>> {
        self.index_files().await?.try_collect().await
    }

    /// Every index file, fetched and decoded a few at a time, as they come.
    async fn index_files(&self) -> Result<impl futures::Stream<Item = Result<(Id, IndexFile)>> + '_> {
        let ids = self.list_ids(paths::INDEX).await?;
        Ok(stream::iter(ids)
            .map(move |id| async move {
                let bytes = match self.store.get(&paths::index(&id)).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => return Ok(None),
                    Err(e) => return Err(RepoError::from(e)),
                };
                let content = self.key.open_object(&bytes, "index")?;
                Ok(Some((id, IndexFile::decode(&content)?)))
            })
            .buffer_unordered(FETCH_CONCURRENCY)
            .try_filter_map(|x| async move { Ok(x) }))
    }

    /// The whole index, without the packs in `exclude`. Each index file is
    /// folded in as it arrives and dropped, so the decoded files never sit
    /// in memory beside the index (at 10 million blobs they would double
    /// it).
    pub async fn load_index(&self, exclude: &HashSet<Id>) -> Result<Index> {
        let mut index = Index::new();
        let files = self.index_files().await?;
        futures::pin_mut!(files);
        while let Some((_, file)) = files.try_next().await? {
            index.add_file(&file, exclude);
        }
        index.finish();
        Ok(index)
    }

    /// The index without the packs pending deletion and without entries whose
    /// pack is not in the store (lost, or named by an old index copied back).
    /// A writer deduplicating against those would write snapshots that cannot
    /// be restored, so their blobs are stored again instead; a reader finds
    /// a blob's other copy rather than the lost one. A pack that appears after
    /// the listing is left out too, which costs a writer only a duplicate
    /// (format.md §12.4).
    ///
    /// The packs are listed while the index loads: what must come first is
    /// the listing of deletion markers that gave `pending` (§12.4).
    pub async fn load_index_present(&self, pending: &HashSet<Id>) -> Result<Index> {
        let (listed, mut index) = futures::try_join!(self.list_packs(), self.load_index(pending))?;
        let missing: HashSet<Id> = index
            .packs()
            .iter()
            .filter(|p| !listed.contains_key(*p) && !pending.contains(*p))
            .copied()
            .collect();
        if !missing.is_empty() {
            tracing::warn!(
                packs = missing.len(),
                "the index names packs that are not in the repository; their blobs will be stored again \
                 (`kura verify` shows which snapshots lost data, `kura repair index` drops the entries)"
            );
            let mut exclude = pending.clone();
            exclude.extend(missing);
            index = self.load_index(&exclude).await?;
        }
        Ok(index)
    }

    /// Writes an index file (format.md §12.1: only after its packs).
    pub async fn write_index(&self, file: &IndexFile) -> Result<Id> {
        let bytes = self.key.seal_object(&file.encode(), 3);
        let id = Id::of_object(&bytes);
        self.put_object(&paths::index(&id), bytes).await?;
        Ok(id)
    }

    /// Stores a content-addressed object. It may already exist (a retried
    /// upload whose first reply was lost): same name, same content.
    pub(crate) async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        match self.store.put_new(key, Bytes::from(bytes)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// [`Repository::put_object`] of a file's content (a spooled pack).
    pub(crate) async fn put_object_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        match self.store.put_new_file(key, path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind == ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let (id, bytes) = snap.seal(&self.key);
        self.put_object(&paths::snapshot(&id), bytes).await?;
        Ok(id)
    }

    /// Reads one blob, authenticated and checked against its id.
    pub async fn read_blob(&self, index: &Index, id: &Id) -> Result<Vec<u8>> {
        let loc = index.get(id).ok_or_else(|| RepoError::MissingBlob { blob: id.to_hex() })?;
        self.read_blob_at(id, &loc).await
    }

    pub async fn read_blob_at(&self, id: &Id, loc: &Location) -> Result<Vec<u8>> {
        let start = loc.offset as u64;
        let sealed = self.store.get_range(&paths::pack(&loc.pack), start..start + loc.length as u64).await?;
        let key = self.key.clone();
        let (id, ty, raw) = (*id, loc.ty, loc.raw_length);
        Ok(tokio::task::spawn_blocking(move || key.open_blob(&sealed, ty, &id, raw))
            .await
            .map_err(RepoError::worker)??)
    }

    pub async fn load_tree(&self, index: &Index, id: &Id) -> Result<Tree> {
        self.load_tree_from_cache(index, id, false).await
    }

    /// [`Repository::load_tree`] for a walk's last look at a tree: its copy
    /// read ahead is dropped, so a walk's cache shrinks as it goes (a tree
    /// met again is read again).
    pub async fn load_tree_last(&self, index: &Index, id: &Id) -> Result<Tree> {
        self.load_tree_from_cache(index, id, true).await
    }

    async fn load_tree_from_cache(&self, index: &Index, id: &Id, last: bool) -> Result<Tree> {
        let cached = {
            let mut cache = self.trees.lock().expect("tree cache");
            if last {
                let taken = cache.blobs.remove(id);
                cache.bytes -= taken.as_ref().map_or(0, |b| b.len());
                taken
            } else {
                cache.blobs.get(id).cloned()
            }
        };
        let bytes = match (cached, index.get(id)) {
            (Some(sealed), Some(loc)) => self.key.open_blob(&sealed, loc.ty, id, loc.raw_length)?,
            _ => self.read_blob(index, id).await?,
        };
        Ok(Tree::decode(&bytes)?)
    }

    /// Reads every tree below `roots` ahead, level by level, each level's
    /// blobs grouped by pack into spans read side by side, and keeps them
    /// sealed until [`Repository::clear_tree_cache`]. A walk loads one tree
    /// per directory, one after the other: across a network that was a
    /// round trip per directory (a restore of 400 MB waited 20 s on them at
    /// 40 ms). On a disk each tree read was five system calls (open, stat,
    /// seek, read, close): 23,000 of them for the 11,400 directories of
    /// 60,000 small files, read twice (shape, then walk). Best effort: a
    /// tree that cannot be read here is read, and its error reported, by
    /// the walk's own load.
    ///
    /// Across a network a level costs a round trip, and trees nest as deep
    /// as the directories do (eleven levels for a tree under /tmp: half a
    /// second at 40 ms). So there, a pack's trees all come in the request
    /// that reads the first of them (up to [`TREE_SWEEP_MAX`] a pack): a
    /// pack of trees is mostly one backup's, and the levels below are found
    /// already read. Blobs taken that way are opened only when needed.
    pub async fn prefetch_trees(&self, index: &Index, roots: &[Id]) {
        let at_once = self.store.read_concurrency();
        let mut mates = if self.store.remote() { index.trees_by_pack() } else { HashMap::new() };
        let mut seen: HashSet<Id> = roots.iter().copied().collect();
        let mut level: Vec<Id> = roots.to_vec();
        for _ in 0..=kura_format::tree::MAX_DEPTH {
            if level.is_empty() || self.trees.lock().expect("tree cache").bytes >= TREE_CACHE_MAX {
                break;
            }
            let mut wanted: Vec<(Id, Location)> = Vec::new();
            {
                let cache = self.trees.lock().expect("tree cache");
                let mut asked: HashSet<Id> = HashSet::new();
                for id in &level {
                    if !cache.blobs.contains_key(id) && asked.insert(*id) {
                        wanted.extend(index.get(id).map(|l| (*id, l)));
                    }
                }
                let packs: HashSet<Id> = wanted.iter().map(|(_, l)| l.pack).collect();
                // A level may touch many packs (verify starts from every
                // snapshot's root, often one tree pack each): what a level
                // takes beyond its own trees stays within the cache's room.
                let mut room = TREE_SWEEP_LEVEL_MAX.min(TREE_CACHE_MAX.saturating_sub(cache.bytes));
                for pack in packs {
                    if room == 0 {
                        break;
                    }
                    let Some(positions) = mates.remove(&pack) else { continue };
                    let mut blobs: Vec<(Id, Location)> = positions.into_iter().map(|p| index.at(p)).collect();
                    blobs.sort_by_key(|(_, l)| l.offset);
                    let mut budget = TREE_SWEEP_MAX.min(room);
                    for (id, loc) in blobs {
                        let Some(left) = budget.checked_sub(loc.length as usize) else { break };
                        budget = left;
                        room -= loc.length as usize;
                        if !cache.blobs.contains_key(&id) && asked.insert(id) {
                            wanted.push((id, loc));
                        }
                    }
                }
            }
            let window = crate::dump::plan_window(wanted);
            let store = self.store.clone();
            let spans: Vec<(usize, Result<Bytes>)> =
                stream::iter(window.spans.clone().into_iter().enumerate())
                    .map(|(i, (pack, s, e))| {
                        let store = store.clone();
                        async move {
                            (i, store.get_range(&paths::pack(&pack), s..e).await.map_err(RepoError::from))
                        }
                    })
                    .buffer_unordered(at_once)
                    .collect()
                    .await;
            let spans: HashMap<usize, Bytes> =
                spans.into_iter().filter_map(|(i, r)| Some((i, r.ok()?))).collect();
            {
                let mut cache = self.trees.lock().expect("tree cache");
                for (id, loc, span) in &window.blobs {
                    let Some(bytes) = spans.get(span) else { continue };
                    let s = (loc.offset as u64 - window.spans[*span].1) as usize;
                    let Some(sealed) = bytes.get(s..s + loc.length as usize) else { continue };
                    cache.bytes += sealed.len();
                    // A copy, so the span's gaps are not kept alive with it.
                    cache.blobs.insert(*id, Bytes::copy_from_slice(sealed));
                }
            }
            let mut next = Vec::new();
            for id in &level {
                let Some(loc) = index.get(id) else { continue };
                let Some(sealed) = self.trees.lock().expect("tree cache").blobs.get(id).cloned() else {
                    continue;
                };
                let tree = self
                    .key
                    .open_blob(&sealed, loc.ty, id, loc.raw_length)
                    .ok()
                    .and_then(|p| Tree::decode(&p).ok());
                let Some(tree) = tree else {
                    // Read again, and its error reported, by the walk.
                    let mut cache = self.trees.lock().expect("tree cache");
                    if let Some(b) = cache.blobs.remove(id) {
                        cache.bytes -= b.len();
                    }
                    continue;
                };
                for node in &tree.nodes {
                    if let Some(sub) = node.subtree.filter(|_| node.kind == kura_format::tree::NodeType::Dir)
                    {
                        if seen.insert(sub) {
                            next.push(sub);
                        }
                    }
                }
            }
            level = next;
        }
    }

    /// Drops the trees [`Repository::prefetch_trees`] kept.
    pub fn clear_tree_cache(&self) {
        *self.trees.lock().expect("tree cache") = TreeCache::default();
    }

    // ---- keys ----

    pub async fn add_key(
        &self,
        password: &[u8],
        kdf: KdfParams,
        hostname: &str,
        username: &str,
    ) -> Result<Id> {
        let kf = KeyFile::wrap(&self.key, password, kdf, hostname, username, self.now())?;
        let (id, bytes) = kf.to_object();
        self.put_object(&paths::key(&id), bytes).await?;
        Ok(id)
    }

    pub async fn list_keys(&self) -> Result<Vec<(Id, KeyFile)>> {
        let mut out = Vec::new();
        for id in self.list_ids(paths::KEYS).await? {
            let bytes = self.store.get(&paths::key(&id)).await?;
            out.push((id, KeyFile::decode(&bytes)?));
        }
        out.sort_by_key(|(_, k)| k.created);
        Ok(out)
    }

    /// Removes a key (format.md §5: never the last one, nor the one in use).
    pub async fn remove_key(&self, prefix: &str) -> Result<Id> {
        let keys = self.list_keys().await?;
        let matches: Vec<Id> = keys
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| id.to_hex().starts_with(&prefix.to_ascii_lowercase()))
            .collect();
        let id = match matches.as_slice() {
            [one] => *one,
            [] => return Err(RepoError::KeyRefused { prefix: prefix.into(), why: KeyRefusal::NoMatch }),
            _ => return Err(RepoError::KeyRefused { prefix: prefix.into(), why: KeyRefusal::Ambiguous }),
        };
        if id == self.key_id {
            return Err(RepoError::KeyRefused { prefix: prefix.into(), why: KeyRefusal::InUse });
        }
        if keys.len() < 2 {
            return Err(RepoError::KeyRefused { prefix: prefix.into(), why: KeyRefusal::Last });
        }
        self.store.delete(&paths::key(&id)).await?;
        Ok(id)
    }
}

/// When the store last wrote an object, by the store's own clock, if it
/// says (format.md §13).
pub(crate) fn stored_time(meta: &kura_store::ObjectMeta) -> Option<chrono::DateTime<chrono::Utc>> {
    meta.modified.and_then(|t| chrono::DateTime::from_timestamp(t, 0))
}

/// Every object under `prefix` named by an id, listed and then read side by
/// side, each opened by `open` as it arrives (so that sealed bytes never
/// pile up beside what they decode to), in the listing's order. An object
/// that cannot be read or opened comes back with its error: one damaged
/// object is reported, not fatal.
pub(crate) async fn fetch_all<T>(
    store: &dyn Store,
    prefix: &str,
    open: impl Fn(&Id, Bytes) -> Result<T>,
) -> Result<Vec<(String, Id, Result<T>)>> {
    let listed = store.list(prefix).await?;
    let open = &open;
    Ok(stream::iter(listed.into_iter().filter_map(|m| Some((paths::id_of(&m.key)?, m.key))))
        .map(|(id, key)| async move {
            let got = store.get(&key).await.map_err(RepoError::from);
            let opened = got.and_then(|b| open(&id, b));
            (key, id, opened)
        })
        .buffered(FETCH_CONCURRENCY)
        .collect()
        .await)
}
