//! SQLite through its online backup API.
//!
//! Backup copies the database page by page inside one read transaction, so
//! the copy is consistent even while the application keeps writing (in WAL
//! mode writers are not even blocked). The copy is checked with
//! `PRAGMA quick_check` before it is stored. Restore writes the database
//! beside the live one, runs `PRAGMA integrity_check` on it, and swaps it in
//! together with the `-wal` and `-shm` files, keeping the old set.
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kura_format::Id;
use kura_repo::backup::{backup_stream, BackupOptions, BackupResult};
use kura_repo::{Counters, Repository};
use rusqlite::{Connection, OpenFlags};

use crate::swap::{temp_beside, Swap};
use crate::SourceError;

/// Files SQLite keeps beside a database, which belong to it.
pub const COMPANIONS: &[&str] = &["-wal", "-shm", "-journal"];

/// Copies a live database consistently to `dest` (which must not exist).
pub fn copy_consistent(src: &Path, dest: &Path) -> Result<u64, SourceError> {
    if !src.is_file() {
        return Err(SourceError::sqlite(src, "no such database file"));
    }
    let from =
        Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| SourceError::sqlite(src, e))?;
    from.busy_timeout(Duration::from_secs(60)).map_err(|e| SourceError::sqlite(src, e))?;
    let mut to = Connection::open(dest).map_err(|e| SourceError::sqlite(dest, e))?;
    {
        let backup =
            rusqlite::backup::Backup::new(&from, &mut to).map_err(|e| SourceError::sqlite(src, e))?;
        // All pages in one step: one read transaction, hence one consistent
        // state, and no restarts however busy the writers are.
        let mut waited = Duration::ZERO;
        loop {
            use rusqlite::backup::StepResult;
            match backup.step(-1).map_err(|e| SourceError::sqlite(src, e))? {
                StepResult::Done => break,
                StepResult::More => continue,
                // A writer holds an exclusive lock (rollback-journal mode):
                // wait for it, but not forever.
                _ if waited < Duration::from_secs(60) => {
                    std::thread::sleep(Duration::from_millis(50));
                    waited += Duration::from_millis(50);
                }
                _ => return Err(SourceError::sqlite(src, "database stayed locked for 60 s")),
            }
        }
    }
    check(&to, dest, "quick_check")?;
    // A self-contained file: no WAL beside it in the repository.
    to.pragma_update(None, "journal_mode", "DELETE").map_err(|e| SourceError::sqlite(dest, e))?;
    drop(to);
    std::fs::metadata(dest).map(|m| m.len()).map_err(|e| SourceError::io(dest, e))
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
        tokio::task::spawn_blocking(move || copy_consistent(&src, &dst))
            .await
            .map_err(|e| SourceError::Refused(e.to_string()))??;
        let file = std::fs::File::open(&copy).map_err(|e| SourceError::io(&copy, e))?;
        let mut opts = opts.clone();
        opts.source = Some("sqlite".into());
        Ok(backup_stream(repo, &name, Box::new(file), &opts, counters, Box::new(|| Ok(()))).await?)
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
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
    let tmp = temp_beside(dest);
    let result = async {
        let mut file = std::fs::File::create_new(&tmp).map_err(|e| SourceError::io(&tmp, e))?;
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
        let swap = Swap::replace(&tmp, dest, COMPANIONS, keep_old)?;
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
