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

use super::beneath::{identity, set_metadata, Beneath, Meta};
use super::{RestoreReport, PARTIAL_PREFIX};
use crate::dump::{SPAN_GAP, SPAN_MAX};
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
/// ordinary data). Returns where the last byte written ends (0 for none):
/// the file's length is set when it is finished, if the writes fell short.
fn write_sparse(f: &std::fs::File, data: &[u8], offset: u64) -> std::io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut run_start: Option<usize> = None;
    let mut pos = 0usize;
    let mut end_written = 0;
    while pos < data.len() {
        let at = offset + pos as u64;
        let end = data.len().min((((at / PAGE) + 1) * PAGE - offset) as usize);
        let piece = &data[pos..end];
        let hole = piece.len() as u64 == PAGE && piece.iter().all(|&b| b == 0);
        match (hole, run_start) {
            (true, Some(s)) => {
                f.write_all_at(&data[s..pos], offset + s as u64)?;
                end_written = offset + pos as u64;
                run_start = None;
            }
            (false, None) => run_start = Some(pos),
            _ => {}
        }
        pos = end;
    }
    if let Some(s) = run_start {
        f.write_all_at(&data[s..], offset + s as u64)?;
        end_written = offset + data.len() as u64;
    }
    Ok(end_written)
}

/// One file being restored. Its blobs arrive in pack order, from any worker,
/// and are written at their offsets into a temporary file that is renamed
/// to its real name once the last one is written and verified; in a target
/// that was empty, straight under its real name (see [`Placing`]).
struct FileJob {
    rel: PathBuf,
    node: Node,
    /// The length its content list adds up to.
    len: u64,
    state: std::sync::Mutex<FileState>,
}

#[derive(Default)]
struct FileState {
    /// The file being written, once created.
    partial: Option<Partial>,
    /// Where the last byte written so far ends: when it falls short of the
    /// length (a hole at the end), the length is set at the finish.
    end: u64,
    remaining: usize,
    /// Its blobs lie in more than one span, which other workers may write
    /// while this one holds it open: its identity is taken at creation.
    spans: SpanCount,
    error: Option<String>,
    /// The error is damage in the repository, not trouble writing here.
    damaged: bool,
    done: bool,
}

struct Partial {
    /// Its name in its directory: a private temporary name, or its real one.
    name: std::ffi::OsString,
    under_real_name: bool,
    /// Its device and inode, taken when its handle is first closed
    /// unfinished and checked whenever it is opened again.
    identity: Option<(u64, u64)>,
}

