//! Kept copies: what in-place restores moved aside instead of deleting
//! (`NAME.bak-YYYYMMDD_HHMM` beside a file or folder, `NAME_bak_…`
//! databases, `kura_bak_…` schemas). They are the user's way back from a
//! wrong restore, so nothing removes them on its own; this module finds
//! them by their names, sizes them, and removes the ones a user or the
//! target's `kept_last` / `kept_within` setting lets go.
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::NaiveDateTime;

use crate::postgres::{self, PgUrl};
use crate::{mysql, SourceError};

/// Where a kept copy is.
#[derive(Debug, Clone)]
pub enum Place {
    /// A file, folder or SQLite database beside the live one.
    Path(PathBuf),
    /// A PostgreSQL database (a whole-database restore's old copy).
    PgDatabase { url: PgUrl, name: String },
    /// A PostgreSQL schema of old rows (a table restore's), in `url`'s
    /// database.
    PgSchema { url: PgUrl, name: String },
    /// A MySQL/MariaDB database holding the replaced tables.
    MyDatabase { url: String, name: String },
}

/// One kept copy.
#[derive(Debug, Clone)]
pub struct Kept {
    pub place: Place,
    /// When the restore that made it ran (local time, from its name).
    pub made: NaiveDateTime,
    /// Its place among copies made within the same minute (the `-2`, `_2`
    /// suffix; 1 without one).
    pub seq: u32,
    /// Its size, where it can be told.
    pub bytes: Option<u64>,
}

impl Kept {
    /// How a user would name it.
    pub fn name(&self) -> String {
        match &self.place {
            Place::Path(p) => p.display().to_string(),
            Place::PgDatabase { name, .. } => format!("database {name}"),
            Place::PgSchema { url, name } => format!("schema {name} in database {}", url.dbname),
            Place::MyDatabase { name, .. } => format!("database {name}"),
        }
    }
}

/// `YYYYMMDD_HHMM` at the start of `rest`, followed by nothing or by a
/// uniqueness suffix (`-2`, `_2`): the time and the suffix's number.
fn stamp_of(rest: &str) -> Option<(NaiveDateTime, u32)> {
    let stamp = rest.get(..13)?;
    let tail = &rest[13..];
    let seq = if tail.is_empty() {
        1
    } else if tail.starts_with('-') || tail.starts_with('_') {
        let n = &tail[1..];
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n.parse().ok()?
    } else {
        return None;
    };
    Some((NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M").ok()?, seq))
}

/// The name for a new kept copy `base` (`NAME.bak-STAMP`, `NAME_bak_STAMP`)
/// among `existing` names: `base` itself, or with a suffix (`sep` and a
/// number) above every one taken, never below: a copy made later must
/// sort later, or `kept_last` would let the newest go.
pub(crate) fn next_name<'a>(base: &str, sep: char, existing: impl Iterator<Item = &'a str>) -> String {
    let taken = existing
        .filter_map(|n| n.strip_prefix(base))
        .filter_map(|tail| match tail {
            "" => Some(1),
            t if t.starts_with(sep) => t[1..].parse::<u32>().ok(),
            _ => None,
        })
        .max();
    match taken {
        None => base.to_string(),
        Some(n) => format!("{base}{sep}{}", n + 1),
    }
}

/// SQLite's files beside a database, removed with it.
const COMPANIONS: &[&str] = &["-wal", "-shm", "-journal"];

/// The kept copies beside each of `paths` (files and folders targets, a
/// SQLite database).
pub fn of_paths(paths: &[PathBuf]) -> Result<Vec<Kept>, SourceError> {
    let mut out = Vec::new();
    for live in paths {
        let (Some(dir), Some(name)) = (live.parent(), live.file_name()) else { continue };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let prefix = format!("{}.bak-", name.to_string_lossy());
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(SourceError::io(dir, e)),
        };
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let Some((made, seq)) = file.strip_prefix(&prefix).and_then(stamp_of) else { continue };
            let path = entry.path();
            out.push(Kept { bytes: Some(size_of(&path)), place: Place::Path(path), made, seq });
        }
    }
    out.sort_by_key(|k| (k.made, k.seq));
    Ok(out)
}

