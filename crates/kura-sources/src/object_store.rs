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

/// Where a forced restore keeps the objects it replaces: beside the prefix
/// (`s3://b/uploads` → `s3://b/uploads.kura-bak-YYYYMMDD_HHMM`), or under
/// a top-level `kura-bak-YYYYMMDD_HHMM/` prefix when the target is a whole
/// bucket (there is nothing beside a bucket to write to).
pub fn kept_location(url: &str, now: chrono::DateTime<chrono::Local>) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let base = base.trim_end_matches('/');
    let stamp = now.format("kura-bak-%Y%m%d_%H%M");
    match base.split_once("://") {
        Some((scheme, rest)) if scheme != "file" && !rest.contains('/') => format!("{base}/{stamp}{query}"),
        _ => format!("{base}.{stamp}{query}"),
    }
}

/// The media type of an object that has none recorded.
const OCTETS: &str = "application/octet-stream";

/// Writes an object and reads it back: a store that acknowledged a write it
/// did not keep is caught here, not at the next restore.
async fn put_checked(
    store: &dyn Store,
    key: &str,
    data: Bytes,
    content_type: &str,
    headers: &kura_store::Headers,
) -> Result<(), String> {
    store.put_with(key, data.clone(), content_type, headers).await.map_err(|e| e.to_string())?;
    let back = store.get(key).await.map_err(|e| format!("reading it back: {e}"))?;
    if back != data {
        return Err(format!(
            "it does not read back as written from {} ({} of {} bytes)",
            store.location(),
            back.len(),
            data.len()
        ));
    }
    Ok(())
}

/// Which objects of a snapshot to restore, and how.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Key prefixes; empty means every object.
    pub include: Vec<String>,
    /// Only objects last modified in this range (seconds since the epoch,
    /// both ends inclusive).
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// Replace objects that already exist.
    pub force: bool,
    /// Print nothing, change nothing: only say what would happen.
    pub dry_run: bool,
    /// A chrono format finding each object's date in its key; `start` and
    /// `end` compare that date (its first second) instead of the
    /// last-modified time.
    pub key_date: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct ObjectsRestored {
    pub written: Vec<String>,
    /// Already present and left alone.
    pub skipped: Vec<String>,
    /// Present and replaced (`force`); the old objects went to `kept`.
    pub replaced: Vec<String>,
    pub kept: Option<String>,
    pub bytes: u64,
    /// Headers the destination could not take back (a service whose
    /// storage layer cannot set them), with how many objects had them.
    pub warnings: Vec<String>,
}

/// The manifest entries `opts` selects.
pub fn select(manifest: &Manifest, opts: &RestoreOptions) -> Vec<Entry> {
    manifest
        .objects
        .iter()
        .filter(|e| opts.include.is_empty() || opts.include.iter().any(|p| e.key.starts_with(p.as_str())))
        .filter(|e| match (opts.start, opts.end, when(e, opts)) {
            (None, None, _) => true,
            (_, _, None) => false,
            (s, t, Some(m)) => s.is_none_or(|s| m >= s) && t.is_none_or(|t| m <= t),
        })
        .cloned()
        .collect()
}

/// The instant `--start`/`--end` compare for an entry: the date in its key
/// with `key_date`, else its last-modified time.
fn when(e: &Entry, opts: &RestoreOptions) -> Option<i64> {
    match &opts.key_date {
        Some(f) => date_in_key(&e.key, f),
        None => e.modified,
    }
}

/// The date `format` finds in `key` (the last place it matches), as the
/// local first second of that day, or of that time if the format has one.
pub fn date_in_key(key: &str, format: &str) -> Option<i64> {
    use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone};
    let items = chrono::format::StrftimeItems::new(format);
    if items.clone().any(|i| matches!(i, chrono::format::Item::Error)) {
        return None;
    }
    let sample = NaiveDate::from_ymd_opt(2025, 11, 3)?.and_hms_opt(4, 5, 6)?;
    let len = sample.format_with_items(items).to_string().len();
    let starts: Vec<usize> = (0..key.len().saturating_sub(len) + 1).rev().collect();
    for i in starts {
        let Some(part) = key.get(i..i + len) else { continue };
        let t = NaiveDateTime::parse_from_str(part, format)
            .ok()
            .or_else(|| NaiveDate::parse_from_str(part, format).ok().and_then(|d| d.and_hms_opt(0, 0, 0)));
        if let Some(t) = t {
            return Local.from_local_datetime(&t).earliest().map(|t| t.timestamp());
        }
    }
    None
}

