//! Restore of a snapshot into a directory, and `dump` of one file.
//!
//! File contents are restored pack by pack rather than file by file: each
//! pack is read once, in spans of nearby blobs, and every blob is written at
//! its offset into each file that holds it.
//!
//! No wrong byte ever reaches a restored file's name: every blob is
//! authenticated and checked against its id before it is written, each file
//! is written under a temporary name in its directory and renamed into place
//! only when complete, and a file that cannot be restored is reported and
//! left out. Directories are created without following symlinks, so a crafted
//! snapshot (or a hostile existing tree) cannot redirect writes outside the
//! target.
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use kura_format::tree::{Node, NodeType};
use kura_format::{paths, Id};

use crate::browse::{find_node, snapshot_path, walk};
use crate::index::{Index, Location};
use crate::saver::Counters;
use crate::{RepoError, Repository, Result};

#[derive(Clone, Debug, Default)]
pub struct RestoreOptions {
    /// Paths inside the snapshot to restore; empty restores everything.
    pub include: Vec<String>,
    /// Write into a non-empty target, replacing files of the same name.
    pub overwrite: bool,
    /// Restore owners (needs root).
    pub owners: bool,
    /// Files restored at once; 0 picks a default.
    pub concurrency: usize,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub links: u64,
    pub bytes: u64,
    /// Entries that could not be restored, with the reason.
    pub failed: Vec<(String, String)>,
}

fn selected(path: &Path, includes: &[Vec<Vec<u8>>]) -> (bool, bool) {
    // (restore this entry, descend into it)
    if includes.is_empty() {
        return (true, true);
    }
    let comps: Vec<&[u8]> = path.iter().map(|c| c.as_bytes()).collect();
    let mut under = false;
    let mut above = false;
    for inc in includes {
        if comps.len() >= inc.len() && inc.iter().zip(&comps).all(|(a, b)| a.as_slice() == *b) {
            under = true;
        } else if comps.len() < inc.len() && comps.iter().zip(inc).all(|(a, b)| *a == b.as_slice()) {
            above = true;
        }
    }
    (under || above, under || above)
}

/// The name prefix of a file being restored, renamed to its real name only
/// once complete and verified.
const PARTIAL_PREFIX: &str = ".kura-restore-";

pub async fn restore(
    repo: &Arc<Repository>,
    tree: Id,
    target: &Path,
    opts: &RestoreOptions,
    counters: Arc<Counters>,
) -> Result<RestoreReport> {
    // Packs pending deletion still exist and are still valid to read.
    let index = Arc::new(repo.load_index(&Default::default()).await?);
    let includes: Vec<Vec<Vec<u8>>> = opts.include.iter().map(|p| snapshot_path(p)).collect();
    for (inc, raw) in includes.iter().zip(&opts.include) {
        if !inc.is_empty() {
            find_node(repo, &index, &tree, raw).await?;
        }
    }
    match std::fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() && !opts.overwrite {
                return Err(RepoError::TargetNotEmpty(target.to_path_buf()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(target).map_err(|e| RepoError::io(target, e))?
        }
        Err(e) => return Err(RepoError::io(target, e)),
    }

    let mut entries = Vec::new();
    walk(repo, &index, tree, PathBuf::new(), &mut entries).await?;
    let mut report = RestoreReport::default();
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut link_leaders: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut followers = Vec::new();
    for (rel, node) in entries {
        if !selected(&rel, &includes).0 {
            continue;
        }
        let dest = target.join(&rel);
        match node.kind {
            NodeType::Dir => {
                if let Err(e) = make_dir(&dest, opts.overwrite) {
                    report.failed.push((rel.display().to_string(), e.to_string()));
                    continue;
                }
                if opts.overwrite {
                    // Partial files of a restore killed midway.
                    crate::remove_leftovers(
                        &dest,
                        PARTIAL_PREFIX,
                        crate::Abandoned::OlderThan(std::time::Duration::ZERO),
                        &[],
                    );
                }
                report.dirs += 1;
                dirs.push((dest, node));
            }
            NodeType::File => {
                if node.links > 1 {
                    let key = (node.device, node.inode);
                    if let Some(leader) = link_leaders.get(&key) {
                        followers.push((rel, dest, leader.clone()));
                        continue;
                    }
                    link_leaders.insert(key, dest.clone());
                }
                files.push((rel, dest, node));
            }
            NodeType::Symlink => match restore_symlink(&dest, &node, opts) {
                Ok(()) => report.links += 1,
                Err(e) => report.failed.push((rel.display().to_string(), e.to_string())),
            },
            other => report
                .failed
                .push((rel.display().to_string(), format!("{other:?} special files are not restored"))),
        }
    }

    let concurrency = if opts.concurrency == 0 { 3 } else { opts.concurrency };
    let failed_paths =
        restore_files(repo, &index, files, opts.owners, concurrency, &counters, &mut report).await;
    for (rel, dest, leader) in followers {
        if failed_paths.contains(&leader) {
            report
                .failed
                .push((rel.display().to_string(), "its hard-link target could not be restored".into()));
            continue;
        }
        let r = (|| {
            if opts.overwrite && dest.symlink_metadata().is_ok() {
                std::fs::remove_file(&dest)?;
            }
            std::fs::hard_link(&leader, &dest)
        })();
        match r {
            Ok(()) => report.files += 1,
            Err(e) => report.failed.push((rel.display().to_string(), format!("hard link: {e}"))),
        }
    }
    // Directory metadata last, deepest first, so writing children does not
    // disturb mtimes and read-only directories are still writable meanwhile.
    for (dest, node) in dirs.iter().rev() {
        if let Err(e) = apply_metadata(dest, node, opts.owners, false) {
            report.failed.push((dest.display().to_string(), format!("metadata: {e}")));
        }
    }
    Ok(report)
}

/// Creates a directory, refusing to go through a symlink.
fn make_dir(dest: &Path, overwrite: bool) -> std::io::Result<()> {
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) if overwrite => {
            std::fs::remove_file(dest)?;
            std::fs::create_dir(dest)
        }
        Ok(_) => Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory")),
        Err(_) => std::fs::create_dir(dest),
    }
}

