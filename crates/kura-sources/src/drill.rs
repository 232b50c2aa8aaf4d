//! What a restore drill asks of a scratch copy: run the user's checks in
//! it, count what it holds, and remove it. The copy itself is made by the
//! ordinary restore `--into` a scratch place, so a drill proves the very
//! path a real restore takes.
use std::path::PathBuf;

use crate::mysql::{Conn, MyUrl};
use crate::postgres::PgUrl;
use crate::SourceError;

/// A restored copy made for a drill.
#[derive(Debug, Clone)]
pub enum Scratch {
    /// A folder (files targets) or a file (SQLite, a command's output).
    Path(PathBuf),
    /// A database on the target's PostgreSQL server (`url` names it).
    Postgres(PgUrl),
    /// A database on the target's MySQL server.
    Mysql { url: String, database: String },
}

/// A check's answer: the first column of the first row, read as a truth.
fn truthy(answer: &str) -> bool {
    let a = answer.trim().to_ascii_lowercase();
    match a.as_str() {
        "t" | "true" | "yes" => true,
        "" | "f" | "false" | "no" | "null" => false,
        n => n.parse::<f64>().map(|v| v != 0.0).unwrap_or(true),
    }
}

/// Runs one check (a query whose first column says yes or no) in the
/// scratch copy; its answer, or why it could not run.
pub fn check(scratch: &Scratch, sql: &str) -> Result<(bool, String), SourceError> {
    let answer = match scratch {
        Scratch::Path(p) => {
            let db = rusqlite::Connection::open_with_flags(p, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .map_err(|e| SourceError::Refused(format!("opening {}: {e}", p.display())))?;
            let v: rusqlite::types::Value = db
                .query_row(sql, [], |r| r.get(0))
                .map_err(|e| SourceError::Refused(format!("{sql}: {e}")))?;
            match v {
                rusqlite::types::Value::Null => String::new(),
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Real(f) => f.to_string(),
                rusqlite::types::Value::Text(t) => t,
                rusqlite::types::Value::Blob(b) => (!b.is_empty()).to_string(),
            }
        }
        Scratch::Postgres(url) => crate::postgres::psql(url, sql)?
            .lines()
            .next()
            .unwrap_or("")
            .split('|')
            .next()
            .unwrap_or("")
            .to_string(),
        Scratch::Mysql { url, database } => {
            let conn = Conn::new(MyUrl::parse(url)?)?;
            let rows = conn.run(Some(database), sql)?;
            rows.first().and_then(|r| r.first()).cloned().unwrap_or_default()
        }
    };
    Ok((truthy(&answer), answer))
}

/// Tables, views, routines and triggers in a scratch database (SQLite:
/// tables, views, indexes and triggers): a copy with none is no copy.
pub fn objects(scratch: &Scratch) -> Result<u64, SourceError> {
    let sql = match scratch {
        Scratch::Path(_) => "SELECT count(*) FROM sqlite_master",
        Scratch::Postgres(_) => {
            "SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE c.relkind IN ('r','v','m','p') AND n.nspname NOT IN ('pg_catalog','information_schema')) \
             + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname NOT IN ('pg_catalog','information_schema'))"
        }
        Scratch::Mysql { .. } => {
            "SELECT (SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()) \
             + (SELECT count(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = DATABASE()) \
             + (SELECT count(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = DATABASE())"
        }
    };
    let (_, answer) = check(scratch, sql)?;
    answer.trim().parse().map_err(|_| SourceError::Refused(format!("counting objects: {answer:?}")))
}

/// Removes the scratch copy; one already gone is fine.
pub fn remove(scratch: &Scratch) -> Result<(), SourceError> {
    match scratch {
        Scratch::Path(p) => {
            let gone = match std::fs::symlink_metadata(p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
                Ok(_) => std::fs::remove_file(p),
            };
            gone.map_err(|e| SourceError::io(p, e))?;
            for companion in ["-wal", "-shm", "-journal"] {
                let mut c = p.clone().into_os_string();
                c.push(companion);
                let _ = std::fs::remove_file(PathBuf::from(c));
            }
            Ok(())
        }
        Scratch::Postgres(url) => {
            let name = crate::postgres::quote_ident(&url.dbname);
            crate::postgres::psql(
                &url.with_db("postgres"),
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .map(|_| ())
        }
        Scratch::Mysql { url, database } => {
            let conn = Conn::new(MyUrl::parse(url)?)?;
            conn.exec(None, &format!("DROP DATABASE IF EXISTS {}", crate::mysql::quote_ident(database)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_read_as_truths() {
        for yes in ["t", "true", "1", "42", "0.5", "ok"] {
            assert!(truthy(yes), "{yes}");
        }
        for no in ["f", "false", "0", "", "NULL", "0.0"] {
            assert!(!truthy(no), "{no}");
        }
    }
}
