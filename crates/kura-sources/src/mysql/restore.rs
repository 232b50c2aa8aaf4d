//! MySQL/MariaDB restore: into a fresh database, checked, then swapped
//! with the live one in one atomic `RENAME TABLE` (or only the chosen
//! tables replaced), after waiting, for a bounded time, until no other
//! session holds the live tables; events of kept and scratch copies off.
use super::journal::{recover, Journal, JournalKey, Phase, Recovered};
use super::objects::*;
use super::*;
use crate::Step;

#[derive(Debug)]
pub struct MyRestored {
    pub database: String,
    pub bytes: u64,
    /// Where the replaced tables went.
    pub kept: Option<String>,
    pub tables: Vec<String>,
    /// Events left disabled: those of the kept copy, or of a copy restored
    /// `--into` a scratch database, which must not run beside the live one.
    pub events_disabled: Vec<String>,
}

/// How [`restore`] restores.
#[derive(Clone, Copy, Debug)]
pub struct MyRestore<'a> {
    /// A new database to restore into, the live one untouched.
    pub into: Option<&'a str>,
    /// Only these tables (and views).
    pub tables: &'a [String],
    /// Keep the replaced tables in `NAME_bak_YYYYMMDD_HHMM`.
    pub keep_old: bool,
    /// How long to wait for other sessions' locks on the live tables before
    /// giving up with nothing changed.
    pub lock_timeout: std::time::Duration,
    /// Named steps of the swap, for tests that kill the process there.
    pub step: &'a Step,
    /// Signs the swap's journal, and checks those of interrupted swaps.
    pub journal_key: &'a JournalKey,
}

/// The files of a snapshot that make up the dump, in the order that
/// concatenates them into it.
pub fn dump_order(files: &[String]) -> Vec<String> {
    parts_of(files).into_iter().map(|(_, f)| f).collect()
}

/// The snapshot's dump parts, in dump order.
fn parts_of(files: &[String]) -> Vec<(PartKind, String)> {
    let mut parts: Vec<(PartKind, String)> =
        files.iter().filter_map(|f| PartKind::parse_file_name(f).map(|k| (k, f.clone()))).collect();
    parts.sort_by(|a, b| a.1.cmp(&b.1));
    parts
}

/// The parts a restore loads: all of them, or the framing plus the parts of
/// the chosen tables and views.
fn select_parts(parts: &[(PartKind, String)], tables: &[String]) -> Result<Vec<String>, SourceError> {
    if tables.is_empty() {
        return Ok(parts.iter().map(|(_, f)| f.clone()).collect());
    }
    for t in tables {
        if !parts.iter().any(|(k, _)| k.object() == Some(t.as_str())) {
            let known: Vec<&str> = parts
                .iter()
                .filter_map(|(k, _)| match k {
                    PartKind::Table(n) | PartKind::View(n) => Some(n.as_str()),
                    _ => None,
                })
                .collect();
            return Err(SourceError::Refused(format!(
                "table {t} is not in this snapshot (it has: {})",
                known.join(", ")
            )));
        }
    }
    Ok(parts
        .iter()
        .filter(|(k, _)| match k {
            PartKind::Header | PartKind::Footer => true,
            other => other.object().is_some_and(|o| tables.iter().any(|t| t == o)),
        })
        .map(|(_, f)| f.clone())
        .collect())
}

fn spawn_blocking_err(e: tokio::task::JoinError) -> SourceError {
    SourceError::Refused(e.to_string())
}

