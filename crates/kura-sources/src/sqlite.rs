//! SQLite through its online backup API.
//!
//! Backup copies the database page by page inside one read transaction, so
//! the copy is consistent even while the application keeps writing (in WAL
//! mode writers are not even blocked). The copy is checked with
//! `PRAGMA quick_check` before it is stored. Restore writes the database
//! beside the live one and runs `PRAGMA integrity_check` on it. A lone
//! live file is then exchanged with it atomically; a live database with a
//! `-wal`, `-shm` or `-journal` beside it gets the new content written into
//! it in one transaction (see [`replace_in_place`]). Either way the old
//! content is kept under a `.bak` name.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kura_format::Id;
use kura_repo::backup::{backup_stream_sequence, BackupOptions, BackupResult, Stream};
use kura_repo::{Counters, Repository};
use rusqlite::{Connection, OpenFlags};

use crate::swap::{backup_name, sweep_leftovers, with_suffix, Scratch, Swap};
use crate::SourceError;

/// Files SQLite keeps beside a database, which belong to it.
pub const COMPANIONS: &[&str] = &["-wal", "-shm", "-journal"];

/// Copies a live database consistently to `dest` (which must not exist),
/// and checks the copy.
pub fn copy_consistent(src: &Path, dest: &Path) -> Result<u64, SourceError> {
    let to = copy_pages(src, dest)?;
    check(&to, dest, "quick_check")?;
    drop(to);
    std::fs::metadata(dest).map(|m| m.len()).map_err(|e| SourceError::io(dest, e))
}

/// Copies a database's pages as one consistent state to `dest` (which must
/// not exist), without judging them: a damaged database copies as it is.
/// The copy is a self-contained file, with no WAL beside it.
fn copy_pages(src: &Path, dest: &Path) -> Result<Connection, SourceError> {
    if !src.is_file() {
        return Err(SourceError::sqlite(src, "no such database file"));
    }
    let from =
        Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| SourceError::sqlite(src, e))?;
    from.busy_timeout(Duration::from_secs(60)).map_err(|e| SourceError::sqlite(src, e))?;
    let mut to = Connection::open(dest).map_err(|e| SourceError::sqlite(dest, e))?;
    copy_all(&from, src, &mut to)?;
    to.pragma_update(None, "journal_mode", "DELETE").map_err(|e| SourceError::sqlite(dest, e))?;
    Ok(to)
}

/// Copies every page of `from` into `to` in one backup step: one read
/// transaction on the source, hence one consistent state with no restarts
/// however busy its writers are, and one write transaction on the
/// destination, which SQLite's journal makes all or nothing.
fn copy_all(from: &Connection, src: &Path, to: &mut Connection) -> Result<(), SourceError> {
    let backup = rusqlite::backup::Backup::new(from, to).map_err(|e| SourceError::sqlite(src, e))?;
    while !step(&backup, src, -1)? {}
    Ok(())
}

/// One backup step of `pages` pages (all with -1); whether the copy is
/// done. A step that needs a lock a writer holds waits for it, but not
/// forever.
fn step(backup: &rusqlite::backup::Backup, src: &Path, pages: std::ffi::c_int) -> Result<bool, SourceError> {
    let mut waited = Duration::ZERO;
    loop {
        use rusqlite::backup::StepResult;
        match backup.step(pages).map_err(|e| SourceError::sqlite(src, e))? {
            StepResult::Done => return Ok(true),
            StepResult::More => return Ok(false),
            _ if waited < Duration::from_secs(60) => {
                std::thread::sleep(Duration::from_millis(50));
                waited += Duration::from_millis(50);
            }
            _ => return Err(SourceError::sqlite(src, "database stayed locked for 60 s")),
        }
    }
}