/// How files are placed in the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placing {
    /// Each under a temporary name, renamed over its real name when
    /// complete: nothing under a real name is ever partial.
    Rename,
    /// Straight under its real name, created new (never over anything):
    /// for a target that was empty, which holds a marker until the restore
    /// ends (docs/reliability.md). A name found taken falls back to
    /// `Rename`.
    Direct,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum SpanCount {
    #[default]
    None,
    One(usize),
    Many,
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

/// Restores file contents pack by pack. Returns the files that failed.
#[allow(clippy::too_many_arguments)]
pub(super) async fn restore_files(
    repo: &Arc<Repository>,
    index: &Arc<Index>,
    root: &Arc<Beneath>,
    files: Vec<(PathBuf, Node)>,
    owners: bool,
    placing: Placing,
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
            finish_file(root, &jobs, n, None, owners, placing, counters);
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
    for (i, span) in spans.iter().enumerate() {
        for w in &span.blobs {
            for &(n, _) in &w.to {
                let mut st = jobs[n].state.lock().expect("file state");
                st.spans = match st.spans {
                    SpanCount::None => SpanCount::One(i),
                    SpanCount::One(j) if j == i => SpanCount::One(i),
                    _ => SpanCount::Many,
                };
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
                        write_span_blocking(&repo, &root, span, bytes, &jobs, owners, placing, &counters)
                            .await
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
                                    write_span_blocking(
                                        &repo, &root, one, bytes, &jobs, owners, placing, &counters,
                                    )
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
        // Under its real name too: a failed file is not left half-written.
        if let Some(p) = &st.partial {
            let _ = root.remove(parent(&job.rel), &p.name);
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

#[allow(clippy::too_many_arguments)]
async fn write_span_blocking(
    repo: &Repository,
    root: &Arc<Beneath>,
    span: Span,
    bytes: bytes::Bytes,
    jobs: &Arc<Vec<FileJob>>,
    owners: bool,
    placing: Placing,
    counters: &Arc<Counters>,
) {
    let (key, root, jobs, counters) = (repo.key().clone(), root.clone(), jobs.clone(), counters.clone());
    // Owned, so blobs are decrypted where they lie (no copy for a local
    // store's reads, which hand over their buffer).
    let mut bytes = Vec::<u8>::from(bytes);
    let _ = tokio::task::spawn_blocking(move || {
        write_span(&key, &root, &span, &mut bytes, &jobs, owners, placing, &counters)
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
#[allow(clippy::too_many_arguments)]
fn write_span(
    key: &kura_format::crypto::MasterKey,
    root: &Beneath,
    span: &Span,
    bytes: &mut [u8],
    jobs: &[FileJob],
    owners: bool,
    placing: Placing,
    counters: &Counters,
) {
    let mut plain = Vec::new();
    let mut open_files: HashMap<usize, std::fs::File> = HashMap::new();
    let mut completed = Vec::new();
    // A file whose last blob is written is finished through the handle it
    // was written with, before that handle could be closed to make room:
    // no second open by name, no identity check.
    let finish = |completed: &mut Vec<usize>, open_files: &mut HashMap<usize, std::fs::File>| {
        for n in completed.drain(..) {
            finish_file(root, jobs, n, open_files.remove(&n), owners, placing, counters);
        }
    };
    for w in &span.blobs {
        finish(&mut completed, &mut open_files);
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
            let written = (|| -> std::result::Result<u64, String> {
                if plain.iter().all(|&b| b == 0) {
                    // Nothing to write: each file gets its length at the end.
                    return Ok(0);
                }
                if !open_files.contains_key(&n) && open_files.len() >= OPEN_PER_SPAN {
                    finish(&mut completed, &mut open_files);
                    close_unfinished(&mut open_files, jobs);
                }
                let f = match open_files.entry(n) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        match open_for_write(root, &jobs[n], placing)? {
                            Some(f) => v.insert(f),
                            None => return Ok(0),
                        }
                    }
                };
                write_sparse(f, &plain, offset).map_err(|e| format!("write: {e}"))
            })();
            match written {
                Err(msg) => fail_file(jobs, n, &msg),
                Ok(end) => {
                    counters.bytes_read.fetch_add(plain.len() as u64, Ordering::Relaxed);
                    let mut st = jobs[n].state.lock().expect("file state");
                    st.end = st.end.max(end);
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
    finish(&mut completed, &mut open_files);
    close_unfinished(&mut open_files, jobs);
}

/// Closes the handles of files other spans will add to, noting each file's
/// identity first so that it is recognised when opened again.
fn close_unfinished(open_files: &mut HashMap<usize, std::fs::File>, jobs: &[FileJob]) {
    for (n, f) in open_files.drain() {
        let mut st = jobs[n].state.lock().expect("file state");
        let Some(p) = st.partial.as_mut() else { continue };
        if p.identity.is_none() {
            match identity(&f) {
                Ok(id) => p.identity = Some(id),
                Err(e) => {
                    st.error.get_or_insert_with(|| format!("{}: {e}", jobs[n].rel.display()));
                }
            }
        }
    }
}

/// The directory a restored entry lives in.
fn parent(rel: &Path) -> &Path {
    rel.parent().unwrap_or(Path::new(""))
}

/// The file being written, created on first use and opened again (and
/// checked to be the same file) after; `None` once the file failed.
fn open_for_write(
    root: &Beneath,
    job: &FileJob,
    placing: Placing,
) -> std::result::Result<Option<std::fs::File>, String> {
    let mut st = job.state.lock().expect("file state");
    if st.error.is_some() {
        return Ok(None);
    }
    match &st.partial {
        Some(p) => reopen(root, job, p).map(Some),
        None => create(root, job, &mut st, placing).map(Some),
    }
}

fn reopen(root: &Beneath, job: &FileJob, p: &Partial) -> std::result::Result<std::fs::File, String> {
    let Some(identity) = p.identity else {
        return Err(format!("{}: its handle was lost before it was finished", job.rel.display()));
    };
    root.reopen(parent(&job.rel), &p.name, identity).map_err(|e| format!("{}: {e}", job.rel.display()))
}

/// Creates the file: under its real name when placing directly and the name
/// is free, else under a private temporary name.
fn create(
    root: &Beneath,
    job: &FileJob,
    st: &mut FileState,
    placing: Placing,
) -> std::result::Result<std::fs::File, String> {
    let dir = parent(&job.rel);
    let failed = |e: std::io::Error| format!("{}: {e}", job.rel.display());
    if placing == Placing::Direct {
        let name = job.rel.file_name().unwrap_or_default();
        match root.create_new(dir, name) {
            Ok(f) => {
                st.partial = Some(Partial { name: name.to_owned(), under_real_name: true, identity: None });
                note_identity(st, &f).map_err(failed)?;
                return Ok(f);
            }
            // Something appeared under the name since the target was found
            // empty: write aside and rename over it, as into a full target.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(failed(e)),
        }
    }
    let name = std::ffi::OsString::from(format!("{PARTIAL_PREFIX}{:016x}", rand::random::<u64>()));
    let f = root.create_new(dir, &name).map_err(failed)?;
    st.partial = Some(Partial { name, under_real_name: false, identity: None });
    note_identity(st, &f).map_err(failed)?;
    Ok(f)
}

/// Takes a new file's identity at once if another worker may open it while
/// this one still holds it.
fn note_identity(st: &mut FileState, f: &std::fs::File) -> std::io::Result<()> {
    if st.spans == SpanCount::Many {
        let id = identity(f)?;
        if let Some(p) = st.partial.as_mut() {
            p.identity = Some(id);
        }
    }
    Ok(())
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
    placing: Placing,
    counters: &Counters,
) {
    let job = &jobs[n];
    let mut st = job.state.lock().expect("file state");
    let result = (|| -> std::result::Result<(), String> {
        let dir = parent(&job.rel);
        // An empty file had nothing written, so this creates it.
        let f = match (handle, &st.partial) {
            (Some(f), Some(_)) => f,
            (_, Some(p)) => reopen(root, job, p)?,
            (_, None) => create(root, job, &mut st, placing)?,
        };
        // No fsync per file: a journal commit per file made restores of many
        // small files twice as slow as restic's, which does not sync either.
        // A restore cut short by power loss is simply run again; what matters
        // is that a file appears under its name only complete and verified.
        if st.end != job.len {
            f.set_len(job.len).map_err(|e| format!("{}: {e}", job.rel.display()))?;
        }
        set_metadata(&f, &Meta::from(&job.node), owners)
            .map_err(|e| format!("{}: {e}", job.rel.display()))?;
        drop(f);
        let p = st.partial.as_ref().expect("created above");
        if p.under_real_name {
            return Ok(());
        }
        let name = job.rel.file_name().unwrap_or_default();
        use std::os::unix::ffi::OsStrExt;
        root.publish(dir, &p.name, name.as_bytes()).map_err(|e| format!("{}: {e}", job.rel.display()))
    })();
    match result {
        Ok(()) => {
            st.done = true;
            st.partial = None;
            counters.files.fetch_add(1, Ordering::Relaxed);
        }
        Err(msg) => {
            st.error.get_or_insert(msg);
        }
    }
}
