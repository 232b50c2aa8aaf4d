//! An object-storage prefix as a source (an uploads bucket, an R2
//! `exports/daily/` prefix), backed up object by object with its metadata,
//! and restored additively: objects already there are left alone unless
//! forced, and a forced overwrite keeps the old object under a sibling
//! prefix. Layout: docs/format.md §11.2.
//!
//! Reading is pipelined: small objects are fetched a few at a time ahead of
//! the chunker, since an object store's latency, not its bandwidth, bounds a
//! bucket of many small files. An object whose size and mtime match the
//! previous snapshot of the target is not downloaded again.
use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use kura_format::tree::NodeType;
use kura_format::Id;
use kura_repo::backup::{backup_stream_sequence, BackupOptions, BackupResult, Stream};
use kura_repo::{Counters, Repository};
use kura_store::{ObjectMeta, Store};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::SourceError;

pub const MANIFEST: &str = "objects.json";
mod restore;
pub use restore::{date_in_key, kept_location, restore, select, ObjectsRestored, RestoreOptions};

const OBJECTS: &str = "objects";
/// Objects up to this size are fetched whole and ahead of time.
const PREFETCH_MAX: u64 = 4 << 20;
/// How many small objects are in flight ahead of the one being chunked.
const PREFETCH_DEPTH: usize = 16;
/// Larger objects are read in ranges of this size.
const RANGE: u64 = 8 << 20;

pub use kura_format::objects::{Entry, Manifest};

fn escape_part(p: &str) -> String {
    match p {
        "" => "%".into(),
        "." => "%2E".into(),
        ".." => "%2E%2E".into(),
        _ => p.replace('%', "%25"),
    }
}

/// Snapshot paths for sorted, distinct keys (format.md §11.2).
pub fn snapshot_paths(keys: &[String]) -> Vec<String> {
    // A key followed (in sorted order) by keys under it as a directory is a
    // file and a directory at once; only its immediate successors can tell,
    // but "a/" sorts after "a.txt", so look the prefix up instead.
    let dirs: HashSet<&str> =
        keys.iter().flat_map(|k| k.match_indices('/').map(move |(i, _)| &k[..i])).collect();
    keys.iter()
        .map(|k| {
            let mut path = String::from(OBJECTS);
            for part in k.split('/') {
                path.push('/');
                path.push_str(&escape_part(part));
            }
            if dirs.contains(k.as_str()) {
                path.push('%');
            }
            path
        })
        .collect()
}

/// An object's bytes, read lazily: the fetch happens on the first `read`,
/// so an object reused from the parent snapshot costs no request.
struct ObjectReader {
    store: Arc<dyn Store>,
    handle: Handle,
    meta: ObjectMeta,
    prefetched: Option<JoinHandle<kura_store::Result<Bytes>>>,
    buf: Bytes,
    pos: u64,
}

impl ObjectReader {
    fn changed(&self, what: String) -> std::io::Error {
        std::io::Error::other(format!(
            "object {} changed while it was read ({what}); run the backup again",
            self.meta.key
        ))
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let whole = self.prefetched.is_some();
        let got = if let Some(task) = self.prefetched.take() {
            self.handle.block_on(task).map_err(std::io::Error::other)?
        } else {
            let end = (self.pos + RANGE).min(self.meta.size);
            let (store, key, start) = (self.store.clone(), self.meta.key.clone(), self.pos);
            self.handle.block_on(async move { store.get_range(&key, start..end).await })
        };
        let got = got.map_err(|e| std::io::Error::other(e.to_string()))?;
        if whole && got.len() as u64 != self.meta.size {
            return Err(self.changed(format!("{} bytes when looked at, {} read", self.meta.size, got.len())));
        }
        self.pos += got.len() as u64;
        self.buf = got;
        Ok(())
    }
}

impl Read for ObjectReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.buf.is_empty() {
            if self.pos >= self.meta.size {
                return Ok(0);
            }
            self.fill()?;
            if self.buf.is_empty() {
                return Err(self.changed(format!("{} bytes listed, {} read", self.meta.size, self.pos)));
            }
            if self.pos >= self.meta.size && self.meta.size > RANGE {
                // Ranged reads could have mixed two versions of a large object.
                let (store, key) = (self.store.clone(), self.meta.key.clone());
                let now = self
                    .handle
                    .block_on(async move { store.stat(&key).await })
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                if now.size != self.meta.size || now.modified != self.meta.modified {
                    return Err(self.changed("its size or modification time moved".into()));
                }
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf[..n]);
        self.buf = self.buf.slice(n..);
        Ok(n)
    }
}