/// Restores a dump made by [`backup`]: into a fresh database, checked, then
/// swapped in (or left under `into`, the live database untouched).
/// Deals with the scratch databases of restores of `live` that were killed
/// midway: one without a journal is only a partial copy, never swapped in,
/// and is dropped; one with a journal had begun its swap, which is undone
/// or finished (see [`super::journal`]). One whose restore is still running
/// is recognised by its held lock and left alone.
pub(super) fn sweep_scratch_databases(c: &Conn, live: &str, key: &JournalKey) -> Result<(), SourceError> {
    let pattern = format!("{}\\_kura\\_restore\\_%", crate::kept::like_escape(live));
    let rows = c.query(&format!(
        "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE {}",
        quote_literal(&pattern)
    ))?;
    for db in rows.iter().filter_map(|r| r.first()) {
        // Taken for the recovery, so that two kuras never work on one.
        let Ok(_lock) = c.hold_lock(&scratch_lock(db)) else { continue };
        match recover(c, db, key) {
            Ok(Recovered::Dropped) => {
                tracing::info!(database = %db, "dropped the partial copy of an interrupted restore")
            }
            Ok(Recovered::Undone) => tracing::warn!(
                database = %db,
                "a restore of {live} was interrupted before its swap: {live} is as it was, its triggers and views recreated"
            ),
            Ok(Recovered::Finished { bak }) => tracing::warn!(
                database = %db,
                "a restore of {live} was interrupted during its swap, which is now finished; the replaced tables are in {bak}"
            ),
            Err(e) => {
                tracing::warn!(database = %db, "could not recover the interrupted restore in {db}: {e}")
            }
        }
    }
    Ok(())
}

