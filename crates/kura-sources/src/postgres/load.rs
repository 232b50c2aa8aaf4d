//! A whole database's rows and indexes restored by several sessions at
//! once. `pg_restore -j` does this only from a seekable file, and kura
//! restores from a stream it verifies as it reads, with no copy on disk; so
//! kura reads each archive once and hands each table's COPY text, in
//! pieces cut at line ends, to one of N psql sessions, the next table to
//! the next session while the last one still loads. A table is never split
//! across sessions: its rows keep the dump's physical order, so a dump of
//! the restored database equals the original's. The same sessions then
//! build the indexes and primary and unique keys side by side, the largest
//! tables' first, and pg_restore does the rest of post-data (foreign keys,
//! triggers, grants, …) in archive order, as it would have.
use super::archive::{Entry, Head, Visit, Walker};
use super::restore::pg_restore_file;
use super::*;
use std::collections::HashMap;
use std::io::{BufRead, BufWriter, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// COPY text is handed to a session in pieces of about this size, cut at
/// a line end: a bounded queue, large enough that a piece's cost is the
/// server's, not ours.
const PIECE: usize = 1 << 20;

/// Pieces queued per session: enough to keep it busy while kura reads.
const QUEUE: usize = 4;

/// Sections of the table of contents (pg_backup.h).
const SECTION_NONE: i64 = 1;
const SECTION_DATA: i64 = 3;
const SECTION_POST_DATA: i64 = 4;

/// Restores dump `name` (and its parts) into the empty database `target`:
/// pre-data by pg_restore, rows and indexes by psql sessions
/// ([`crate::child::load_sessions`]),
/// the rest of post-data by pg_restore. Returns the archive bytes read.
pub(super) async fn whole(
    repo: &Repository,
    tree: Id,
    name: &str,
    parts: &[String],
    target: &PgUrl,
    no_owner: bool,
) -> Result<u64, SourceError> {
    let mut bytes =
        pg_restore_file(repo, tree, name, target, &["--section=pre-data".into()], no_owner).await?;
    let lanes = Lanes::start(target, crate::child::load_sessions())?;
    let result = load_all(repo, tree, name, parts, target, no_owner, &lanes).await;
    let closed = lanes.close();
    let (read, main) = result?;
    closed?;
    bytes += read;
    let Some(main) = main else { return Ok(bytes) };
    let rest = rest_of(&main.entries, &main.loaded, &main.built);
    bytes += restore_listed(repo, tree, name, target, &rest, no_owner).await?;
    Ok(bytes)
}

/// What the main archive held, and which of its entries the sessions did.
struct Main {
    entries: Vec<Entry>,
    loaded: Vec<i64>,
    built: Vec<i64>,
}

async fn load_all(
    repo: &Repository,
    tree: Id,
    name: &str,
    parts: &[String],
    target: &PgUrl,
    no_owner: bool,
    lanes: &Lanes,
) -> Result<(u64, Option<Main>), SourceError> {
    let files: Vec<String> = std::iter::once(name.to_string()).chain(parts.iter().cloned()).collect();
    let outcomes = read_all(repo, tree, &files, lanes).await;
    let mut bytes = 0;
    let mut main = None;
    // Bytes of COPY text per `schema.table`, to build the largest tables'
    // indexes first.
    let mut sizes: HashMap<String, u64> = HashMap::new();
    for (file, outcome) in files.iter().zip(outcomes) {
        let Read { bytes: read, entries, loaded, unsupported } = outcome?;
        bytes += read;
        for (id, n) in &loaded {
            if let Some(e) = entries.iter().find(|e| e.id == *id) {
                *sizes.entry(format!("{}.{}", e.namespace, e.tag)).or_default() += n;
            }
        }
        let is_main = file == name;
        let loaded: Vec<i64> = match unsupported {
            Some(why) => {
                // Nothing of this archive was loaded: pg_restore does its
                // rows, one session, as before.
                tracing::info!(file = %file, "rows restored by pg_restore alone: {why}");
                let args = if is_main { vec!["--section=data".to_string()] } else { Vec::new() };
                bytes += pg_restore_file(repo, tree, file, target, &args, no_owner).await?;
                if !is_main {
                    continue;
                }
                in_section(&entries, &[SECTION_DATA])
            }
            None => loaded.keys().copied().collect(),
        };
        if is_main {
            main = Some(Main { entries, loaded, built: Vec::new() });
        } else {
            // A part's sequence values and anything else beside its rows.
            let rest = rest_of(&entries, &loaded, &[]);
            bytes += restore_listed(repo, tree, file, target, &rest, no_owner).await?;
        }
    }
    if let Some(m) = &mut main {
        m.built = build_indexes(&m.entries, &sizes, lanes)?;
    }
    Ok((bytes, main))
}

/// What reading one archive into the sessions came to.
struct Read {
    bytes: u64,
    entries: Vec<Entry>,
    /// Table data entries loaded, with their bytes of COPY text.
    loaded: HashMap<i64, u64>,
    /// Why the sessions could not load this archive (nothing of it was).
    unsupported: Option<String>,
}

/// Reads `files` into the sessions, as many at once as there are sessions
/// (a database dumped in parts loads its large tables side by side, each
/// in the dump's order), each file by its own thread, with one index.
async fn read_all(
    repo: &Repository,
    tree: Id,
    files: &[String],
    lanes: &Lanes,
) -> Vec<Result<Read, SourceError>> {
    let index = match repo.load_index_present(&Default::default()).await {
        Ok(index) => index,
        Err(e) => return vec![Err(e.into())],
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    let readers = lanes.lanes.len().min(files.len());
    let threads = crate::child::side_by_side(readers, |_, handle| {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Some(file) = files.get(i) else { break };
            out.push((i, handle.block_on(read_one(repo, &index, tree, file, lanes))));
        }
        out
    });
    let Some(threads) = threads else {
        let mut out = Vec::new();
        for file in files {
            out.push(read_one(repo, &index, tree, file, lanes).await);
        }
        return out;
    };
    let mut all: Vec<(usize, Result<Read, SourceError>)> = threads.into_iter().flatten().collect();
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, r)| r).collect()
}