fn restore_symlink(dest: &Path, node: &Node, opts: &RestoreOptions) -> std::io::Result<()> {
    let target = node.target_bytes().map_err(std::io::Error::other)?.unwrap_or_default();
    if dest.symlink_metadata().is_ok() {
        if !opts.overwrite {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists"));
        }
        std::fs::remove_file(dest)?;
    }
    std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&target), dest)?;
    apply_metadata(dest, node, opts.owners, true)
}

fn apply_metadata(dest: &Path, node: &Node, owners: bool, symlink: bool) -> std::io::Result<()> {
    if owners {
        std::os::unix::fs::lchown(dest, Some(node.uid), Some(node.gid))?;
    }
    let mtime = filetime::FileTime::from_unix_time(node.mtime.0, node.mtime.1);
    if symlink {
        filetime::set_symlink_file_times(dest, mtime, mtime)?;
    } else {
        // chmod after chown: chown clears setuid bits.
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(node.mode))?;
        filetime::set_file_times(dest, mtime, mtime)?;
    }
    Ok(())
}

/// Consecutive blobs of one pack, read with one request.
struct Run {
    pack: Id,
    start: u64,
    end: u64,
    blobs: Vec<(Id, Location)>,
}

fn plan_reads(index: &Index, content: &[Id]) -> Result<Vec<Run>> {
    const MAX_RUN: u64 = 32 << 20;
    let mut runs: Vec<Run> = Vec::new();
    for id in content {
        let loc = index.get(id).ok_or_else(|| RepoError::MissingBlob { blob: id.to_hex() })?;
        let (s, e) = (loc.offset as u64, loc.offset as u64 + loc.length as u64);
        match runs.last_mut() {
            Some(r) if r.pack == loc.pack && r.end == s && e - r.start <= MAX_RUN => {
                r.end = e;
                r.blobs.push((*id, loc));
            }
            _ => runs.push(Run { pack: loc.pack, start: s, end: e, blobs: vec![(*id, loc)] }),
        }
    }
    Ok(runs)
}

/// One file being restored. Its blobs arrive in pack order, from any worker,
/// and are written at their offsets into a temporary file that is renamed
/// to its real name once the last one is written and verified.
struct FileJob {
    rel: PathBuf,
    dest: PathBuf,
    node: Node,
    state: std::sync::Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    tmp: Option<PathBuf>,
    remaining: usize,
    error: Option<String>,
    done: bool,
}