pub async fn restore(
    repo: &Repository,
    tree: Id,
    files: &[String],
    raw_url: &str,
    how: &MyRestore<'_>,
) -> Result<MyRestored, SourceError> {
    let MyRestore { into, tables, keep_old, lock_timeout, step, journal_key } = *how;
    let key = journal_key.clone();
    let step = step.clone();
    let parts = parts_of(files);
    if parts.is_empty() {
        return Err(SourceError::Refused("this snapshot holds no MySQL dump".into()));
    }
    let selected = select_parts(&parts, tables)?;
    let mut info_bytes = Vec::new();
    kura_repo::restore::dump(repo, tree, INFO_FILE, &mut info_bytes).await?;
    let info: DatabaseInfo = serde_json::from_slice(&info_bytes)
        .map_err(|e| SourceError::Refused(format!("{INFO_FILE} in the snapshot: {e}")))?;
    let want_tables: Vec<String> = parts
        .iter()
        .filter_map(|(k, f)| match k {
            PartKind::Table(n) if selected.contains(f) => Some(n.clone()),
            _ => None,
        })
        .collect();

    let conn = Arc::new(Conn::new(MyUrl::parse(raw_url)?)?);
    let live = conn.url.dbname.clone();
    let stamp = crate::db::kept_stamp(repo.now().into());
    let fresh = match into {
        Some(db) => db.to_string(),
        None => format!("{live}_kura_restore_{stamp}_{:04x}", rand::random::<u16>()),
    };
    let c = conn.clone();
    let f = fresh.clone();
    let create = format!(
        "CREATE DATABASE {} CHARACTER SET {} COLLATE {}",
        quote_ident(&fresh),
        info.charset,
        info.collation
    );
    let sweep = into.is_none().then(|| live.clone());
    let k = key.clone();
    // Held for the whole restore: a restore killed midway leaves its scratch
    // database behind, and the server releases this lock when the process
    // dies, which is how the next restore tells such a leftover from the
    // scratch database of a restore still running.
    let _scratch_lock = tokio::task::spawn_blocking(move || -> Result<Option<HeldLock>, SourceError> {
        let lock = match &sweep {
            Some(live) => {
                let lock = c.hold_lock(&scratch_lock(&f))?;
                sweep_scratch_databases(&c, live, &k)?;
                Some(lock)
            }
            None => None,
        };
        if c.database_exists(&f)? {
            return Err(SourceError::Refused(format!(
                "database {f} already exists; restore never writes into an existing database (drop it or choose another --into)"
            )));
        }
        c.exec(None, &create)?;
        Ok(lock)
    })
    .await
    .map_err(spawn_blocking_err)??;

    let drop_fresh = |conn: &Conn| {
        let _ = conn.exec(None, &format!("DROP DATABASE IF EXISTS {}", quote_ident(&fresh)));
    };
    let loaded = load(repo, tree, &conn, &fresh, &selected).await;
    let bytes = match loaded {
        Ok(b) => b,
        Err(e) => {
            drop_fresh(&conn);
            return Err(SourceError::Refused(format!("{e}; the live database {live} was not touched")));
        }
    };
    // A scratch copy's events must not run: they would act on the scratch
    // tables, or on the live ones they name. Those enabled in the dump are
    // enabled again once they are in the live database.
    let enabled = disable_events(&conn, &fresh)?;
    // The check: every table of the dump exists in the fresh database.
    let count = conn.query(&format!(
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE <> 'VIEW'",
        quote_literal(&fresh)
    ))?;
    let have: Vec<&str> = count.iter().filter_map(|r| r.first().map(String::as_str)).collect();
    if let Some(missing) = want_tables.iter().find(|t| !have.contains(&t.as_str())) {
        drop_fresh(&conn);
        return Err(SourceError::CheckFailed {
            path: PathBuf::from(&live),
            message: format!("table {missing} is missing after loading the dump"),
        });
    }
    if into.is_some() {
        return Ok(MyRestored {
            database: fresh,
            bytes,
            kept: None,
            tables: want_tables,
            events_disabled: enabled,
        });
    }

    // Unique, like the `.bak` names of files: a second restore within the
    // minute keeps its own copy.
    let c = conn.clone();
    let (l, st) = (live.clone(), stamp.clone());
    let bak = tokio::task::spawn_blocking(move || -> Result<String, SourceError> {
        let base = format!("{l}_bak_{st}");
        let taken = c.query(&format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE {}",
            quote_literal(&format!("{}%", crate::kept::like_escape(&base)))
        ))?;
        Ok(crate::kept::next_name(&base, '_', taken.iter().filter_map(|r| r.first().map(String::as_str))))
    })
    .await
    .map_err(spawn_blocking_err)??;
    let partial = !tables.is_empty() || !info.tables.is_empty();
    let c = conn.clone();
    let (f, l, b) = (fresh.clone(), live.clone(), bak.clone());
    let objects: Vec<String> = parts.iter().filter_map(|(k, _)| k.object().map(str::to_string)).collect();
    let selected_objects: Vec<String> = if tables.is_empty() { objects } else { tables.to_vec() };
    let info_c = (info.charset.clone(), info.collation.clone());
    let deadline = std::time::Instant::now() + lock_timeout;
    let enabled_c = enabled.clone();
    let swapped = tokio::task::spawn_blocking(move || -> Result<Option<Vec<String>>, SourceError> {
        // Nothing is changed until no other session holds the live tables.
        let live_tables = definitions(&c, &l)?.tables;
        let waited: Vec<String> = if partial {
            selected_objects.iter().filter(|t| live_tables.contains(t)).cloned().collect()
        } else {
            live_tables
        };
        wait_for_tables(&c, &l, &waited, deadline)?;
        let create = |db: &str| {
            format!("CREATE DATABASE {} CHARACTER SET {} COLLATE {}", quote_ident(db), info_c.0, info_c.1)
        };
        // A database dropped since the backup (the disaster case) is
        // recreated as it was, then filled by the same swap.
        let had_live = c.database_exists(&l)?;
        if !had_live {
            c.exec(None, &create(&l))?;
        }
        if !c.database_exists(&b)? {
            c.exec(None, &create(&b))?;
        }
        let limit = deadline.saturating_duration_since(std::time::Instant::now()).as_secs().max(1);
        let journal = Journal {
            live: l.clone(),
            bak: b.clone(),
            fresh: f.clone(),
            whole: !partial,
            phase: Phase::Begun,
            live_defs: definitions(&c, &l)?,
            fresh_defs: definitions(&c, &f)?,
            objects: selected_objects.clone(),
            events: enabled_c,
            key,
        };
        journal.write(&c)?;
        step.reached("mysql-journal");
        if partial {
            copy_tables_aside(&c, &l, &b, &selected_objects)?;
            journal.set_phase(&c, Phase::Copied)?;
            step.reached("mysql-copied");
            replace_in_place(&c, &f, &l, &selected_objects, limit)?;
            // Done now: replacing again would undo the application's
            // writes since.
            journal.set_phase(&c, Phase::Done)?;
        } else {
            swap_databases(&c, &journal, limit, &step)?;
        }
        if !had_live {
            // Nothing was replaced: there is nothing to keep.
            c.exec(None, &format!("DROP DATABASE {}", quote_ident(&b)))?;
            return Ok(None);
        }
        // The kept copy is a record, not a second application.
        disable_events(&c, &b).map(Some)
    })
    .await
    .map_err(spawn_blocking_err)?;
    let kept_events = match swapped {
        Ok(events) => events,
        Err(e @ SourceError::LockTimeout { .. }) => {
            drop_fresh(&conn);
            return Err(e);
        }
        Err(e) => {
            return Err(SourceError::Refused(format!(
                "{e}; the restored copy is in database {fresh} and the previous tables in {bak}; \
                 the next restore or backup of {live} undoes or finishes the swap"
            )))
        }
    };
    let c = conn.clone();
    // A partial restore moved no events: the live ones stay as they are.
    let (l, on) = (live.clone(), if partial { Vec::new() } else { enabled.clone() });
    let (f, whole) = (fresh.clone(), !partial);
    tokio::task::spawn_blocking(move || {
        enable_events(&c, &l, &on)?;
        if whole {
            // Done: the fresh database is dropped next, journal and all.
            c.exec(None, &format!("DROP DATABASE {}", quote_ident(&f)))?;
        }
        Ok::<_, SourceError>(())
    })
    .await
    .map_err(spawn_blocking_err)??;
    // Whole: the fresh database is empty now. Partial: it only proved the
    // tables load; the live database holds them now.
    drop_fresh(&conn);
    let (kept, events_disabled) = match kept_events {
        Some(events) if keep_old => (Some(bak), events),
        Some(_) => {
            conn.exec(None, &format!("DROP DATABASE {}", quote_ident(&bak)))?;
            (None, Vec::new())
        }
        None => (None, Vec::new()),
    };
    Ok(MyRestored { database: live, bytes, kept, tables: want_tables, events_disabled })
}