/// What the previous snapshot of the target holds for a key.
struct Known {
    size: u64,
    modified: i64,
    /// Its manifest entry: media type, headers and metadata carry over.
    entry: Entry,
    content: Vec<Id>,
}

/// A store's headers as a manifest entry records them.
fn entry_headers(e: &mut Entry, h: &kura_store::Headers) {
    e.content_encoding = h.content_encoding.clone();
    e.content_disposition = h.content_disposition.clone();
    e.cache_control = h.cache_control.clone();
    e.metadata = h.metadata.clone();
}

/// A manifest entry's headers, to write back with its object.
fn headers_of(e: &Entry) -> kura_store::Headers {
    kura_store::Headers {
        content_encoding: e.content_encoding.clone(),
        content_disposition: e.content_disposition.clone(),
        cache_control: e.cache_control.clone(),
        metadata: e.metadata.clone(),
    }
}

/// The streams of an object-store snapshot: every object, then the manifest.
struct Objects {
    store: Arc<dyn Store>,
    handle: Handle,
    todo: VecDeque<(ObjectMeta, String)>,
    /// Fetches started ahead, in `todo` order, for the first objects of it.
    ahead: VecDeque<Ahead>,
    known: HashMap<String, Known>,
    manifest: Arc<Mutex<Manifest>>,
    done: bool,
}

/// A changed object's stat, and for a small one its read, started early;
/// `None` for an object reused from the previous snapshot.
type Ahead =
    Option<JoinHandle<(kura_store::Result<ObjectMeta>, Option<JoinHandle<kura_store::Result<Bytes>>>)>>;

impl Objects {
    fn reusable(&self, m: &ObjectMeta) -> Option<&Known> {
        let k = self.known.get(&m.key)?;
        (Some(k.modified) == m.modified && k.size == m.size).then_some(k)
    }

    /// Keeps up to PREFETCH_DEPTH small, changed objects in flight.
    fn top_up(&mut self) {
        while self.ahead.len() < PREFETCH_DEPTH && self.ahead.len() < self.todo.len() {
            let (m, _) = &self.todo[self.ahead.len()];
            if self.reusable(m).is_some() {
                self.ahead.push_back(None);
                continue;
            }
            let (store, key, small) = (self.store.clone(), m.key.clone(), m.size <= PREFETCH_MAX);
            self.ahead.push_back(Some(self.handle.spawn(async move {
                let stat = store.stat(&key).await;
                let data = small.then(|| tokio::spawn(async move { store.get(&key).await }));
                (stat, data)
            })));
        }
    }
}

impl Iterator for Objects {
    type Item = Result<Stream, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        self.top_up();
        let Some((listed, path)) = self.todo.pop_front() else {
            self.done = true;
            let manifest = self.manifest.lock().expect("manifest lock");
            let json = serde_json::to_vec_pretty(&*manifest).expect("a manifest serializes");
            return Some(Ok(Stream::new(MANIFEST, Box::new(std::io::Cursor::new(json)))));
        };
        let ahead = self.ahead.pop_front().expect("topped up");
        let mut stream;
        let entry;
        if let (None, Some(k)) = (&ahead, self.reusable(&listed)) {
            entry = Entry {
                key: listed.key.clone(),
                path: path.clone(),
                size: listed.size,
                modified: listed.modified,
                ..k.entry.clone()
            };
            let reader = ObjectReader {
                store: self.store.clone(),
                handle: self.handle.clone(),
                meta: listed.clone(),
                prefetched: None,
                buf: Bytes::new(),
                pos: 0,
            };
            stream = Stream::new(path.clone(), Box::new(reader));
            stream.known = Some((k.content.clone(), k.size));
        } else {
            let task = ahead.expect("a changed object is fetched ahead");
            let (stat, data) = match self.handle.block_on(task) {
                Ok(x) => x,
                Err(e) => return Some(Err(e.to_string())),
            };
            let meta = match stat {
                Ok(m) => ObjectMeta { key: listed.key.clone(), ..m },
                Err(e) => return Some(Err(format!("object {}: {e}", listed.key))),
            };
            // What stat saw is what gets read; the listing may be older.
            let mut e = Entry {
                key: listed.key.clone(),
                path: path.clone(),
                size: meta.size,
                modified: meta.modified.or(listed.modified),
                content_type: meta.content_type.clone(),
                ..Entry::default()
            };
            entry_headers(&mut e, &meta.headers);
            entry = e;
            let reader = ObjectReader {
                store: self.store.clone(),
                handle: self.handle.clone(),
                meta,
                prefetched: data,
                buf: Bytes::new(),
                pos: 0,
            };
            stream = Stream::new(path.clone(), Box::new(reader));
        }
        stream.mtime = entry.modified;
        self.manifest.lock().expect("manifest lock").objects.push(entry);
        Some(Ok(stream))
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        for a in self.ahead.iter().flatten() {
            a.abort();
        }
    }
}