/// Where one blob goes: a file and an offset in it.
type Placement = (usize, u64);

/// A blob the restore needs, once, however many places it goes.
struct Wanted {
    id: Id,
    loc: Location,
    to: Vec<Placement>,
}

/// Blobs of one pack close enough together to read with one request.
struct Span {
    pack: Id,
    start: u64,
    end: u64,
    blobs: Vec<Wanted>,
}

/// Bytes read past a gap rather than issuing another request.
const SPAN_GAP: u64 = 256 << 10;
/// The most one request reads, which bounds memory per worker (a single
/// larger blob is read whole).
const SPAN_MAX: u64 = 4 << 20;

/// Restores file contents pack by pack: every pack is read once, in runs of
/// nearby blobs, however many files its blobs belong to (36,000 small files
/// in 21 packs are 21-odd reads, not 36,000). Returns the destinations that
/// failed.
async fn restore_files(
    repo: &Arc<Repository>,
    index: &Arc<Index>,
    files: Vec<(PathBuf, PathBuf, Node)>,
    owners: bool,
    concurrency: usize,
    counters: &Arc<Counters>,
    report: &mut RestoreReport,
) -> std::collections::HashSet<PathBuf> {
    let mut jobs: Vec<FileJob> = Vec::with_capacity(files.len());
    // Packs in the order the snapshot first needs them, so files complete
    // early and few are half-written at any time.
    let mut pack_order: Vec<Id> = Vec::new();
    let mut by_pack: HashMap<Id, (Vec<Wanted>, HashMap<Id, usize>)> = HashMap::new();
    for (rel, dest, node) in files {
        let n = jobs.len();
        let mut state = FileState::default();
        if let Some(err) = &node.error {
            state.error = Some(format!("was not readable at backup time: {err}"));
        }
        let content = node.content.clone().unwrap_or_default();
        let mut offset = 0u64;
        let mut placed = Vec::with_capacity(content.len());
        for id in &content {
            match index.get(id) {
                Some(loc) => {
                    placed.push((*id, loc, offset));
                    offset += loc.raw_length as u64;
                }
                None => {
                    state
                        .error
                        .get_or_insert_with(|| RepoError::MissingBlob { blob: id.to_hex() }.to_string());
                }
            }
        }
        if state.error.is_none() {
            state.remaining = placed.len();
            for (id, loc, off) in placed {
                let (wanted, seen) = by_pack.entry(loc.pack).or_insert_with(|| {
                    pack_order.push(loc.pack);
                    Default::default()
                });
                let i = *seen.entry(id).or_insert_with(|| {
                    wanted.push(Wanted { id, loc, to: Vec::new() });
                    wanted.len() - 1
                });
                wanted[i].to.push((n, off));
            }
        }
        jobs.push(FileJob { rel, dest, node, state: std::sync::Mutex::new(state) });
    }
    let jobs = Arc::new(jobs);
    // Files without content (empty ones) are complete already.
    for (n, job) in jobs.iter().enumerate() {
        let empty = {
            let st = job.state.lock().expect("file state");
            st.error.is_none() && st.remaining == 0
        };
        if empty {
            finish_file(&jobs, n, owners, counters);
        }
    }
    let mut spans: Vec<Span> = Vec::new();
    for pack in pack_order {
        let (mut wanted, _) = by_pack.remove(&pack).expect("listed once per pack");
        wanted.sort_by_key(|w| w.loc.offset);
        for w in wanted {
            let (s, e) = (w.loc.offset as u64, w.loc.offset as u64 + w.loc.length as u64);
            match spans.last_mut() {
                Some(sp)
                    if sp.pack == pack
                        && s >= sp.end
                        && s - sp.end <= SPAN_GAP
                        && e - sp.start <= SPAN_MAX =>
                {
                    sp.end = e;
                    sp.blobs.push(w);
                }
                _ => spans.push(Span { pack, start: s, end: e, blobs: vec![w] }),
            }
        }
    }
    stream::iter(spans)
        .map(|span| {
            let repo = repo.clone();
            let jobs = jobs.clone();
            let counters = counters.clone();
            async move {
                let read = repo.store().get_range(&paths::pack(&span.pack), span.start..span.end).await;
                match read {
                    Ok(bytes) => write_span_blocking(&repo, span, bytes, &jobs, owners, &counters).await,
                    // A damaged pack (truncated, say) may still hold intact
                    // blobs: read them one by one, so only the files whose
                    // own blobs are lost fail.
                    Err(_) if span.blobs.len() > 1 => {
                        for w in span.blobs {
                            let (s, e) = (w.loc.offset as u64, w.loc.offset as u64 + w.loc.length as u64);
                            let one = Span { pack: span.pack, start: s, end: e, blobs: vec![w] };
                            match repo.store().get_range(&paths::pack(&one.pack), s..e).await {
                                Ok(bytes) => {
                                    write_span_blocking(&repo, one, bytes, &jobs, owners, &counters).await
                                }
                                Err(e) => fail_span(&one, &jobs, &RepoError::from(e).to_string()),
                            }
                        }
                    }
                    Err(e) => fail_span(&span, &jobs, &RepoError::from(e).to_string()),
                }
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
    let mut failed = std::collections::HashSet::new();
    for job in jobs.iter() {
        let st = job.state.lock().expect("file state");
        if st.done {
            report.files += 1;
            report.bytes += job.node.size.unwrap_or(0);
            continue;
        }
        if let Some(tmp) = &st.tmp {
            let _ = std::fs::remove_file(tmp);
        }
        let why = st.error.clone().unwrap_or_else(|| "not every blob of it could be read".into());
        failed.insert(job.dest.clone());
        report.failed.push((job.rel.display().to_string(), why));
    }
    failed
}

async fn write_span_blocking(
    repo: &Repository,
    span: Span,
    bytes: bytes::Bytes,
    jobs: &Arc<Vec<FileJob>>,
    owners: bool,
    counters: &Arc<Counters>,
) {
    let (key, jobs, counters) = (repo.key().clone(), jobs.clone(), counters.clone());
    // Owned, so blobs are decrypted where they lie (no copy for a local
    // store's reads, which hand over their buffer).
    let mut bytes = Vec::<u8>::from(bytes);
    let _ =
        tokio::task::spawn_blocking(move || write_span(&key, &span, &mut bytes, &jobs, owners, &counters))
            .await;
}

fn fail_span(span: &Span, jobs: &[FileJob], msg: &str) {
    for w in &span.blobs {
        for &(n, _) in &w.to {
            fail_file(jobs, n, msg);
        }
    }
}

/// Opens, verifies and writes every blob of a span read from its pack.
fn write_span(
    key: &kura_format::crypto::MasterKey,
    span: &Span,
    bytes: &mut [u8],
    jobs: &[FileJob],
    owners: bool,
    counters: &Counters,
) {
    use std::os::unix::fs::FileExt;
    let mut plain = Vec::new();
    let mut open_files: HashMap<usize, std::fs::File> = HashMap::new();
    let mut completed = Vec::new();
    for w in &span.blobs {
        let s = (w.loc.offset as u64 - span.start) as usize;
        let sealed = &mut bytes[s..s + w.loc.length as usize];
        if let Err(e) = key.open_blob_in_place(sealed, w.loc.ty, &w.id, w.loc.raw_length, &mut plain) {
            let msg = RepoError::from(e).to_string();
            for &(n, _) in &w.to {
                fail_file(jobs, n, &msg);
            }
            continue;
        }
        for &(n, offset) in &w.to {
            let written = (|| -> std::result::Result<(), String> {
                let f = match open_files.entry(n) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => match open_for_write(&jobs[n])? {
                        Some(f) => v.insert(f),
                        None => return Ok(()),
                    },
                };
                f.write_all_at(&plain, offset).map_err(|e| format!("write: {e}"))
            })();
            match written {
                Err(msg) => fail_file(jobs, n, &msg),
                Ok(()) => {
                    counters.bytes_read.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    let mut st = jobs[n].state.lock().expect("file state");
                    if st.error.is_none() {
                        st.remaining -= 1;
                        if st.remaining == 0 {
                            completed.push(n);
                        }
                    }
                }
            }
        }
    }
    drop(open_files);
    for n in completed {
        finish_file(jobs, n, owners, counters);
    }
}

/// The file's temporary copy, created on first use; `None` once it failed.
fn open_for_write(job: &FileJob) -> std::result::Result<Option<std::fs::File>, String> {
    let mut st = job.state.lock().expect("file state");
    if st.error.is_some() {
        return Ok(None);
    }
    let tmp = temp_copy(job, &mut st)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&tmp)
        .map(Some)
        .map_err(|e| format!("{}: {e}", tmp.display()))
}

/// The temporary name the file is written under, created on first use.
fn temp_copy(job: &FileJob, st: &mut FileState) -> std::result::Result<PathBuf, String> {
    if let Some(t) = &st.tmp {
        return Ok(t.clone());
    }
    let dir = job.dest.parent().expect("restored paths have a parent");
    let t = dir.join(format!("{PARTIAL_PREFIX}{:016x}", rand::random::<u64>()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&t)
        .map_err(|e| format!("{}: {e}", t.display()))?;
    st.tmp = Some(t.clone());
    Ok(t)
}

fn fail_file(jobs: &[FileJob], n: usize, msg: &str) {
    let mut st = jobs[n].state.lock().expect("file state");
    st.error.get_or_insert_with(|| msg.to_string());
}

/// Gives a complete file its metadata and its real name.
fn finish_file(jobs: &[FileJob], n: usize, owners: bool, counters: &Counters) {
    let job = &jobs[n];
    let mut st = job.state.lock().expect("file state");
    let result = (|| -> std::result::Result<(), String> {
        // An empty file had nothing written, so this creates it.
        let tmp = temp_copy(job, &mut st)?;
        // No fsync per file: a journal commit per file made restores of many
        // small files twice as slow as restic's, which does not sync either.
        // A restore cut short by power loss is simply run again; what matters
        // is that a file appears under its name only complete and verified.
        apply_metadata(&tmp, &job.node, owners, false).map_err(|e| format!("{}: {e}", tmp.display()))?;
        if job.dest.symlink_metadata().map(|m| m.is_dir()).unwrap_or(false) {
            return Err("a directory is in the way".into());
        }
        std::fs::rename(&tmp, &job.dest).map_err(|e| format!("{}: {e}", job.dest.display()))
    })();
    match result {
        Ok(()) => {
            st.done = true;
            st.tmp = None;
            counters.files.fetch_add(1, Ordering::Relaxed);
        }
        Err(msg) => {
            st.error.get_or_insert(msg);
        }
    }
}

/// Writes one file of a snapshot to `out`, verifying every blob first.
pub async fn dump(repo: &Repository, tree: Id, path: &str, out: &mut (dyn Write + Send)) -> Result<u64> {
    dump_files(repo, tree, &[path.to_string()], out).await
}

/// Writes several files of a snapshot to `out`, one after the other, as one
/// stream (the parts of a split database dump), loading the index once.
pub async fn dump_files(
    repo: &Repository,
    tree: Id,
    paths: &[String],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let index = repo.load_index(&Default::default()).await?;
    let mut total = 0;
    for path in paths {
        total += dump_one(repo, &index, tree, path, out).await?;
    }
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(total)
}

async fn dump_one(
    repo: &Repository,
    index: &crate::index::Index,
    tree: Id,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let node = find_node(repo, index, &tree, path)
        .await?
        .ok_or_else(|| RepoError::Refused("dump needs a file path, not the snapshot root".into()))?;
    if node.kind != NodeType::File {
        return Err(RepoError::Refused(format!("{path} is a {:?}, not a file", node.kind)));
    }
    write_content(repo, index, node.content.as_deref().unwrap_or_default(), out).await
}

/// Writes the blobs of a content list to `out`, each authenticated before
/// its bytes are written, reading adjacent blobs of a pack in one request.
pub async fn write_content(
    repo: &Repository,
    index: &crate::index::Index,
    content: &[Id],
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let mut total = 0;
    for run in plan_reads(index, content)? {
        let bytes = repo.store().get_range(&paths::pack(&run.pack), run.start..run.end).await?;
        for (id, loc) in &run.blobs {
            let s = (loc.offset as u64 - run.start) as usize;
            let plain =
                repo.key().open_blob(&bytes[s..s + loc.length as usize], loc.ty, id, loc.raw_length)?;
            out.write_all(&plain).map_err(|e| RepoError::io("<output>", e))?;
            total += plain.len() as u64;
        }
    }
    out.flush().map_err(|e| RepoError::io("<output>", e))?;
    Ok(total)
}