/// Disables the enabled events of `db`; returns their names.
pub(super) fn disable_events(conn: &Conn, db: &str) -> Result<Vec<String>, SourceError> {
    let rows = conn.query(&format!(
        "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} AND STATUS = 'ENABLED'",
        quote_literal(db)
    ))?;
    let names: Vec<String> = rows.into_iter().filter_map(|r| r.into_iter().next()).collect();
    for e in &names {
        alter_event(conn, db, e, "DISABLE")?;
    }
    Ok(names)
}

pub(super) fn enable_events(conn: &Conn, db: &str, names: &[String]) -> Result<(), SourceError> {
    for e in names {
        alter_event(conn, db, e, "ENABLE")?;
    }
    Ok(())
}

/// ALTER EVENT records the session's character set, sql_mode and time
/// zone with the event: it runs in the event's own, so that only the status
/// changes.
fn alter_event(conn: &Conn, db: &str, name: &str, status: &str) -> Result<(), SourceError> {
    let event = format!("{}.{}", quote_ident(db), quote_ident(name));
    let r = conn.query(&format!("SHOW CREATE EVENT {event}"))?;
    let session = session_of(&r.first().cloned().unwrap_or_default(), Some(1), Some(2), 4);
    conn.exec(Some(db), &format!("{session}ALTER EVENT {event} {status}"))
}