/// Bytes under `p`, symlinks not followed.
fn size_of(p: &Path) -> u64 {
    let Ok(m) = p.symlink_metadata() else { return 0 };
    if !m.is_dir() {
        return m.len();
    }
    let mut total = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// `s` with LIKE's wildcards and escape character escaped (the default
/// escape `\` on both PostgreSQL and MariaDB), for a prefix match.
pub(crate) fn like_escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('_', "\\_").replace('%', "\\%")
}

/// The kept databases of `databases` on `url`'s server (`NAME_bak_…`), and
/// the kept schemas (`kura_bak_…`) inside each that exists.
pub fn of_postgres(url: &PgUrl, databases: &[String]) -> Result<Vec<Kept>, SourceError> {
    let admin = url.with_db("postgres");
    let mut out = Vec::new();
    for db in databases {
        let prefix = format!("{db}_bak_");
        let rows = postgres::psql(
            &admin,
            &format!(
                "SELECT datname || '|' || pg_database_size(oid) FROM pg_database WHERE datname LIKE {}",
                postgres::quote_literal(&format!("{}%", like_escape(&prefix)))
            ),
        )?;
        for row in rows.lines().filter(|l| !l.is_empty()) {
            let Some((name, size)) = row.rsplit_once('|') else { continue };
            let Some((made, seq)) = name.strip_prefix(&prefix).and_then(stamp_of) else { continue };
            out.push(Kept {
                place: Place::PgDatabase { url: url.clone(), name: name.to_string() },
                made,
                seq,
                bytes: size.parse().ok(),
            });
        }
        if !postgres::exists(&url.with_db(db))? {
            continue;
        }
        let in_db = url.with_db(db);
        let rows = postgres::psql(
            &in_db,
            "SELECT n.nspname || '|' || coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_namespace n \
             LEFT JOIN pg_class c ON c.relnamespace = n.oid AND c.relkind = 'r' \
             WHERE n.nspname LIKE 'kura\\_bak\\_%' GROUP BY n.nspname",
        )?;
        for row in rows.lines().filter(|l| !l.is_empty()) {
            let Some((name, size)) = row.rsplit_once('|') else { continue };
            let Some((made, seq)) = name.strip_prefix("kura_bak_").and_then(stamp_of) else { continue };
            out.push(Kept {
                place: Place::PgSchema { url: in_db.clone(), name: name.to_string() },
                made,
                seq,
                bytes: size.parse().ok(),
            });
        }
    }
    out.sort_by_key(|k| (k.made, k.seq));
    Ok(out)
}

/// The kept databases of a MySQL/MariaDB target (`NAME_bak_…`).
pub fn of_mysql(raw_url: &str) -> Result<Vec<Kept>, SourceError> {
    let conn = mysql::Conn::new(mysql::MyUrl::parse(raw_url)?)?;
    let prefix = format!("{}_bak_", conn.url.dbname);
    let rows = conn.query(&format!(
        "SELECT s.SCHEMA_NAME, IFNULL(SUM(t.DATA_LENGTH + t.INDEX_LENGTH), 0) FROM information_schema.SCHEMATA s \
         LEFT JOIN information_schema.TABLES t ON t.TABLE_SCHEMA = s.SCHEMA_NAME \
         WHERE s.SCHEMA_NAME LIKE {} GROUP BY s.SCHEMA_NAME",
        mysql::quote_literal(&format!("{}%", like_escape(&prefix)))
    ))?;
    let mut out = Vec::new();
    for row in rows {
        let [name, size] = &row[..] else { continue };
        let Some((made, seq)) = name.strip_prefix(&prefix).and_then(stamp_of) else { continue };
        out.push(Kept {
            place: Place::MyDatabase { url: raw_url.to_string(), name: name.clone() },
            made,
            seq,
            bytes: size.parse().ok(),
        });
    }
    out.sort_by_key(|k| (k.made, k.seq));
    Ok(out)
}

/// Which of `kept` (oldest first) to remove: beyond the newest `last`, and
/// older than `older_than` at `now`. With neither, all of them.
pub fn to_remove(
    kept: &[Kept],
    last: Option<usize>,
    older_than: Option<Duration>,
    now: NaiveDateTime,
) -> Vec<Kept> {
    let n = kept.len();
    kept.iter()
        .enumerate()
        .filter(|(i, k)| {
            let beyond_last = last.is_some_and(|l| n - i > l);
            let too_old = older_than
                .is_some_and(|d| now.signed_duration_since(k.made).to_std().is_ok_and(|age| age > d));
            (last.is_none() && older_than.is_none()) || beyond_last || too_old
        })
        .map(|(_, k)| k.clone())
        .collect()
}

