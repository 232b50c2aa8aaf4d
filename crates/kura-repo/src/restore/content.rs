//! File contents, restored pack by pack: every pack is read once, in spans
//! of nearby blobs, however many files its blobs belong to (36,000 small
//! files in 21 packs are 21-odd reads, not 36,000).
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use kura_format::paths;
use kura_format::tree::Node;
use kura_format::Id;

use super::beneath::{set_metadata, Beneath};
use super::{RestoreReport, PARTIAL_PREFIX};
use crate::index::{Index, Location};
use crate::saver::Counters;
use crate::{RepoError, Repository};

/// Files held open at once by one worker writing a span; beyond it they
/// are closed and reopened, so a span of thousands of tiny files stays far
/// below any open-file limit.
const OPEN_PER_SPAN: usize = 16;

/// Pages of zeros are left as holes rather than written, so sparse files
/// come back sparse (backup stores a hole as zeros, which deduplicate to
/// almost nothing).
const PAGE: u64 = 4096;

/// Writes `data` at `offset`, skipping every whole page of zeros and
/// coalescing the rest into as few writes as the holes allow (one for
/// ordinary data). The file's length is set when it is finished.
fn write_sparse(f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut run_start: Option<usize> = None;
    let mut pos = 0usize;
    while pos < data.len() {
        let at = offset + pos as u64;
        let end = data.len().min((((at / PAGE) + 1) * PAGE - offset) as usize);
        let piece = &data[pos..end];
        let hole = piece.len() as u64 == PAGE && piece.iter().all(|&b| b == 0);
        match (hole, run_start) {
            (true, Some(s)) => {
                f.write_all_at(&data[s..pos], offset + s as u64)?;
                run_start = None;
            }
            (false, None) => run_start = Some(pos),
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = run_start {
        f.write_all_at(&data[s..], offset + s as u64)?;
    }
    Ok(())
}

/// One file being restored. Its blobs arrive in pack order, from any worker,
/// and are written at their offsets into a temporary file that is renamed
/// to its real name once the last one is written and verified.
struct FileJob {
    rel: PathBuf,
    node: Node,
    /// The length its content list adds up to.
    len: u64,
    state: std::sync::Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    /// The partial file's name in its directory, and its device and inode,
    /// checked whenever it is opened again.
    tmp: Option<(String, (u64, u64))>,
    remaining: usize,
    error: Option<String>,
    /// The error is damage in the repository, not trouble writing here.
    damaged: bool,
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

/// Restores file contents pack by pack. Returns the files that failed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn restore_files(
    repo: &Arc<Repository>,
    index: &Arc<Index>,
    root: &Arc<Beneath>,
    files: Vec<(PathBuf, Node)>,
    owners: bool,
    concurrency: usize,
    counters: &Arc<Counters>,
    report: &mut RestoreReport,
) -> HashSet<PathBuf> {
    let mut jobs: Vec<FileJob> = Vec::with_capacity(files.len());
    // Packs in the order the snapshot first needs them, so files complete
    // early and few are half-written at any time.
    let mut pack_order: Vec<Id> = Vec::new();
    let mut by_pack: HashMap<Id, (Vec<Wanted>, HashMap<Id, usize>)> = HashMap::new();
    for (rel, node) in files {
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
                    if state.error.is_none() {
                        state.error = Some(RepoError::MissingBlob { blob: id.to_hex() }.to_string());
                        state.damaged = true;
                    }
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
        jobs.push(FileJob { rel, node, len: offset, state: std::sync::Mutex::new(state) });
    }
    let jobs = Arc::new(jobs);
    // Files without content (empty ones) are complete already.
    for (n, job) in jobs.iter().enumerate() {
        let empty = {
            let st = job.state.lock().expect("file state");
            st.error.is_none() && st.remaining == 0
        };
        if empty {
            finish_file(root, &jobs, n, None, owners, counters);
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
            let root = root.clone();
            let jobs = jobs.clone();
            let counters = counters.clone();
            async move {
                let read = repo.store().get_range(&paths::pack(&span.pack), span.start..span.end).await;
                match read {
                    Ok(bytes) => {
                        write_span_blocking(&repo, &root, span, bytes, &jobs, owners, &counters).await
                    }
                    // A damaged pack (truncated, say) may still hold intact
                    // blobs: read them one by one, so only the files whose
                    // own blobs are lost fail.
                    Err(_) if span.blobs.len() > 1 => {
                        for w in span.blobs {
                            let (s, e) = (w.loc.offset as u64, w.loc.offset as u64 + w.loc.length as u64);
                            let one = Span { pack: span.pack, start: s, end: e, blobs: vec![w] };
                            match repo.store().get_range(&paths::pack(&one.pack), s..e).await {
                                Ok(bytes) => {
                                    write_span_blocking(&repo, &root, one, bytes, &jobs, owners, &counters)
                                        .await
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
    let mut failed = HashSet::new();
    for job in jobs.iter() {
        let st = job.state.lock().expect("file state");
        if st.done {
            report.files += 1;
            report.bytes += job.node.size.unwrap_or(0);
            continue;
        }
        if let Some((tmp, _)) = &st.tmp {
            let _ = root.remove(parent(&job.rel), std::ffi::OsStr::new(tmp));
        }
        let why = st.error.clone().unwrap_or_else(|| "not every blob of it could be read".into());
        if st.damaged || st.error.is_none() {
            report.damaged += 1;
        }
        failed.insert(job.rel.clone());
        report.failed.push((job.rel.display().to_string(), why));
    }
    failed
}

async fn write_span_blocking(
    repo: &Repository,
    root: &Arc<Beneath>,
    span: Span,
    bytes: bytes::Bytes,
    jobs: &Arc<Vec<FileJob>>,
    owners: bool,
    counters: &Arc<Counters>,
) {
    let (key, root, jobs, counters) = (repo.key().clone(), root.clone(), jobs.clone(), counters.clone());
    // Owned, so blobs are decrypted where they lie (no copy for a local
    // store's reads, which hand over their buffer).
    let mut bytes = Vec::<u8>::from(bytes);
    let _ = tokio::task::spawn_blocking(move || {
        write_span(&key, &root, &span, &mut bytes, &jobs, owners, &counters)
    })
    .await;
}

fn fail_span(span: &Span, jobs: &[FileJob], msg: &str) {
    for w in &span.blobs {
        for &(n, _) in &w.to {
            fail_damaged(jobs, n, msg);
        }
    }
}

/// Opens, verifies and writes every blob of a span read from its pack.
fn write_span(
    key: &kura_format::crypto::MasterKey,
    root: &Beneath,
    span: &Span,
    bytes: &mut [u8],
    jobs: &[FileJob],
    owners: bool,
    counters: &Counters,
) {
    let mut plain = Vec::new();
    let mut open_files: HashMap<usize, std::fs::File> = HashMap::new();
    let mut completed = Vec::new();
    for w in &span.blobs {
        let s = (w.loc.offset as u64 - span.start) as usize;
        let sealed = &mut bytes[s..s + w.loc.length as usize];
        if let Err(e) = key.open_blob_in_place(sealed, w.loc.ty, &w.id, w.loc.raw_length, &mut plain) {
            let msg = RepoError::from(e).to_string();
            for &(n, _) in &w.to {
                fail_damaged(jobs, n, &msg);
            }
            continue;
        }
        for &(n, offset) in &w.to {
            let written = (|| -> std::result::Result<(), String> {
                if plain.iter().all(|&b| b == 0) {
                    // Nothing to write: each file gets its length at the end.
                    return Ok(());
                }
                if !open_files.contains_key(&n) && open_files.len() >= OPEN_PER_SPAN {
                    open_files.clear();
                }
                let f = match open_files.entry(n) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => match open_for_write(root, &jobs[n])? {
                        Some(f) => v.insert(f),
                        None => return Ok(()),
                    },
                };
                write_sparse(f, &plain, offset).map_err(|e| format!("write: {e}"))
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
    // A file completed here is finished through the handle it was written
    // with: no second open by name.
    for n in completed {
        let handle = open_files.remove(&n);
        finish_file(root, jobs, n, handle, owners, counters);
    }
}

/// The directory a restored entry lives in.
fn parent(rel: &Path) -> &Path {
    rel.parent().unwrap_or(Path::new(""))
}

/// The file's temporary copy, created on first use and opened again (and
/// checked to be the same file) after; `None` once the file failed.
fn open_for_write(root: &Beneath, job: &FileJob) -> std::result::Result<Option<std::fs::File>, String> {
    let mut st = job.state.lock().expect("file state");
    if st.error.is_some() {
        return Ok(None);
    }
    match &st.tmp {
        Some((name, identity)) => root
            .reopen(parent(&job.rel), name, *identity)
            .map(Some)
            .map_err(|e| format!("{}: {e}", job.rel.display())),
        None => create_temp(root, job, &mut st).map(Some),
    }
}

/// Creates the private temporary file the file is written under.
fn create_temp(
    root: &Beneath,
    job: &FileJob,
    st: &mut FileState,
) -> std::result::Result<std::fs::File, String> {
    let name = format!("{PARTIAL_PREFIX}{:016x}", rand::random::<u64>());
    let (f, identity) =
        root.create_new(parent(&job.rel), &name).map_err(|e| format!("{}: {e}", job.rel.display()))?;
    st.tmp = Some((name, identity));
    Ok(f)
}

fn fail_file(jobs: &[FileJob], n: usize, msg: &str) {
    let mut st = jobs[n].state.lock().expect("file state");
    st.error.get_or_insert_with(|| msg.to_string());
}

/// Fails a file because the repository's copy of it is damaged.
fn fail_damaged(jobs: &[FileJob], n: usize, msg: &str) {
    let mut st = jobs[n].state.lock().expect("file state");
    if st.error.is_none() {
        st.error = Some(msg.to_string());
        st.damaged = true;
    }
}

/// Gives a complete file its metadata and its real name.
fn finish_file(
    root: &Beneath,
    jobs: &[FileJob],
    n: usize,
    handle: Option<std::fs::File>,
    owners: bool,
    counters: &Counters,
) {
    let job = &jobs[n];
    let mut st = job.state.lock().expect("file state");
    let result = (|| -> std::result::Result<(), String> {
        let dir = parent(&job.rel);
        // An empty file had nothing written, so this creates it.
        let f = match (handle, &st.tmp) {
            (Some(f), Some(_)) => Ok(f),
            (_, Some((name, identity))) => root.reopen(dir, name, *identity),
            (_, None) => create_temp(root, job, &mut st).map_err(std::io::Error::other),
        }
        .map_err(|e| format!("{}: {e}", job.rel.display()))?;
        // No fsync per file: a journal commit per file made restores of many
        // small files twice as slow as restic's, which does not sync either.
        // A restore cut short by power loss is simply run again; what matters
        // is that a file appears under its name only complete and verified.
        f.set_len(job.len).map_err(|e| format!("{}: {e}", job.rel.display()))?;
        set_metadata(&f, &job.node, owners).map_err(|e| format!("{}: {e}", job.rel.display()))?;
        drop(f);
        let (tmp, _) = st.tmp.as_ref().expect("created above");
        let name = job.rel.file_name().unwrap_or_default();
        use std::os::unix::ffi::OsStrExt;
        root.publish(dir, tmp, name.as_bytes()).map_err(|e| format!("{}: {e}", job.rel.display()))
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