/// Waits until no other session holds a lock on `tables` of `db`: takes
/// and at once releases a write lock on all of them, each try bounded by
/// one second, until `deadline`. While it waits it says who holds them;
/// at the deadline it gives up, having changed nothing.
fn wait_for_tables(
    conn: &Conn,
    db: &str,
    tables: &[String],
    deadline: std::time::Instant,
) -> Result<(), SourceError> {
    if tables.is_empty() {
        return Ok(());
    }
    let list: Vec<String> =
        tables.iter().map(|t| format!("{}.{} WRITE", quote_ident(db), quote_ident(t))).collect();
    let probe =
        format!("SET SESSION lock_wait_timeout = 1;\nLOCK TABLES {};\nUNLOCK TABLES;", list.join(", "));
    let started = std::time::Instant::now();
    let mut announced = false;
    loop {
        match conn.exec(None, &probe) {
            Ok(()) => return Ok(()),
            Err(e) if e.to_string().contains("Lock wait timeout exceeded") => {
                let holders = lock_holders(conn, db)?;
                if !announced {
                    tracing::warn!(
                        "waiting for other sessions to release database {db}'s tables: {}",
                        holders.join("; ")
                    );
                    announced = true;
                }
                if std::time::Instant::now() >= deadline {
                    return Err(SourceError::LockTimeout {
                        database: db.to_string(),
                        waited_secs: started.elapsed().as_secs(),
                        holders,
                    });
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The other sessions that may hold locks on `db`'s tables: those with an
/// open transaction, and those running a statement in it.
fn lock_holders(conn: &Conn, db: &str) -> Result<Vec<String>, SourceError> {
    let rows = conn.query(&format!(
        "SELECT p.ID, p.USER, p.HOST, IFNULL(TIMESTAMPDIFF(SECOND, t.trx_started, NOW()), -1), p.COMMAND, \
         LEFT(IFNULL(p.INFO, ''), 60) FROM information_schema.PROCESSLIST p \
         LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID \
         WHERE p.ID <> CONNECTION_ID() AND (t.trx_id IS NOT NULL OR (p.DB = {} AND p.COMMAND NOT IN ('Sleep', 'Daemon'))) \
         ORDER BY p.ID",
        quote_literal(db)
    ))?;
    let mut out: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let [id, user, host, trx, command, info] = &r[..] else { return None };
            let what = if trx != "-1" {
                format!("a transaction open for {trx} s")
            } else {
                format!("{command}: {info}")
            };
            Some(format!("session {id} ({user}@{host}), {what}"))
        })
        .collect();
    if out.is_empty() {
        out.push("a session this user cannot see (SHOW PROCESSLIST needs the PROCESS privilege)".into());
    }
    Ok(out)
}

/// Loads the chosen parts of the snapshot into `db`, every blob verified
/// before it is written: the tables side by side, each whole in one
/// client (structure, rows in the dump's order, triggers) after the dump's
/// session settings (foreign key checks off, so no table waits for
/// another's rows); then views, routines and events, which may name any
/// table, in dump order in one client. The dump's `LOCK TABLES` are left
/// out of the side-by-side clients ([`WithoutTableLocks`]).
async fn load(
    repo: &Repository,
    tree: Id,
    conn: &Conn,
    db: &str,
    files: &[String],
) -> Result<u64, SourceError> {
    let parts = parts_of(files);
    let of = |want: fn(&PartKind) -> bool| -> Vec<String> {
        parts.iter().filter(|(k, _)| want(k)).map(|(_, f)| f.clone()).collect()
    };
    let tables = of(|k| matches!(k, PartKind::Table(_)));
    let header = of(|k| matches!(k, PartKind::Header));
    let footer = of(|k| matches!(k, PartKind::Footer));
    let sessions = crate::child::load_sessions().min(tables.len());
    if sessions < 2 {
        return load_in_one(repo, tree, conn, db, files).await;
    }
    let index = repo.load_index_present(&Default::default()).await?;
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicBool::new(false);
    let loaded = crate::child::side_by_side(sessions, |_, handle| {
        let r =
            load_tables(repo, &index, tree, conn, db, [&header, &footer], &tables, &next, &failed, handle);
        if r.is_err() {
            // The other clients take no new table.
            failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        r
    });
    let Some(loaded) = loaded else {
        return load_in_one(repo, tree, conn, db, files).await;
    };
    let mut bytes = 0;
    for r in loaded {
        bytes += r?;
    }
    let rest: Vec<String> =
        parts.iter().filter(|(k, _)| !matches!(k, PartKind::Table(_))).map(|(_, f)| f.clone()).collect();
    if rest.len() > header.len() + footer.len() {
        bytes += load_in_one(repo, tree, conn, db, &rest).await?;
    }
    Ok(bytes)
}

/// One client of [`load`]: the header, then tables taken from `tables` one
/// after the other until none is left, then the footer.
#[allow(clippy::too_many_arguments)]
fn load_tables(
    repo: &Repository,
    index: &kura_repo::index::Index,
    tree: Id,
    conn: &Conn,
    db: &str,
    [header, footer]: [&Vec<String>; 2],
    tables: &[String],
    next: &std::sync::atomic::AtomicUsize,
    failed: &std::sync::atomic::AtomicBool,
    handle: &tokio::runtime::Handle,
) -> Result<u64, SourceError> {
    use std::sync::atomic::Ordering::SeqCst;
    let mut cmd = conn.loader()?;
    cmd.arg(format!("--database={db}"));
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Refused(format!("cannot start the MySQL client: {e}")))?;
    let err = crate::child::stderr_tail(child.stderr.take().expect("piped"));
    let stdin = std::io::BufWriter::with_capacity(256 << 10, child.stdin.take().expect("piped"));
    let mut stdin = WithoutTableLocks::new(stdin);
    let fed = handle.block_on(async {
        let mut total = 0;
        for f in header {
            total += kura_repo::restore::dump_indexed(repo, index, tree, f, &mut stdin).await?;
        }
        while !failed.load(SeqCst) {
            let Some(f) = tables.get(next.fetch_add(1, SeqCst)) else { break };
            total += kura_repo::restore::dump_indexed(repo, index, tree, f, &mut stdin).await?;
        }
        for f in footer {
            total += kura_repo::restore::dump_indexed(repo, index, tree, f, &mut stdin).await?;
        }
        stdin.finish().map_err(|e| kura_repo::RepoError::io("<the MySQL client>", e))?;
        Ok::<u64, kura_repo::RepoError>(total)
    });
    drop(stdin);
    let status = child.wait().map_err(|e| SourceError::Refused(e.to_string()))?;
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        return Err(SourceError::Refused(format!(
            "loading the dump failed ({status}): {}",
            client_error(&stderr)
        )));
    }
    Ok(fed?)
}

/// Passes a dump through without its `LOCK TABLES `t` WRITE;` and
/// `UNLOCK TABLES;` lines. A session under `LOCK TABLES` may touch only
/// the tables it locked plus those the server found related when it took
/// the locks; a child table another client creates afterwards with a
/// foreign key to a locked parent makes the parent's next `INSERT` fail
/// ("Table 'child' was not locked with LOCK TABLES"). Each statement then
/// takes its own metadata locks instead, which plain inserts share. The
/// locks only ever sped up MyISAM's key writes, which `DISABLE KEYS` still
/// defers. mysqldump escapes newlines inside strings, so these statements
/// are only ever whole lines of their own.
struct WithoutTableLocks<W: std::io::Write> {
    out: W,
    /// The start of the current line, held while it may still be one of
    /// those statements.
    head: Vec<u8>,
    /// The current line is known to be something else: passed on up to its
    /// end.
    passing: bool,
}

impl<W: std::io::Write> WithoutTableLocks<W> {
    const LOCK: &'static [u8] = b"LOCK TABLES `";
    const UNLOCK: &'static [u8] = b"UNLOCK TABLES;";
    /// Longer than any `LOCK TABLES` of one table mysqldump writes (a name
    /// is at most 64 characters, 256 bytes in UTF-8, backquotes doubled).
    const LONGEST: usize = 600;

    fn new(out: W) -> Self {
        WithoutTableLocks { out, head: Vec::with_capacity(Self::LONGEST), passing: false }
    }

    fn may_be_lock(head: &[u8]) -> bool {
        let prefix = |whole: &[u8]| whole.starts_with(head) || head.starts_with(whole);
        prefix(Self::LOCK) || Self::UNLOCK.starts_with(head)
    }

    fn is_lock(line: &[u8]) -> bool {
        line == Self::UNLOCK || (line.starts_with(Self::LOCK) && line.ends_with(b"` WRITE;"))
    }

    /// Writes what is held of a line that ended with the input.
    fn finish(&mut self) -> std::io::Result<()> {
        self.out.write_all(&self.head)?;
        self.head.clear();
        self.out.flush()
    }
}

impl<W: std::io::Write> std::io::Write for WithoutTableLocks<W> {
    fn write(&mut self, mut buf: &[u8]) -> std::io::Result<usize> {
        let given = buf.len();
        while !buf.is_empty() {
            let line_end = buf.iter().position(|&b| b == b'\n');
            if self.passing {
                let n = line_end.map_or(buf.len(), |i| i + 1);
                self.out.write_all(&buf[..n])?;
                self.passing = line_end.is_none();
                buf = &buf[n..];
                continue;
            }
            let room = Self::LONGEST + 1 - self.head.len();
            let n = line_end.map_or(buf.len(), |i| i + 1).min(room);
            self.head.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if let Some(line) = self.head.strip_suffix(b"\n") {
                if !Self::is_lock(line) {
                    self.out.write_all(&self.head)?;
                }
                self.head.clear();
            } else if self.head.len() > Self::LONGEST || !Self::may_be_lock(&self.head) {
                self.out.write_all(&self.head)?;
                self.head.clear();
                self.passing = true;
            }
        }
        Ok(given)
    }

    /// Flushes what was passed on; a line that may still be a lock stays
    /// held (the next part of the dump may end it).
    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Pipes parts of the snapshot into one client, in order.
async fn load_in_one(
    repo: &Repository,
    tree: Id,
    conn: &Conn,
    db: &str,
    files: &[String],
) -> Result<u64, SourceError> {
    let mut cmd = conn.loader()?;
    cmd.arg(format!("--database={db}"));
    let Fed { dumped, status, stderr, .. } = feed(cmd, "the MySQL client", repo, tree, files).await?;
    if !status.success() {
        return Err(SourceError::Refused(format!(
            "loading the dump failed ({status}): {}",
            client_error(&stderr)
        )));
    }
    Ok(dumped?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_error_quotes_the_statements_first_line_only() {
        let said = "--------------\nINSERT INTO t VALUES\n(1),\n(1)\n--------------\n\n\
                    ERROR 1062 (23000) at line 3: Duplicate entry '1' for key 'PRIMARY'\n";
        assert_eq!(
            client_error(said),
            "ERROR 1062 (23000) at line 3: Duplicate entry '1' for key 'PRIMARY' (in the statement: INSERT INTO t VALUES …)"
        );
        // The tail of a long statement, its opening rule cut off.
        assert_eq!(client_error("(2),\n(1)\n--------------\n\nERROR 1 (x): no"), "ERROR 1 (x): no");
        assert_eq!(client_error("  mysql: unknown option\n"), "mysql: unknown option");
    }

    #[test]
    fn table_locks_are_left_out_wherever_the_writes_are_cut() {
        let long = format!("INSERT INTO `t` VALUES ({});\n", "1,".repeat(2000));
        let dump = format!(
            "/*!40101 SET NAMES utf8mb4 */;\nLOCK TABLES `t` WRITE;\n{long}UNLOCK TABLES;\nLOCK TABLES `a``b` WRITE;\n\
             LOCK\nUNLOCK TABLES; -- not alone\n-- LOCK TABLES `x` WRITE;\nLOCK TABLES `t` WRITE"
        );
        let want = format!(
            "/*!40101 SET NAMES utf8mb4 */;\n{long}LOCK\nUNLOCK TABLES; -- not alone\n-- LOCK TABLES `x` WRITE;\nLOCK TABLES `t` WRITE"
        );
        let bytes = dump.as_bytes();
        for cut in (0..bytes.len()).step_by(7).chain([1, 23, 24, 25]) {
            let mut w = WithoutTableLocks::new(Vec::new());
            for piece in [&bytes[..cut], &bytes[cut..]] {
                for chunk in piece.chunks(cut % 13 + 1) {
                    std::io::Write::write_all(&mut w, chunk).unwrap();
                }
                std::io::Write::flush(&mut w).unwrap();
            }
            w.finish().unwrap();
            assert_eq!(String::from_utf8(w.out).unwrap(), want, "cut at {cut}");
        }
    }

    #[test]
    fn table_selection_keeps_the_framing() {
        let files: Vec<String> = [
            PartKind::Header,
            PartKind::Table("a".into()),
            PartKind::Table("b".into()),
            PartKind::Routines,
            PartKind::Footer,
        ]
        .iter()
        .enumerate()
        .map(|(i, k)| k.file_name(i))
        .chain([INFO_FILE.to_string()])
        .collect();
        let parts = parts_of(&files);
        assert_eq!(select_parts(&parts, &[]).unwrap().len(), 5);
        let b = select_parts(&parts, &["b".into()]).unwrap();
        assert_eq!(b, vec![files[0].clone(), files[2].clone(), files[4].clone()]);
        let err = select_parts(&parts, &["c".into()]).unwrap_err().to_string();
        assert!(err.contains("table c is not in this snapshot (it has: a, b)"), "{err}");
    }
}