/// Why nothing matched: what the range was compared with, and the dates
/// there are nearest to it.
fn nothing_matches(manifest: &Manifest, opts: &RestoreOptions) -> String {
    let compared = match &opts.key_date {
        Some(f) => format!("the date in each key (key_date = {f:?})"),
        None => {
            "each object's last-modified time (a target's key_date compares a date in the key instead)".into()
        }
    };
    let day = |t: i64| {
        chrono::DateTime::from_timestamp(t, 0)
            .map(|d| d.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default()
    };
    let mut times: Vec<i64> = manifest
        .objects
        .iter()
        .filter(|e| opts.include.is_empty() || opts.include.iter().any(|p| e.key.starts_with(p.as_str())))
        .filter_map(|e| when(e, opts))
        .collect();
    times.sort_unstable();
    let before = opts
        .start
        .and_then(|s| times.iter().rev().find(|t| **t < s))
        .map(|t| format!("before it {}", day(*t)));
    let after =
        opts.end.and_then(|e| times.iter().find(|t| **t > e)).map(|t| format!("after it {}", day(*t)));
    let nearest: Vec<String> = before.into_iter().chain(after).collect();
    let range = format!(
        "{} to {}",
        opts.start.map(day).unwrap_or_else(|| "any time".into()),
        opts.end.map(day).unwrap_or_else(|| "any time".into())
    );
    format!(
        "no object of the snapshot matches{}: the range {range} was compared with {compared}; {}",
        if opts.include.is_empty() { String::new() } else { format!(" under {}", opts.include.join(", ")) },
        if nearest.is_empty() {
            "no object has a date there".to_string()
        } else {
            format!("the nearest dates there are: {}", nearest.join(", "))
        }
    )
}

/// Restores the selected objects of snapshot `tree` into `dest`. Every blob
/// is authenticated before the first object is written; each written
/// object is read back and compared. With `force`, an object that is
/// replaced is first copied to `keep` (when given).
pub async fn restore(
    repo: &Repository,
    tree: Id,
    dest: Arc<dyn Store>,
    keep: Option<Arc<dyn Store>>,
    opts: &RestoreOptions,
) -> Result<ObjectsRestored, SourceError> {
    let index = repo.load_index_present(&Default::default()).await?;
    let (manifest, content) = load(repo, &index, tree).await?;
    let chosen = select(&manifest, opts);
    // Every key was checked when the manifest was read (it is refused whole
    // otherwise: format.md §11.2); the stores refuse such keys too.
    if chosen.is_empty() {
        return Err(SourceError::Refused(nothing_matches(&manifest, opts)));
    }
    let existing: HashMap<String, u64> = dest
        .list("")
        .await
        .map_err(|e| SourceError::Refused(format!("cannot list {}: {e}", dest.location())))?
        .into_iter()
        .map(|m| (m.key, m.size))
        .collect();
    let mut out = ObjectsRestored::default();
    let mut work = Vec::new();
    for e in chosen {
        let ids = content.get(&e.path).ok_or_else(|| {
            SourceError::Refused(format!("object {} is in the manifest but not in the snapshot", e.key))
        })?;
        match existing.get(&e.key) {
            Some(_) if !opts.force => out.skipped.push(e.key.clone()),
            Some(_) => {
                out.replaced.push(e.key.clone());
                work.push((e, ids));
            }
            None => work.push((e, ids)),
        }
    }
    if opts.dry_run {
        out.written = work.iter().map(|(e, _)| e.key.clone()).collect();
        out.bytes = work.iter().map(|(e, _)| e.size).sum();
        return Ok(out);
    }
    // Verify first, so that a damaged snapshot writes nothing at all.
    for (e, ids) in &work {
        let n = kura_repo::restore::write_content(repo, &index, ids, &mut std::io::sink()).await?;
        if n != e.size {
            return Err(SourceError::Refused(format!(
                "object {} holds {n} bytes in the snapshot, the manifest says {}",
                e.key, e.size
            )));
        }
    }
    if !out.replaced.is_empty() {
        out.kept = keep.as_ref().map(|k| k.location());
    }
    let mut unkept: std::collections::BTreeMap<&'static str, usize> = Default::default();
    for (e, ids) in &work {
        let mut data = Vec::with_capacity(e.size as usize);
        kura_repo::restore::write_content(repo, &index, ids, &mut data).await?;
        let data = Bytes::from(data);
        let ty = e.content_type.as_deref().unwrap_or(OCTETS);
        if existing.contains_key(&e.key) {
            if let Some(k) = &keep {
                let old = dest
                    .get(&e.key)
                    .await
                    .map_err(|err| SourceError::Refused(format!("reading {} to keep it: {err}", e.key)))?;
                let old_meta = dest.stat(&e.key).await.ok();
                let old_type = old_meta.as_ref().and_then(|m| m.content_type.clone());
                let old_headers = old_meta.map(|m| m.headers).unwrap_or_default();
                put_checked(k.as_ref(), &e.key, old, old_type.as_deref().unwrap_or(OCTETS), &old_headers)
                    .await
                    .map_err(|err| {
                        SourceError::Refused(format!(
                            "keeping the old {}: {err}; {} was not replaced",
                            e.key, e.key
                        ))
                    })?;
            }
        }
        let headers = headers_of(e);
        for h in dest.unkept_headers(&headers) {
            *unkept.entry(h).or_insert(0usize) += 1;
        }
        put_checked(dest.as_ref(), &e.key, data, ty, &headers)
            .await
            .map_err(|err| SourceError::Refused(format!("writing {}: {err}", e.key)))?;
        out.bytes += e.size;
        if !existing.contains_key(&e.key) {
            out.written.push(e.key.clone());
        }
    }
    out.warnings = unkept
        .into_iter()
        .map(|(h, n)| format!("{h} of {n} object(s) not restored: {} cannot take it back", dest.location()))
        .collect();
    Ok(out)
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