async fn read_one(
    repo: &Repository,
    index: &kura_repo::index::Index,
    tree: Id,
    file: &str,
    lanes: &Lanes,
) -> Result<Read, SourceError> {
    tracing::debug!(file, "reading into the sessions");
    let mut loader = Walker::new(Loader::new(lanes));
    let dumped = kura_repo::restore::dump_indexed(repo, index, tree, file, &mut WriteTo(&mut loader)).await;
    let visitor = &mut loader.visitor;
    visitor.release();
    if let Some(e) = visitor.failed.take() {
        return Err(SourceError::Refused(e));
    }
    let unsupported = visitor.unsupported.take();
    let bytes = match dumped {
        Ok(n) => n,
        // The loader stopped the dump at the table of contents.
        Err(_) if unsupported.is_some() => 0,
        Err(e) => return Err(e.into()),
    };
    let entries = std::mem::take(&mut visitor.entries);
    let loaded = std::mem::take(&mut visitor.loaded);
    if unsupported.is_none()
        && (!loader.at_block_boundary().map_err(|e| SourceError::Refused(e.to_string()))? || loader.lost())
    {
        return Err(SourceError::Refused(format!(
            "{file} is not a whole pg_dump archive (it ends inside a block or holds one kura cannot follow)"
        )));
    }
    Ok(Read { bytes, entries, loaded, unsupported })
}

/// Adapts a walker to the `Write` that the repository's dump writes to.
struct WriteTo<'a, 'l>(&'a mut Walker<Loader<'l>>);