/// Puts the checked copy at `new` in place of a live database that has a
/// `-wal`, `-shm` or `-journal` beside it, i.e. one that is open or was
/// left mid-transaction. Renaming such a set is several steps, and a kill
/// between them would leave the database only under its `.bak` name; an
/// application holding it open would also go on writing into the renamed
/// file. Instead the copy is written into the live database through the
/// backup API, in one transaction: a crash at any instant leaves the old or
/// the new content, and open connections see the new content. The old
/// content, damaged or not, is first copied page by page (its WAL folded
/// in) to the `.bak` name. `Ok(None)` when this cannot be done (the live
/// file is no database at all, or its page size cannot change in WAL
/// mode): nothing was changed, and the caller swaps files instead.
fn replace_in_place(
    new: &Path,
    live: &Path,
    keep_old: bool,
    now: chrono::DateTime<chrono::Local>,
) -> Result<Option<Swap>, SourceError> {
    let mut to = match Connection::open_with_flags(
        live,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(path = %live.display(), error = %e, "cannot open the live database; swapping files");
            return Ok(None);
        }
    };
    to.busy_timeout(Duration::from_secs(60)).map_err(|e| SourceError::sqlite(live, e))?;
    let from =
        Connection::open_with_flags(new, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| SourceError::sqlite(new, e))?;
    let backup = match rusqlite::backup::Backup::new(&from, &mut to) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %live.display(), error = %e, "cannot write into the live database; swapping files");
            return Ok(None);
        }
    };
    // A step of no pages opens the write transaction on the live database
    // and copies nothing: from here until the copy is done no other
    // connection can commit. The kept copy is taken now, so it is exactly
    // the state the write replaces; a row the application committed
    // between the two would be in neither (its writers wait meanwhile,
    // its readers go on).
    if let Err(e) = step(&backup, live, 0) {
        tracing::warn!(path = %live.display(), error = %e, "cannot lock the live database; swapping files");
        return Ok(None);
    }
    let kept = if keep_old {
        // Copied under a temporary name first, so that a `.bak` name
        // always holds a whole copy.
        let (part, file) = Scratch::file(live)?;
        // SQLite takes an empty file for an empty database: the copy goes
        // into the very file the lock is on.
        drop(file);
        match copy_pages(live, &part.path) {
            Ok(c) => drop(c),
            Err(e) => {
                // Dropping the backup unfinished rolls its write back.
                tracing::warn!(path = %live.display(), error = %e, "cannot copy the live database aside; swapping files");
                let _ = std::fs::remove_file(&part.path);
                return Ok(None);
            }
        }
        let bak = backup_name(live, now);
        std::fs::File::open(&part.path)
            .and_then(|f| f.sync_all())
            .and_then(|()| std::fs::rename(&part.path, &bak))
            .map_err(|e| SourceError::io(&bak, e))?;
        Some(bak)
    } else {
        None
    };
    let written = (|| {
        while !step(&backup, new, -1)? {}
        Ok::<(), SourceError>(())
    })();
    if let Err(e) = written {
        // The write transaction rolled back: the live database is as it
        // was, and the copy of it is not needed.
        tracing::warn!(path = %live.display(), error = %e, "cannot write into the live database; swapping files");
        if let Some(bak) = &kept {
            let _ = std::fs::remove_file(bak);
        }
        return Ok(None);
    }
    drop(backup);
    drop(from);
    drop(to);
    let _ = std::fs::remove_file(new);
    Ok(Some(Swap { kept }))
}

fn check(conn: &Connection, path: &Path, pragma: &str) -> Result<(), SourceError> {
    let result: String = conn
        .query_row(&format!("PRAGMA {pragma}"), [], |r| r.get(0))
        .map_err(|e| SourceError::CheckFailed { path: path.to_path_buf(), message: e.to_string() })?;
    if result != "ok" {
        return Err(SourceError::CheckFailed { path: path.to_path_buf(), message: result });
    }
    Ok(())
}

