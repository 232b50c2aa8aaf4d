//! What a restore drill asks of a scratch copy: run the user's checks in
//! it, count what it holds, and remove it. The copy itself is made by the
//! ordinary restore `--into` a scratch place, so a drill proves the very
//! path a real restore takes.
use std::path::PathBuf;

use crate::catalogue::Catalogue;
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

/// What the scratch copy holds, counted the way its source's catalogue was
/// at backup time: rows of each table the catalogue names (a table that
/// cannot be counted is left out, and so shows as missing) and schema
/// objects per kind.
pub fn measure(scratch: &Scratch, backed_up: &Catalogue) -> Result<Catalogue, SourceError> {
    let tables: Vec<&String> = backed_up.rows.keys().collect();
    let mut c = Catalogue::new();
    match scratch {
        // Counted as the backup counted its consistent copy.
        Scratch::Path(p) => return crate::sqlite::catalogue_of(p),
        Scratch::Postgres(url) => {
            for line in crate::postgres::psql(url, PG_OBJECTS)?.lines() {
                if let Some((kind, n)) = line.split_once('|') {
                    c.objects.insert(kind.to_string(), n.trim().parse().unwrap_or(0));
                }
            }
            // One query for many tables; a table that is missing fails its
            // batch, whose tables are then counted one by one.
            for batch in tables.chunks(100) {
                let quoted = |t: &str| {
                    let (schema, name) = t.split_once('.').unwrap_or(("public", t));
                    format!("{}.{}", crate::postgres::quote_ident(schema), crate::postgres::quote_ident(name))
                };
                let sql = batch
                    .iter()
                    .enumerate()
                    .map(|(i, t)| format!("SELECT {i}, count(*) FROM {}", quoted(t)))
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ");
                match crate::postgres::psql(url, &sql) {
                    Ok(out) => {
                        for line in out.lines() {
                            if let Some((i, n)) = line.split_once('|') {
                                if let (Ok(i), Ok(n)) = (i.parse::<usize>(), n.trim().parse()) {
                                    c.rows.insert(batch[i].clone(), n);
                                }
                            }
                        }
                    }
                    Err(_) => {
                        for t in batch {
                            let sql = format!("SELECT count(*) FROM {}", quoted(t));
                            if let Ok(Ok(n)) = crate::postgres::psql(url, &sql).map(|o| o.trim().parse()) {
                                c.rows.insert((*t).clone(), n);
                            }
                        }
                    }
                }
            }
        }
        Scratch::Mysql { url, database } => {
            let conn = Conn::new(MyUrl::parse(url)?)?;
            c.objects = crate::mysql::schema_objects(&conn, database)?.objects;
            for t in tables {
                let sql = format!("SELECT COUNT(*) FROM {}", crate::mysql::quote_ident(t));
                if let Ok(rows) = conn.run(Some(database), &sql) {
                    if let Some(n) = rows.first().and_then(|r| r.first()).and_then(|n| n.parse().ok()) {
                        c.rows.insert(t.clone(), n);
                    }
                }
            }
        }
    }
    Ok(c)
}

/// Schema objects of a PostgreSQL database per kind, as pg_dump's table of
/// contents names them; what extensions create is theirs, not the dump's.
const PG_OBJECTS: &str = "WITH ns AS (SELECT oid FROM pg_namespace WHERE nspname NOT IN ('pg_catalog', 'information_schema') \
    AND nspname !~ '^pg_(toast|temp)'), \
    ext AS (SELECT objid FROM pg_depend WHERE deptype = 'e') \
    SELECT k, count(x) FROM (VALUES ('table'), ('view'), ('materialized view'), ('sequence'), ('function'), \
    ('procedure'), ('aggregate'), ('trigger')) AS kinds(k) LEFT JOIN ( \
    SELECT CASE relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view' \
    WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence' END AS kind, oid AS x FROM pg_class \
    WHERE relnamespace IN (SELECT oid FROM ns) AND oid NOT IN (SELECT objid FROM ext) \
    UNION ALL SELECT CASE prokind WHEN 'f' THEN 'function' WHEN 'w' THEN 'function' WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' END, oid \
    FROM pg_proc WHERE pronamespace IN (SELECT oid FROM ns) AND oid NOT IN (SELECT objid FROM ext) \
    UNION ALL SELECT 'trigger', oid FROM pg_trigger WHERE NOT tgisinternal) AS o ON o.kind = kinds.k GROUP BY k";

/// What the restored copy lacks or has too much of, against the
/// snapshot's catalogue, one line each; empty when they agree. Kinds the
/// catalogue does not count are not compared.
pub fn differences(backed_up: &Catalogue, restored: &Catalogue) -> Vec<String> {
    let mut out = Vec::new();
    for (kind, want) in &backed_up.objects {
        let got = restored.objects.get(kind).copied().unwrap_or(0);
        if got != *want {
            out.push(format!("{got} {kind}(s) restored, {want} backed up"));
        }
    }
    if backed_up.complete {
        for (t, want) in &backed_up.rows {
            match restored.rows.get(t) {
                None => out.push(format!("table {t} is missing or cannot be read")),
                Some(got) if got != want => {
                    out.push(format!("table {t}: {got} rows restored, {want} backed up"))
                }
                Some(_) => {}
            }
        }
    }
    out
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