/// Reads a snapshot's manifest and maps each of its paths to its node's
/// content list.
async fn load(
    repo: &Repository,
    index: &kura_repo::index::Index,
    tree: Id,
) -> Result<(Manifest, HashMap<String, Vec<Id>>), SourceError> {
    let node = kura_repo::browse::find_node(repo, index, &tree, MANIFEST)
        .await?
        .ok_or_else(|| SourceError::Refused("the snapshot has no object manifest".into()))?;
    let mut json = Vec::new();
    kura_repo::restore::write_content(repo, index, node.content.as_deref().unwrap_or_default(), &mut json)
        .await?;
    let manifest = Manifest::decode(&json).map_err(kura_repo::RepoError::from)?;
    let mut nodes = Vec::new();
    if let Some(objects) = kura_repo::browse::find_node(repo, index, &tree, OBJECTS).await.ok().flatten() {
        if let (NodeType::Dir, Some(sub)) = (objects.kind, objects.subtree) {
            kura_repo::browse::walk(repo, index, sub, OBJECTS.into(), &mut nodes).await?;
        }
    }
    let content = nodes
        .into_iter()
        .filter(|(_, n)| n.kind == NodeType::File)
        .map(|(p, n)| (p.to_string_lossy().into_owned(), n.content.unwrap_or_default()))
        .collect();
    Ok((manifest, content))
}

/// What the last snapshot of this target holds, keyed by object key.
async fn previous(repo: &Repository, opts: &BackupOptions) -> Result<HashMap<String, Known>, SourceError> {
    if opts.force {
        return Ok(HashMap::new());
    }
    let (all, _) = repo.snapshots().await?;
    let Some((_, snap)) = all.into_iter().rev().find(|(_, s)| {
        s.target.is_some() && s.target == opts.target && s.source.as_deref() == Some("object_store")
    }) else {
        return Ok(HashMap::new());
    };
    let index = repo.load_index_present(&Default::default()).await?;
    // A damaged previous snapshot only costs the reuse, never the backup.
    let (manifest, mut content) = match load(repo, &index, snap.tree).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(error = %e, "previous object snapshot unreadable; reading every object");
            return Ok(HashMap::new());
        }
    };
    Ok(manifest
        .objects
        .into_iter()
        .filter_map(|e| {
            let content = content.remove(&e.path)?;
            Some((e.key.clone(), Known { size: e.size, modified: e.modified?, entry: e, content }))
        })
        .collect())
}