/// Backs up a live database as one file named after it.
pub async fn backup(
    repo: &Arc<Repository>,
    db: &Path,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult, SourceError> {
    let name = db
        .file_name()
        .ok_or_else(|| SourceError::sqlite(db, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    // The copy goes to a private temporary directory: the backup API needs a
    // database file to write into.
    let tmp = std::env::temp_dir().join(format!("kura-sqlite-{:016x}", rand::random::<u64>()));
    std::fs::create_dir(&tmp).map_err(|e| SourceError::io(&tmp, e))?;
    let copy = tmp.join(&name);
    let result = async {
        let (src, dst) = (db.to_path_buf(), copy.clone());
        let catalogue = tokio::task::spawn_blocking(move || {
            copy_consistent(&src, &dst)?;
            catalogue_of(&dst)
        })
        .await
        .map_err(|e| SourceError::Refused(e.to_string()))??;
        let file = std::fs::File::open(&copy).map_err(|e| SourceError::io(&copy, e))?;
        let mut opts = opts.clone();
        opts.source = Some("sqlite".into());
        let streams = [
            Stream::new(name.clone(), Box::new(file)),
            Stream::new(CATALOGUE_FILE, Box::new(std::io::Cursor::new(catalogue.to_json()))),
        ];
        Ok(backup_stream_sequence(repo, Box::new(streams.into_iter().map(Ok)), &opts, counters).await?)
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// Rows per table and schema objects per kind (format.md §11.4), beside
/// the database in its snapshot.
pub const CATALOGUE_FILE: &str = "catalogue.json";

/// The database file of a snapshot: its one path that is not the
/// catalogue.
pub fn database_file(paths: &[String]) -> Option<&str> {
    paths.iter().map(String::as_str).find(|p| *p != CATALOGUE_FILE)
}

/// Counted in the consistent copy, so they are the rows the snapshot holds.
pub(crate) fn catalogue_of(copy: &Path) -> Result<crate::catalogue::Catalogue, SourceError> {
    let db = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| SourceError::sqlite(copy, e))?;
    let mut c = crate::catalogue::Catalogue::new();
    let listed: Vec<(String, String)> = db
        .prepare("SELECT type, name FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(|e| SourceError::sqlite(copy, e))?;
    for (kind, name) in listed {
        *c.objects.entry(kind.clone()).or_default() += 1;
        if kind == "table" {
            // A virtual table whose module this SQLite lacks cannot be
            // counted; it is left out rather than failing the backup.
            let sql = format!("SELECT count(*) FROM \"{}\"", name.replace('"', "\"\""));
            if let Ok(n) = db.query_row(&sql, [], |r| r.get::<_, i64>(0)) {
                c.rows.insert(name, n as u64);
            }
        }
    }
    Ok(c)
}

/// Where a restore went.
#[derive(Debug)]
pub struct Restored {
    pub path: PathBuf,
    pub bytes: u64,
    /// The previous database, kept beside it.
    pub kept: Option<PathBuf>,
}

/// Restores a snapshot made by [`backup`] over `dest`, safely: written beside
/// it, checked, then swapped in.
pub async fn restore(
    repo: &Repository,
    tree: Id,
    name: &str,
    dest: &Path,
    keep_old: bool,
) -> Result<Restored, SourceError> {
    let dir = dest.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(SourceError::Refused(format!("{} does not exist", dir.display())));
    }
    sweep_leftovers(dest, COMPANIONS);
    let (scratch, mut file) = Scratch::file(dest)?;
    let tmp = scratch.path.clone();
    let result = async {
        let bytes = kura_repo::restore::dump(repo, tree, name, &mut file).await?;
        file.sync_all().map_err(|e| SourceError::io(&tmp, e))?;
        drop(file);
        let t = tmp.clone();
        tokio::task::spawn_blocking(move || {
            let conn = Connection::open(&t).map_err(|e| SourceError::sqlite(&t, e))?;
            check(&conn, &t, "integrity_check")
        })
        .await
        .map_err(|e| SourceError::Refused(e.to_string()))??;
        // The restored file takes the live one's owner, group and mode: a
        // service that could write its database must still be able to (a
        // `nobody:640` database must not come back `root:644`).
        if let Ok(live) = std::fs::metadata(dest) {
            use std::os::unix::fs::{MetadataExt, PermissionsExt};
            let io = |e| SourceError::io(&tmp, e);
            std::os::unix::fs::chown(&tmp, Some(live.uid()), Some(live.gid())).or_else(|e| {
                // Not root: only a file we own can be given away, so a
                // restore by the owner keeps its own ownership anyway.
                if e.kind() == std::io::ErrorKind::PermissionDenied {
                    Ok(())
                } else {
                    Err(io(e))
                }
            })?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(live.mode() & 0o7777))
                .map_err(io)?;
        }
        let busy = COMPANIONS.iter().any(|c| with_suffix(dest, c).symlink_metadata().is_ok());
        let in_place = if busy {
            let (new, live, now) = (tmp.clone(), dest.to_path_buf(), repo.now().into());
            tokio::task::spawn_blocking(move || replace_in_place(&new, &live, keep_old, now))
                .await
                .map_err(|e| SourceError::Refused(e.to_string()))??
        } else {
            None
        };
        let swap = match in_place {
            Some(swap) => swap,
            None => Swap::replace(&tmp, dest, COMPANIONS, keep_old, repo.now().into())?,
        };
        Ok(Restored { path: dest.to_path_buf(), bytes, kept: swap.kept })
    }
    .await;
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistent_copy_while_a_writer_commits() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("live.db");
        let c = Connection::open(&db).unwrap();
        c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(a INTEGER, b INTEGER);").unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, p) = (stop.clone(), db.clone());
        // Each transaction inserts a pair summing to zero: a torn copy would
        // show a non-zero total.
        let writer = std::thread::spawn(move || {
            let c = Connection::open(&p).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut i = 0i64;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                c.execute_batch(&format!(
                    "BEGIN; INSERT INTO t VALUES({i}, 1); INSERT INTO t VALUES({}, -1); COMMIT;",
                    -i
                ))
                .unwrap();
                i += 1;
            }
            i
        });
        std::thread::sleep(Duration::from_millis(100));
        for n in 0..5 {
            let copy = d.path().join(format!("copy{n}.db"));
            copy_consistent(&db, &copy).unwrap();
            let cc = Connection::open(&copy).unwrap();
            let (sum_a, sum_b, rows): (i64, i64, i64) = cc
                .query_row("SELECT total(a), total(b), count(*) FROM t", [], |r| {
                    Ok((r.get::<_, f64>(0)? as i64, r.get::<_, f64>(1)? as i64, r.get(2)?))
                })
                .unwrap();
            assert_eq!((sum_a, sum_b), (0, 0), "copy {n} is torn");
            assert_eq!(rows % 2, 0);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(writer.join().unwrap() > 0);
    }

    #[test]
    fn not_a_database_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.db");
        std::fs::write(&p, b"this is not sqlite at all, just text that is long enough").unwrap();
        let e = copy_consistent(&p, &d.path().join("y.db")).unwrap_err().to_string();
        assert!(e.contains("x.db"), "{e}");
        let e =
            copy_consistent(&d.path().join("missing.db"), &d.path().join("z.db")).unwrap_err().to_string();
        assert!(e.contains("no such database file"), "{e}");
    }
}