/// Removes a kept copy for good.
pub fn remove(k: &Kept) -> Result<(), SourceError> {
    match &k.place {
        Place::Path(p) => {
            let m = p.symlink_metadata().map_err(|e| SourceError::io(p, e))?;
            let gone = if m.is_dir() { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
            gone.map_err(|e| SourceError::io(p, e))?;
            for c in COMPANIONS {
                let mut side = p.as_os_str().to_owned();
                side.push(c);
                let _ = std::fs::remove_file(PathBuf::from(side));
            }
            Ok(())
        }
        Place::PgDatabase { url, name } => postgres::psql(
            &url.with_db("postgres"),
            &format!("DROP DATABASE {}", postgres::quote_ident(name)),
        )
        .map(drop),
        Place::PgSchema { url, name } => {
            postgres::psql(url, &format!("DROP SCHEMA {} CASCADE", postgres::quote_ident(name))).map(drop)
        }
        Place::MyDatabase { url, name } => {
            let conn = mysql::Conn::new(mysql::MyUrl::parse(url)?)?;
            conn.exec(None, &format!("DROP DATABASE {}", mysql::quote_ident(name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_with_and_without_a_suffix() {
        let t = |s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap();
        assert_eq!(stamp_of("20261202_0705"), Some((t("2026-12-02 07:05"), 1)));
        assert_eq!(stamp_of("20261202_0705-3"), Some((t("2026-12-02 07:05"), 3)));
        assert_eq!(stamp_of("20261202_0705_12"), Some((t("2026-12-02 07:05"), 12)));
        assert_eq!(stamp_of("20261202_0705-wal"), None, "a companion is not a copy of its own");
        assert_eq!(stamp_of("2026120_0705"), None);
        assert_eq!(stamp_of("notadate_0000"), None);
    }

    #[test]
    fn like_patterns_match_a_name_literally() {
        // Unescaped, `a%b_` would also sweep `aXbY…`'s scratch copies.
        assert_eq!(like_escape("a%b_c\\d"), "a\\%b\\_c\\\\d");
    }

    #[test]
    fn a_new_name_sorts_after_every_taken_one() {
        let names = ["a.bak-1", "a.bak-1-3", "a.bak-1-wal", "b.bak-1-9"];
        assert_eq!(next_name("a.bak-1", '-', names.iter().copied()), "a.bak-1-4");
        assert_eq!(
            next_name("a.bak-1", '-', ["a.bak-1-2"].into_iter()),
            "a.bak-1-3",
            "not the freed base name"
        );
        assert_eq!(next_name("a.bak-2", '-', names.iter().copied()), "a.bak-2");
        assert_eq!(next_name("s_bak_1", '_', ["s_bak_1"].into_iter()), "s_bak_1_2");
    }

    #[test]
    fn the_newest_are_kept_and_the_old_let_go() {
        let at = |h: u32| Kept {
            place: Place::Path(PathBuf::from(format!("/x{h}"))),
            made: chrono::NaiveDate::from_ymd_opt(2026, 12, 1).unwrap().and_hms_opt(h, 0, 0).unwrap(),
            seq: 1,
            bytes: None,
        };
        let kept: Vec<Kept> = (1..=5).map(at).collect();
        let now = at(12).made;
        let names = |v: Vec<Kept>| v.into_iter().map(|k| k.name()).collect::<Vec<_>>();
        assert_eq!(names(to_remove(&kept, Some(2), None, now)), ["/x1", "/x2", "/x3"]);
        assert_eq!(
            names(to_remove(&kept, None, Some(Duration::from_secs(8 * 3600 + 1)), now)),
            ["/x1", "/x2", "/x3"]
        );
        assert_eq!(names(to_remove(&kept, Some(4), Some(Duration::from_secs(10 * 3600 + 1)), now)), ["/x1"]);
        assert_eq!(to_remove(&kept, None, None, now).len(), 5, "no rule: all of them");
        assert!(to_remove(&kept, Some(9), None, now).is_empty());
    }
}