impl Write for WriteTo<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.feed(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Entries a session cannot do, or `None` when it can load every table
/// data entry of the archive.
fn unsupported(head: &Head) -> Option<String> {
    if head.compressed {
        return Some("the archive's data is compressed".into());
    }
    if let Some(e) = head.entries.iter().find(|e| e.desc.contains("BLOB") || e.desc.contains("LARGE OBJECT"))
    {
        return Some(format!("it holds large objects ({})", e.desc));
    }
    if let Some(e) = head.entries.iter().find(|e| {
        e.desc == "TABLE DATA"
            && e.copy_stmt.as_deref().is_none_or(|c| !c.starts_with("COPY ") || !psql_safe(c.trim_end()))
    }) {
        return Some(format!("table {}.{} is not in plain COPY form", e.namespace, e.tag));
    }
    if let Some(e) =
        head.entries.iter().find(|e| (e.desc == "ENCODING" || e.desc == "STDSTRINGS") && !psql_safe(&e.defn))
    {
        return Some(format!("its {} setting is not a plain statement", e.desc));
    }
    None
}

/// Whether SQL from the archive may go to a psql session as it is. psql,
/// unlike pg_restore, runs backslash commands (`\!` runs a shell command
/// as the user running kura), so archive text that holds a backslash is
/// left to pg_restore: an archive made by another host writing to the
/// repository gets no more than the SQL it could run anyway.
fn psql_safe(sql: &str) -> bool {
    !sql.contains('\\')
}

/// Cuts each table's COPY text into pieces for the sessions.
struct Loader<'l> {
    lanes: &'l Lanes,
    entries: Vec<Entry>,
    /// Table data entries loaded, with their bytes of COPY text.
    loaded: HashMap<i64, u64>,
    copy: HashMap<i64, Arc<str>>,
    /// The current table's text.
    text: CopyText,
    /// The session loading the current table, claimed for it alone.
    lane: Option<usize>,
    failed: Option<String>,
    unsupported: Option<String>,
}

impl<'l> Loader<'l> {
    fn new(lanes: &'l Lanes) -> Loader<'l> {
        Loader {
            lanes,
            entries: Vec::new(),
            loaded: HashMap::new(),
            copy: HashMap::new(),
            text: CopyText::default(),
            lane: None,
            failed: None,
            unsupported: None,
        }
    }

    /// Hands rows of table data entry `id` to its session.
    fn hand_out(&mut self, id: i64, data: Vec<u8>) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        *self.loaded.entry(id).or_default() += data.len() as u64;
        let copy = self.copy[&id].clone();
        // A table stays on one session, so its rows keep the dump's order
        // (a dump of the restored database equals the original's).
        let i = match self.lane {
            Some(i) => i,
            None => {
                let i = *self.lane.insert(self.lanes.claim());
                tracing::debug!(entry = id, session = i, "loading a table");
                i
            }
        };
        self.lanes.lanes[i].tx.send(Job::Rows { copy, data }).map_err(|_| self.lane_failed(i))
    }