/// Backs up every object under `store`'s root.
pub async fn backup(
    repo: &Arc<Repository>,
    store: Arc<dyn Store>,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult, SourceError> {
    let mut listed = store
        .list("")
        .await
        .map_err(|e| SourceError::Refused(format!("cannot list {}: {e}", store.location())))?;
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    // A key no store could write back without leaving its prefix is left
    // out, loudly (restore refuses such keys: format.md §11.2).
    listed.retain(|m| match kura_store::check_key(&m.key) {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(key = %m.key, "object key has empty, `.` or `..` segments; it is not backed up");
            false
        }
    });
    if listed.is_empty() {
        tracing::warn!(location = %store.location(), "no objects under the prefix; the snapshot holds only the manifest");
    }
    let keys: Vec<String> = listed.iter().map(|m| m.key.clone()).collect();
    let paths = snapshot_paths(&keys);
    let known = previous(repo, opts).await?;
    let manifest = Arc::new(Mutex::new(Manifest {
        version: 1,
        source: store.location(),
        objects: Vec::with_capacity(keys.len()),
    }));
    let objects = Objects {
        store,
        handle: Handle::current(),
        todo: listed.into_iter().zip(paths).collect(),
        ahead: VecDeque::new(),
        known,
        manifest,
        done: false,
    };
    let mut opts = opts.clone();
    opts.source = Some("object_store".into());
    Ok(backup_stream_sequence(repo, Box::new(objects), &opts, counters).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_date_is_found_where_the_key_holds_it() {
        use chrono::TimeZone;
        let day = |y, m, d| chrono::Local.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap().timestamp();
        assert_eq!(date_in_key("exports/daily/2025-11-03.json", "%Y-%m-%d"), Some(day(2025, 11, 3)));
        assert_eq!(date_in_key("backups/20251103/x.json", "%Y%m%d"), Some(day(2025, 11, 3)));
        assert_eq!(date_in_key("exports/daily/latest.json", "%Y-%m-%d"), None);
        assert_eq!(
            date_in_key("a/2025-11-02/b-2025-11-03.json", "%Y-%m-%d"),
            Some(day(2025, 11, 3)),
            "the last"
        );
        assert_eq!(date_in_key("x", "%Q"), None, "not a format");
    }

    #[test]
    fn every_key_gets_a_unique_valid_path() {
        let mut keys: Vec<String> =
            ["a", "a/b", "a.txt", "photos/", "photos/x.jpg", "x//y", "./z", "../w", "p%q", "%", "a/"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        keys.sort();
        let paths = snapshot_paths(&keys);
        let unique: HashSet<&String> = paths.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{paths:?}");
        for p in &paths {
            assert!(p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."), "{p}");
        }
        // No file path is also a directory of another path.
        for p in &paths {
            assert!(!paths.iter().any(|q| q.starts_with(&format!("{p}/"))), "{p} is a file and a dir");
        }
        let of = |k: &str| paths[keys.iter().position(|x| x == k).unwrap()].clone();
        assert_eq!(of("a"), "objects/a%");
        assert_eq!(of("a/b"), "objects/a/b");
        assert_eq!(of("photos/"), "objects/photos/%");
        assert_eq!(of("../w"), "objects/%2E%2E/w");
        assert_eq!(of("p%q"), "objects/p%25q");
    }

    #[test]
    fn kept_copies_go_beside_the_prefix() {
        use chrono::TimeZone;
        let t = chrono::Local.with_ymd_and_hms(2026, 11, 23, 9, 5, 0).unwrap();
        assert_eq!(kept_location("/srv/uploads/", t), "/srv/uploads.kura-bak-20261123_0905");
        assert_eq!(
            kept_location("s3://b/exports/daily?endpoint=http://x", t),
            "s3://b/exports/daily.kura-bak-20261123_0905?endpoint=http://x"
        );
        assert_eq!(kept_location("s3://b?region=auto", t), "s3://b/kura-bak-20261123_0905?region=auto");
    }

    #[test]
    fn selection_by_prefix_and_date() {
        let e = |k: &str, m: Option<i64>| Entry {
            key: k.into(),
            path: String::new(),
            size: 1,
            modified: m,
            ..Entry::default()
        };
        let m = Manifest {
            version: 1,
            source: "x".into(),
            objects: vec![
                e("2025-11-01/a", Some(100)),
                e("2025-11-02/b", Some(200)),
                e("other/c", Some(300)),
                e("d", None),
            ],
        };
        let keys = |o: &RestoreOptions| select(&m, o).into_iter().map(|e| e.key).collect::<Vec<_>>();
        assert_eq!(keys(&RestoreOptions::default()).len(), 4);
        assert_eq!(
            keys(&RestoreOptions { include: vec!["2025-".into()], ..Default::default() }),
            ["2025-11-01/a", "2025-11-02/b"]
        );
        assert_eq!(
            keys(&RestoreOptions { start: Some(150), end: Some(300), ..Default::default() }),
            ["2025-11-02/b", "other/c"]
        );
        assert_eq!(keys(&RestoreOptions { end: Some(100), ..Default::default() }), ["2025-11-01/a"]);
    }
}