    /// Closes the current table's COPY and lets another reader have its
    /// session.
    fn release(&mut self) {
        if let Some(i) = self.lane.take() {
            let _ = self.lanes.lanes[i].tx.send(Job::EndCopy);
            self.lanes.lanes[i].claimed.store(false, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn lane_failed(&mut self, i: usize) -> std::io::Error {
        let why = self.lanes.failure(i);
        self.failed = Some(why.clone());
        std::io::Error::other(why)
    }
}

impl Visit for Loader<'_> {
    fn head(&mut self, head: &Head) -> std::io::Result<bool> {
        self.entries = head.entries.clone();
        if let Some(why) = unsupported(head) {
            self.unsupported = Some(why.clone());
            // Stops the dump before a byte of rows is read.
            return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, why));
        }
        for e in &head.entries {
            if let (true, Some(c)) = (e.desc == "TABLE DATA", &e.copy_stmt) {
                self.copy.insert(e.id, Arc::from(c.trim_end()));
            }
            // The dump's encoding and string syntax, as pg_restore sets
            // them: COPY text is in the encoding of the dump.
            if e.desc == "ENCODING" || e.desc == "STDSTRINGS" {
                let mut set = self.lanes.settings.lock().expect("settings lock");
                if !set.contains(&e.defn) {
                    set.push(e.defn.clone());
                    for i in 0..self.lanes.lanes.len() {
                        if self.lanes.lanes[i].tx.send(Job::Raw(e.defn.clone())).is_err() {
                            drop(set);
                            return Err(self.lane_failed(i));
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    fn data(&mut self, id: i64, bytes: &[u8]) -> std::io::Result<()> {
        if !self.copy.contains_key(&id) {
            return Ok(());
        }
        match self.text.push(bytes) {
            Some(piece) => self.hand_out(id, piece),
            None => Ok(()),
        }
    }

    fn end(&mut self, id: i64) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.text).finish();
        if !self.copy.contains_key(&id) {
            return Ok(());
        }
        let Some(rest) = rest else {
            self.failed = Some(format!("the rows of table data entry {id} end inside a line"));
            return Err(std::io::Error::other("malformed COPY text"));
        };
        self.hand_out(id, rest)?;
        self.loaded.entry(id).or_default();
        self.release();
        Ok(())
    }
}

/// One table's COPY text as it arrives in chunks of any size: cut into
/// pieces at line ends, without the `\.` line that ends it and the blank
/// lines pg_dump writes after that.
#[derive(Default)]
struct CopyText {
    /// Not handed out yet; always starts at a line start.
    pending: Vec<u8>,
    /// How far `pending` was searched for the end line.
    scanned: usize,
    /// The end line was seen: what follows is not rows.
    ended: bool,
}

impl CopyText {
    /// Takes more text; a piece once [`PIECE`] bytes of whole lines wait.
    fn push(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        if self.ended {
            return None;
        }
        self.pending.extend_from_slice(bytes);
        // The end line cannot be a row: a backslash in a value is written
        // `\\`, so `\.` alone on a line is only ever the end.
        let from = self.scanned.saturating_sub(3);
        let found = if from == 0 && self.pending.starts_with(b"\\.\n") {
            Some(0)
        } else {
            memchr::memmem::find(&self.pending[from..], b"\n\\.\n").map(|i| from + i + 1)
        };
        self.scanned = self.pending.len();
        if let Some(at) = found {
            self.pending.truncate(at);
            self.ended = true;
        }
        if self.pending.len() < PIECE {
            return None;
        }
        let nl = memchr::memrchr(b'\n', &self.pending)?;
        let rest = self.pending.split_off(nl + 1);
        self.scanned = 0;
        Some(std::mem::replace(&mut self.pending, rest))
    }

    /// The rest of the rows, or `None` if the text ends inside a line.
    fn finish(mut self) -> Option<Vec<u8>> {
        if !self.ended && (self.pending.ends_with(b"\n\\.") || self.pending == b"\\.") {
            self.pending.truncate(self.pending.len() - 2);
        }
        (self.pending.is_empty() || self.pending.ends_with(b"\n")).then_some(self.pending)
    }
}

/// The dump ids in effect in `section`: pg_restore gives an entry without
/// a section (grants, …) that of the entry before it.
fn in_section(entries: &[Entry], wanted: &[i64]) -> Vec<i64> {
    let mut current = 2;
    let mut out = Vec::new();
    for e in entries {
        if e.section != SECTION_NONE {
            current = e.section;
        }
        if wanted.contains(&current) {
            out.push(e.id);
        }
    }
    out
}

/// What pg_restore still has to do after the sessions: every data and
/// post-data entry that is not a loaded table or a built index, in archive
/// order.
fn rest_of(entries: &[Entry], loaded: &[i64], built: &[i64]) -> Vec<i64> {
    in_section(entries, &[SECTION_DATA, SECTION_POST_DATA])
        .into_iter()
        .filter(|id| !loaded.contains(id) && !built.contains(id))
        .collect()
}

/// Runs pg_restore over `file` for just the entries `ids` (`-L`).
async fn restore_listed(
    repo: &Repository,
    tree: Id,
    file: &str,
    target: &PgUrl,
    ids: &[i64],
    no_owner: bool,
) -> Result<u64, SourceError> {
    if ids.is_empty() {
        return Ok(0);
    }
    let mut list = tempfile::NamedTempFile::new()
        .map_err(|e| SourceError::Refused(format!("cannot write pg_restore's list of entries: {e}")))?;
    let text: String = ids.iter().map(|id| format!("{id};\n")).collect();
    list.write_all(text.as_bytes())
        .and_then(|_| list.flush())
        .map_err(|e| SourceError::Refused(format!("cannot write pg_restore's list of entries: {e}")))?;
    let path = list.path().to_string_lossy().into_owned();
    pg_restore_file(repo, tree, file, target, &["-L".to_string(), path], no_owner).await
}

/// Builds the post-data indexes and primary, unique and exclusion keys on
/// the sessions, each taking the next as it finishes, largest tables
/// first. Foreign keys wait for pg_restore: they read two tables and could
/// deadlock side by side. Returns the dump ids built.
fn build_indexes(
    entries: &[Entry],
    sizes: &HashMap<String, u64>,
    lanes: &Lanes,
) -> Result<Vec<i64>, SourceError> {
    let post = in_section(entries, &[SECTION_POST_DATA]);
    let table_of = |e: &Entry| -> u64 {
        e.deps
            .iter()
            .filter_map(|d| entries.iter().find(|t| t.id == *d && t.desc == "TABLE"))
            .map(|t| sizes.get(&format!("{}.{}", t.namespace, t.tag)).copied().unwrap_or(0))
            .max()
            .unwrap_or(0)
    };
    let mut jobs: Vec<(&Entry, u64)> = entries
        .iter()
        .filter(|e| {
            (e.desc == "INDEX" || e.desc == "CONSTRAINT") && post.contains(&e.id) && psql_safe(&e.defn)
        })
        .map(|e| (e, table_of(e)))
        .collect();
    jobs.sort_by_key(|j| std::cmp::Reverse(j.1));
    let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
    let mut queue = jobs.iter();
    let mut busy = 0;
    let mut built = Vec::new();
    let give = |i: usize, e: &Entry| -> Result<(), SourceError> {
        let tablespace = if e.tablespace.is_empty() { "''".to_string() } else { quote_ident(&e.tablespace) };
        let sql = format!("SET default_tablespace = {tablespace};\n{}", e.defn);
        lanes.lanes[i]
            .tx
            .send(Job::Sql { sql, done: done_tx.clone(), lane: i })
            .map_err(|_| SourceError::Refused(lanes.failure(i)))
    };
    for i in 0..lanes.lanes.len() {
        let Some((e, _)) = queue.next() else { break };
        give(i, e)?;
        built.push(e.id);
        busy += 1;
    }
    while busy > 0 {
        let i = match done_rx.recv_timeout(std::time::Duration::from_millis(200)) {
            Ok(i) => i,
            // A session that died with statements still queued never says
            // they are done.
            Err(_) if lanes.any_ended() => break,
            Err(_) => continue,
        };
        busy -= 1;
        if let Some((e, _)) = queue.next() {
            give(i, e)?;
            built.push(e.id);
            busy += 1;
        }
    }
    if busy > 0 {
        // A session ended without finishing its statement.
        let why = (0..lanes.lanes.len()).map(|i| lanes.failure(i)).find(|w| !w.is_empty());
        return Err(SourceError::Refused(why.unwrap_or_else(|| "a psql session ended early".into())));
    }
    Ok(built)
}

enum Job {
    /// Rows of the table this COPY statement loads.
    Rows { copy: Arc<str>, data: Vec<u8> },
    /// The end of a table's rows: close an open COPY.
    EndCopy,
    /// Session settings, not waited for.
    Raw(String),
    /// A statement; the session's number goes to `done` once it ran.
    Sql { sql: String, done: std::sync::mpsc::Sender<usize>, lane: usize },
}

struct Lane {
    tx: SyncSender<Job>,
    /// A reader is handing it a table's rows.
    claimed: std::sync::atomic::AtomicBool,
    thread: std::sync::Mutex<Option<JoinHandle<Result<(), String>>>>,
    error: std::sync::Mutex<Option<String>>,
}

/// The psql sessions loading one database.
struct Lanes {
    lanes: Vec<Lane>,
    /// Session settings of the archives (their encoding), sent once.
    settings: std::sync::Mutex<Vec<String>>,
    next: std::sync::atomic::AtomicUsize,
}

/// What every session runs first: pg_restore's own session settings, so
/// that COPY text and statements mean what they meant to pg_dump.
/// Commits need not wait for the disk: nothing is swapped in before the
/// restore's last (synchronous) statement, whose flush covers every
/// earlier commit.
const PRELUDE: &str = "SET statement_timeout = 0;\nSET lock_timeout = 0;\nSET idle_in_transaction_session_timeout = 0;\n\
SELECT pg_catalog.set_config('search_path', '', false);\n\
SET check_function_bodies = false;\nSET xmloption = content;\nSET client_min_messages = warning;\nSET row_security = off;\n\
SET synchronous_commit = off;\n";

/// The line a session prints after each statement it was given.
const DONE: &str = "kura-statement-done";

impl Lanes {
    fn start(target: &PgUrl, n: usize) -> Result<Lanes, SourceError> {
        let mut lanes = Vec::new();
        for _ in 0..n {
            // Query results to /dev/null: stdout carries only the lines
            // that say a statement is done.
            let mut child = psql_session(target, &["-o", "/dev/null"])?;
            let (tx, rx) = sync_channel(QUEUE);
            let thread = std::thread::spawn(move || session(&mut child, rx));
            lanes.push(Lane {
                tx,
                claimed: Default::default(),
                thread: std::sync::Mutex::new(Some(thread)),
                error: Default::default(),
            });
        }
        Ok(Lanes { lanes, settings: Default::default(), next: Default::default() })
    }

    /// A session no other reader is loading a table into; there is one
    /// while readers are no more than sessions.
    fn claim(&self) -> usize {
        use std::sync::atomic::Ordering::SeqCst;
        let n = self.lanes.len();
        let start = self.next.fetch_add(1, SeqCst);
        for k in 0..n {
            let i = (start + k) % n;
            if self.lanes[i].claimed.compare_exchange(false, true, SeqCst, SeqCst).is_ok() {
                return i;
            }
        }
        start % n
    }

    fn any_ended(&self) -> bool {
        self.lanes
            .iter()
            .any(|l| l.thread.lock().expect("lane thread lock").as_ref().is_none_or(|h| h.is_finished()))
    }

    /// Why session `i` stopped (waits for it to end).
    fn failure(&self, i: usize) -> String {
        let lane = &self.lanes[i];
        let mut error = lane.error.lock().expect("lane error lock");
        if error.is_none() {
            let handle = lane.thread.lock().expect("lane thread lock").take();
            *error = Some(match handle.map(|h| h.join()) {
                Some(Ok(Err(e))) => e,
                Some(Err(_)) => "a psql session's thread panicked".into(),
                _ => String::new(),
            });
        }
        error.clone().unwrap_or_default()
    }

    /// Ends every session; the first failure, if any.
    fn close(self) -> Result<(), SourceError> {
        let Lanes { lanes, .. } = self;
        let mut first = None;
        for lane in lanes {
            drop(lane.tx);
            let handle = lane.thread.lock().expect("lane thread lock").take();
            let outcome = match handle.map(|h| h.join()) {
                Some(Ok(r)) => r,
                Some(Err(_)) => Err("a psql session's thread panicked".into()),
                None => match lane.error.lock().expect("lane error lock").take() {
                    Some(e) if !e.is_empty() => Err(e),
                    _ => Ok(()),
                },
            };
            if let (Err(e), None) = (outcome, &first) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), |e| Err(SourceError::Refused(e)))
    }
}

/// One session: writes what it is given to psql, and says how psql ended.
fn session(child: &mut std::process::Child, rx: Receiver<Job>) -> Result<(), String> {
    let err = stderr_tail(child.stderr.take().expect("piped"));
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let stdin = child.stdin.take().expect("piped");
    let mut w = BufWriter::with_capacity(256 << 10, stdin);
    let fed = (|| -> std::io::Result<()> {
        w.write_all(PRELUDE.as_bytes())?;
        let mut open: Option<Arc<str>> = None;
        loop {
            // Whatever waits in the buffer goes to psql before this
            // session idles: a table's last rows and its end line must not
            // wait for the next table.
            let job = match rx.try_recv() {
                Ok(job) => job,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    w.flush()?;
                    match rx.recv() {
                        Ok(job) => job,
                        Err(_) => break,
                    }
                }
                Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
            };
            match job {
                Job::Rows { copy, data } => {
                    if open.as_deref() != Some(&*copy) {
                        if open.is_some() {
                            w.write_all(b"\\.\n")?;
                        }
                        w.write_all(copy.as_bytes())?;
                        w.write_all(b"\n")?;
                        open = Some(copy);
                    }
                    w.write_all(&data)?;
                }
                Job::EndCopy => {
                    if open.take().is_some() {
                        w.write_all(b"\\.\n")?;
                    }
                }
                Job::Raw(sql) => {
                    if open.take().is_some() {
                        w.write_all(b"\\.\n")?;
                    }
                    w.write_all(sql.as_bytes())?;
                    w.write_all(b"\n")?;
                }
                Job::Sql { sql, done, lane } => {
                    if open.take().is_some() {
                        w.write_all(b"\\.\n")?;
                    }
                    let ran = (|| {
                        w.write_all(sql.as_bytes())?;
                        writeln!(w, "\n\\echo {DONE}")?;
                        w.flush()?;
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if out.read_line(&mut line)? == 0 {
                                return Err(std::io::Error::new(
                                    std::io::ErrorKind::BrokenPipe,
                                    "psql ended",
                                ));
                            }
                            if line.trim_end() == DONE {
                                return Ok(());
                            }
                        }
                    })();
                    // Said even on failure: the coordinator then finds
                    // this session gone.
                    let _ = done.send(lane);
                    ran?;
                }
            }
        }
        if open.is_some() {
            w.write_all(b"\\.\n")?;
        }
        w.flush()
    })();
    drop(w);
    let status = child.wait().map_err(|e| e.to_string())?;
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("psql loading the restored database failed ({status}): {}", stderr.trim()));
    }
    fed.map_err(|e| format!("psql loading the restored database: {e}: {}", stderr.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: i64, desc: &str, section: i64) -> Entry {
        Entry {
            id,
            desc: desc.into(),
            namespace: "public".into(),
            tag: format!("t{id}"),
            section,
            defn: String::new(),
            copy_stmt: None,
            tablespace: String::new(),
            deps: Vec::new(),
        }
    }

    /// Feeds `text` cut every `step` bytes; returns the rows handed out.
    fn rows_of(text: &[u8], step: usize) -> Option<Vec<u8>> {
        let mut t = CopyText::default();
        let mut out = Vec::new();
        for chunk in text.chunks(step) {
            if let Some(piece) = t.push(chunk) {
                assert!(piece.ends_with(b"\n"), "a piece ends at a line end");
                out.extend(piece);
            }
        }
        out.extend(t.finish()?);
        Some(out)
    }

    #[test]
    fn copy_text_loses_no_row_and_keeps_no_end_line_however_it_is_cut() {
        let mut big = Vec::new();
        for i in 0..60_000 {
            // Values that look like the end line but are not one.
            big.extend(format!("{i}\tx\\\\.\t\\.y\n").as_bytes());
        }
        let cases: [(&[u8], &[u8]); 5] = [
            (b"1\ta\n2\tb\n\\.\n\n\n", b"1\ta\n2\tb\n"),
            (b"\\.\n\n\n", b""),
            (b"\n\n\\.\n", b"\n\n"),
            (b"1\n\\.", b"1\n"),
            (b"\\\\.\n\\.\n", b"\\\\.\n"),
        ];
        for step in [1, 2, 3, 5, 4096, 1 << 20] {
            for (text, rows) in cases {
                assert_eq!(rows_of(text, step).as_deref(), Some(rows), "{text:?} in steps of {step}");
            }
            let mut text = big.clone();
            text.extend(b"\\.\n\n\n");
            assert_eq!(rows_of(&text, step.max(64)), Some(big.clone()), "steps of {step}");
        }
        assert_eq!(rows_of(b"1\tcut", 2), None, "text that ends inside a line is refused");
    }

    #[test]
    fn archive_text_with_a_backslash_is_left_to_pg_restore() {
        let head = |copy: &str| Head {
            len: 0,
            int_size: 4,
            compressed: false,
            entries: vec![Entry { copy_stmt: Some(copy.into()), ..entry(1, "TABLE DATA", 3) }],
        };
        assert!(unsupported(&head("COPY public.t (a) FROM stdin;\n")).is_none());
        assert!(unsupported(&head("\\! touch /tmp/pwned\nCOPY public.t (a) FROM stdin;")).is_some());
        assert!(unsupported(&head("COPY public.t (a) FROM stdin;\n\\! id")).is_some());
        assert!(!psql_safe("CREATE INDEX i ON public.t USING btree ((a || '\\! id'))"));
        assert!(psql_safe("ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n"));
    }

    #[test]
    fn grants_without_a_section_go_with_the_entries_before_them() {
        let entries = [
            entry(1, "TABLE", 2),
            entry(2, "TABLE DATA", 3),
            entry(3, "SEQUENCE SET", 3),
            entry(4, "ACL", SECTION_NONE),
            entry(5, "INDEX", 4),
            entry(6, "FK CONSTRAINT", 4),
            entry(7, "ACL", SECTION_NONE),
        ];
        assert_eq!(in_section(&entries, &[SECTION_POST_DATA]), [5, 6, 7]);
        assert_eq!(rest_of(&entries, &[2], &[5]), [3, 4, 6, 7]);
    }
}
