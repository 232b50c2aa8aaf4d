//! PostgreSQL through pg_dump and pg_restore.
//!
//! Backup streams `pg_dump --format=custom --compress=0` straight into the
//! repository: no temporary file, no double disk space, and kura's own
//! compression and dedup do the work (pg_dump's compression would defeat
//! dedup). The custom format keeps single-table restore possible with
//! pg_restore. Passwords never reach argv: a password in the URL is moved
//! into PGPASSWORD for the child; otherwise libpq's own PGPASSWORD or
//! ~/.pgpass apply.
//!
//! Restore never touches the live database until the new one is complete:
//! it is restored into a fresh database, and only then are the names
//! swapped, the old database kept as `NAME_bak_YYYYMMDD_HHMM`.
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use kura_format::Id;
use kura_repo::backup::{backup_stream_set, BackupOptions, BackupResult, Stream};
use kura_repo::{Counters, Repository};
use serde::{Deserialize, Serialize};

use kura_store::percent_decode;

use crate::catalogue::{Gathered, Tallied};
use crate::child::{feed, stderr_tail, Fed};
use crate::SourceError;

mod archive;
mod database;
mod load;
use database::DatabaseLevel;

/// A libpq URL split into what may go on a command line and what may not.
#[derive(Clone, Debug)]
pub struct PgUrl {
    /// The URL without its password.
    pub url: String,
    pub password: Option<String>,
    pub dbname: String,
}

impl PgUrl {
    pub fn parse(raw: &str) -> Result<PgUrl, SourceError> {
        let bad = |why: &str| {
            SourceError::Refused(format!("postgres url: {why} (expected postgres://user@host:port/dbname)"))
        };
        let rest = raw
            .strip_prefix("postgres://")
            .or_else(|| raw.strip_prefix("postgresql://"))
            .ok_or_else(|| bad("not a postgres:// URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no database name"))?;
        let dbname = path.split(['?', '#']).next().unwrap_or("").to_string();
        if dbname.is_empty() {
            return Err(bad("no database name"));
        }
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, mut password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, pw)) => (Some(name), Some(percent_decode(pw))),
                None => (Some(u), None),
            },
            None => (None, None),
        };
        // `?password=` is libpq's other place for it: taken out too, so the
        // URL that reaches the tools' arguments and any message holds none.
        let (db_part, query) = match path.split_once('?') {
            Some((d, q)) => (d, Some(q)),
            None => (path, None),
        };
        let mut kept_params = Vec::new();
        for kv in query.unwrap_or("").split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some((k, v)) if k.eq_ignore_ascii_case("password") => password = Some(percent_decode(v)),
                _ => kept_params.push(kv),
            }
        }
        let mut url = String::from("postgresql://");
        if let Some(u) = user {
            url.push_str(u);
            url.push('@');
        }
        url.push_str(host);
        url.push('/');
        url.push_str(db_part);
        if !kept_params.is_empty() {
            url.push('?');
            url.push_str(&kept_params.join("&"));
        }
        Ok(PgUrl { url, password, dbname: percent_decode(&dbname) })
    }

    /// The same server, another database.
    pub fn with_db(&self, db: &str) -> PgUrl {
        let (base, tail) = self.url.split_at(self.url.find("://").map(|i| i + 3).unwrap_or(0));
        let (authority, path) = tail.split_once('/').unwrap_or((tail, ""));
        let query = path.split_once('?').map(|(_, q)| format!("?{q}")).unwrap_or_default();
        PgUrl {
            url: format!("{base}{authority}/{db}{query}"),
            password: self.password.clone(),
            dbname: db.to_string(),
        }
    }

    fn command(&self, tool: &str) -> Result<Command, SourceError> {
        let mut c = Command::new(find_tool(tool)?);
        if let Some(p) = &self.password {
            c.env("PGPASSWORD", p);
        }
        // Never wait for a password prompt in a scheduled job.
        c.arg("--no-password");
        Ok(c)
    }
}

/// Where PostgreSQL's client programs are: Debian keeps the versioned ones
/// in /usr/lib/postgresql/N/bin, and the newest is the best client for any
/// server.
const TOOLS: crate::db::Tools = crate::db::Tools {
    bindir_env: "KURA_PG_BINDIR",
    extra_dirs: || {
        let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .map(|rd| rd.flatten().map(|e| e.path().join("bin")).collect())
            .unwrap_or_default();
        versions.sort();
        versions.reverse();
        versions
    },
    install: "install the PostgreSQL client (apt-get install postgresql-client)",
};

/// A PostgreSQL client program, or an error saying how to install it.
pub fn find_tool(name: &str) -> Result<PathBuf, SourceError> {
    TOOLS.find(&[name])
}

/// Runs psql with one SQL command; returns its unaligned output.
pub(crate) fn psql(url: &PgUrl, sql: &str) -> Result<String, SourceError> {
    let out = url
        .command("psql")?
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &url.url, "-c", sql])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| SourceError::Refused(format!("cannot run psql: {e}")))?;
    if !out.status.success() {
        return Err(SourceError::database(
            "PostgreSQL",
            &url.url,
            String::from_utf8_lossy(&out.stderr).trim(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn major_of_tool(tool: &str) -> Result<u32, SourceError> {
    let out = Command::new(find_tool(tool)?)
        .arg("--version")
        .output()
        .map_err(|e| SourceError::Refused(format!("cannot run {tool}: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.split('.').next().and_then(|m| m.parse().ok()))
        .ok_or_else(|| SourceError::Refused(format!("cannot read the version of {tool} from {text:?}")))
}

/// Checks the server is reachable and pg_dump can dump it.
pub fn preflight(url: &PgUrl) -> Result<u32, SourceError> {
    let server: u32 = psql(url, "SHOW server_version_num")?
        .parse()
        .map_err(|_| SourceError::Refused("unexpected answer to SHOW server_version_num".into()))?;
    let server_major = server / 10000;
    let client_major = major_of_tool("pg_dump")?;
    if client_major < server_major {
        return Err(SourceError::Refused(format!(
            "pg_dump {client_major} cannot dump a PostgreSQL {server_major} server: install postgresql-client-{server_major}"
        )));
    }
    Ok(server_major)
}

/// Starts pg_dump of one database; the stream's check vetoes the snapshot
/// if pg_dump fails.
fn dump_stream(
    url: &PgUrl,
    name: String,
    extra: &[String],
    tables: &[String],
    exclude_tables: &[String],
    gathered: &Gathered,
) -> Result<Stream, SourceError> {
    let mut cmd = url.command("pg_dump")?;
    cmd.args(["--format=custom", "--compress=0", "--dbname", &url.url]);
    cmd.args(extra);
    for t in tables {
        cmd.args(["--table", t]);
    }
    for t in exclude_tables {
        cmd.args(["--exclude-table", t]);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Refused(format!("cannot start pg_dump: {e}")))?;
    let out = child.stdout.take().expect("piped");
    let err = stderr_tail(child.stderr.take().expect("piped"));
    let db = url.dbname.clone();
    let mut dump = Stream::new(
        name,
        Box::new(Tallied::new(out, Box::new(archive::ArchiveCounter::new()), gathered.clone())),
    );
    dump.finish = Box::new(move || {
        let status = child.wait().map_err(|e| e.to_string())?;
        let stderr = err.join().unwrap_or_default();
        if status.success() {
            Ok(())
        } else {
            Err(format!("pg_dump of {db} failed ({status}): {}; no snapshot was saved", stderr.trim()))
        }
    });
    Ok(dump)
}

/// The databases a target names: the URL's own when `databases` is empty,
/// every database that accepts connections for `["*"]`, else the list.
pub fn databases_of(url: &PgUrl, databases: &[String]) -> Result<Vec<String>, SourceError> {
    match databases {
        [] => Ok(vec![url.dbname.clone()]),
        [all] if all == "*" => {
            let list = psql(
                url,
                "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
            )?;
            Ok(list.lines().map(str::to_string).filter(|d| !d.is_empty()).collect())
        }
        list => Ok(list.to_vec()),
    }
}

/// What to dump from a PostgreSQL server.
#[derive(Clone, Copy, Debug)]
pub struct PgSource<'a> {
    /// libpq URL; its database is the one dumped when `databases` is empty.
    pub url: &'a str,
    /// More databases, or `["*"]` for all that accept connections.
    pub databases: &'a [String],
    /// pg_dump `--table` / `--exclude-table` patterns.
    pub tables: &'a [String],
    pub exclude_tables: &'a [String],
    /// pg_dump processes at once (format.md §11.1).
    pub jobs: usize,
}

/// Streams pg_dump of each database into one snapshot, one after the
/// other (`DB.pgdump` each), then the server's roles and tablespaces.
pub async fn backup(
    repo: &Arc<Repository>,
    what: &PgSource<'_>,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult, SourceError> {
    let PgSource { url: raw_url, databases, tables, exclude_tables, jobs } = *what;
    let url = PgUrl::parse(raw_url)?;
    let u = url.clone();
    let wanted = databases.to_vec();
    let (dbs, globals) = tokio::task::spawn_blocking(move || {
        preflight(&u)?;
        let dbs = databases_of(&u, &wanted)?;
        // Roles and tablespaces live outside the databases; they are small
        // and held in memory.
        let globals = globals(&u);
        Ok::<_, SourceError>((dbs, globals))
    })
    .await
    .map_err(|e| SourceError::Refused(e.to_string()))??;
    if dbs.is_empty() {
        return Err(SourceError::Refused(format!("no database to back up on {}", url.url)));
    }
    let (tables, excludes) = (tables.to_vec(), exclude_tables.to_vec());
    let jobs = jobs.max(1);
    // A database's large tables are dumped on their own (format.md §11.1),
    // all from one exported snapshot held until the end, so that a restore
    // loads them side by side and one table's edits never shift another's
    // chunks. With one job, each pg_dump starts only when the one before it
    // has been read to its end, so one dump runs at a time. A target
    // limited to some tables is dumped whole, in one pg_dump that applies
    // its limits.
    // The holders outlive the stream iterator, which is dropped as soon as
    // it runs dry, before the last pg_dump may have imported its snapshot.
    let holders: Arc<std::sync::Mutex<Vec<SnapshotHolder>>> = Arc::default();
    let held = holders.clone();
    type Start = Box<dyn FnOnce() -> Result<Stream, String> + Send>;
    let dumps = dbs.into_iter().flat_map(move |db| {
        let db_url = url.with_db(&db);
        let plan = if !tables.is_empty() || !excludes.is_empty() {
            Ok(None)
        } else {
            match parallel_plan(&db_url, &held) {
                // A server that cannot export a snapshot (an old standby)
                // still gets one consistent dump, if no jobs were asked for.
                Err(e) if jobs == 1 => {
                    tracing::warn!(database = %db, "large tables dumped with the rest: {e}");
                    Ok(None)
                }
                plan => plan,
            }
        };
        // Every stream of this database adds its counts; the catalogue's
        // own stream comes after them all (format.md §11.4).
        let gathered = Gathered::new();
        let g = gathered.clone();
        // Each pg_dump starts when its stream is asked for, so no more than
        // `jobs` run at once.
        let streams: Vec<Start> = match plan {
            Err(e) => {
                let e = e.to_string();
                vec![Box::new(move || Err(e))]
            }
            Ok(None) => {
                let (tables, excludes, db) = (tables.clone(), excludes.clone(), db.clone());
                vec![Box::new(move || {
                    dump_stream(&db_url, format!("{db}.pgdump"), &[], &tables, &excludes, &g)
                        .map_err(|e| e.to_string())
                })]
            }
            Ok(Some((snapshot, parts))) => {
                let manifest = Parts {
                    version: 1,
                    parts: parts
                        .iter()
                        .enumerate()
                        .map(|(i, t)| Part { file: format!("{i:03}.pgdump"), table: t.clone() })
                        .collect(),
                };
                let json = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
                let name = format!("{db}.parts/{PARTS}");
                let mut out: Vec<Start> =
                    vec![Box::new(move || Ok(Stream::new(name, Box::new(std::io::Cursor::new(json)))))];
                let mut main = vec![format!("--snapshot={snapshot}")];
                main.extend(parts.iter().map(|t| format!("--exclude-table-data={t}")));
                let (u, name, gm) = (db_url.clone(), format!("{db}.pgdump"), g.clone());
                out.push(Box::new(move || {
                    dump_stream(&u, name, &main, &[], &[], &gm).map_err(|e| e.to_string())
                }));
                for p in manifest.parts {
                    let extra = [format!("--snapshot={snapshot}"), "--data-only".to_string()];
                    let (u, name, gp) = (db_url.clone(), format!("{db}.parts/{}", p.file), g.clone());
                    out.push(Box::new(move || {
                        dump_stream(&u, name, &extra, std::slice::from_ref(&p.table), &[], &gp)
                            .map_err(|e| e.to_string())
                    }));
                }
                out
            }
        };
        let mut streams = streams;
        let name = catalogue_file(&db);
        streams.push(Box::new(move || Ok(Stream::new(name, gathered.reader()))));
        streams
    });
    let dumps = dumps.map(|start| start());
    let tail = match globals {
        Ok(sql) => Some(Ok(Stream::new("globals.sql", Box::new(std::io::Cursor::new(sql))))),
        Err(e) => {
            tracing::warn!("roles and tablespaces not captured: {e}");
            None
        }
    };
    let mut opts = opts.clone();
    opts.source = Some("postgres".into());
    let result = backup_stream_set(repo, Box::new(dumps.chain(tail)), jobs, &opts, counters).await;
    drop(holders);
    Ok(result?)
}

/// The manifest of a database dumped in parts (format.md §11.1).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Parts {
    pub version: u32,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Part {
    pub file: String,
    /// `schema.table`, quoted where SQL needs it.
    pub table: String,
}

const PARTS: &str = "parts.json";

/// Where a database's catalogue is in the snapshot (format.md §11.4).
pub fn catalogue_file(db: &str) -> String {
    format!("{db}.catalogue.json")
}
/// Tables at least this large are dumped on their own.
const PART_MIN_BYTES: u64 = 32 << 20;

/// A session holding a transaction whose snapshot other sessions import
/// (`pg_dump --snapshot`); the snapshot lives as long as the holder.
struct SnapshotHolder {
    child: std::process::Child,
    _stdin: std::process::ChildStdin,
}

impl Drop for SnapshotHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A psql session reading statements from its standard input (all three
/// standard streams piped), stopping at the first error.
fn psql_session(url: &PgUrl, extra: &[&str]) -> Result<std::process::Child, SourceError> {
    url.command("psql")?
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .args(extra)
        .args(["--dbname", &url.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Refused(format!("cannot start psql: {e}")))
}

/// The large tables of a database and a snapshot to dump them from; `None`
/// when no table is large enough to be worth a part of its own. Sizes are
/// the planner's page counts, as pg_dump -j orders its tables by: reading
/// them takes no lock, so a table locked by the application does not stop
/// the plan (pg_dump then waits for it, as it would anyway).
fn parallel_plan(
    url: &PgUrl,
    holders: &std::sync::Mutex<Vec<SnapshotHolder>>,
) -> Result<Option<(String, Vec<String>)>, SourceError> {
    let big = psql(
        url,
        &format!(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             LEFT JOIN pg_class t ON t.oid = c.reltoastrelid \
             WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast' \
             AND (c.relpages::bigint + coalesce(t.relpages, 0)) * current_setting('block_size')::bigint >= {PART_MIN_BYTES} \
             ORDER BY c.relpages::bigint + coalesce(t.relpages, 0) DESC, 1"
        ),
    )?;
    let parts: Vec<String> = big.lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    if parts.is_empty() {
        return Ok(None);
    }
    use std::io::{BufRead, Write};
    let mut child = psql_session(url, &["-A", "-t"])?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let err = stderr_tail(child.stderr.take().expect("piped"));
    stdin
        .write_all(b"BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;\nSELECT pg_export_snapshot();\n")
        .and_then(|_| stdin.flush())
        .map_err(|e| SourceError::Refused(format!("psql: {e}")))?;
    let mut line = String::new();
    let _ = out.read_line(&mut line);
    let snapshot = line.trim().to_string();
    if snapshot.is_empty() {
        drop(stdin);
        let _ = child.wait();
        return Err(SourceError::Refused(format!(
            "cannot export a snapshot from {}: {}",
            url.url,
            err.join().unwrap_or_default().trim()
        )));
    }
    holders.lock().expect("holders lock").push(SnapshotHolder { child, _stdin: stdin });
    Ok(Some((snapshot, parts)))
}

/// `pg_dumpall --globals-only`; without superuser rights role passwords
/// cannot be read, and the roles are captured without them.
fn globals(url: &PgUrl) -> Result<Vec<u8>, SourceError> {
    let run = |extra: &[&str]| -> Result<std::process::Output, SourceError> {
        url.command("pg_dumpall")?
            .args(["--globals-only", "--dbname", &url.url])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| SourceError::Refused(format!("cannot run pg_dumpall: {e}")))
    };
    let out = run(&[])?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let retry = run(&["--no-role-passwords"])?;
    if retry.status.success() {
        tracing::warn!("role passwords not captured (pg_dumpall needs a superuser for them)");
        return Ok(retry.stdout);
    }
    Err(SourceError::Refused(format!("pg_dumpall failed: {}", String::from_utf8_lossy(&retry.stderr).trim())))
}

#[derive(Debug)]
pub struct PgRestored {
    pub database: String,
    pub bytes: u64,
    /// The previous database, renamed.
    pub kept: Option<String>,
    /// Sessions on the live database ended so that it could be renamed.
    pub sessions_ended: u64,
    /// Database-level statements of the dump this server refused (a
    /// per-role setting without the right to set it, say): the data is
    /// restored, these settings are not.
    pub warnings: Vec<String>,
}

/// How [`restore`] restores.
#[derive(Clone, Copy, Debug, Default)]
pub struct PgRestore<'a> {
    /// A new database to restore into, the live one untouched.
    pub into: Option<&'a str>,
    /// Only these tables.
    pub tables: &'a [String],
    /// Keep the replaced database as `NAME_bak_YYYYMMDD_HHMM`.
    pub keep_old: bool,
    /// Give every object to the restoring user, grant nothing: for a server
    /// that lacks the dump's roles.
    pub no_owner: bool,
}

/// A kept copy's name from `base`, above every one taken in `catalog`.
fn kept_name(url: &PgUrl, catalog: &str, column: &str, base: &str) -> Result<String, SourceError> {
    let pattern = format!("{}%", crate::kept::like_escape(base));
    let taken = psql(
        url,
        &format!("SELECT {column} FROM {catalog} WHERE {column} LIKE {}", quote_literal(&pattern)),
    )?;
    Ok(crate::kept::next_name(base, '_', taken.lines()))
}

/// Whether `url`'s database exists.
pub fn exists(url: &PgUrl) -> Result<bool, SourceError> {
    let found = psql(
        &url.with_db("postgres"),
        &format!("SELECT 1 FROM pg_database WHERE datname = {}", quote_literal(&url.dbname)),
    )?;
    Ok(found == "1")
}

/// Sessions connected to `url`'s database now, other than ours: a swap
/// ends them.
pub fn sessions(url: &PgUrl) -> Result<u64, SourceError> {
    let n = psql(
        &url.with_db("postgres"),
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()",
            quote_literal(&url.dbname)
        ),
    )?;
    Ok(n.parse().unwrap_or(0))
}

pub(crate) fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

mod restore;
pub use restore::{restore, restore_tables_in_place};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_in_the_query_is_taken_out_of_the_url() {
        let u =
            PgUrl::parse("postgres://app@db:5432/shop?sslmode=require&password=s%40cret&application_name=x")
                .unwrap();
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.url, "postgresql://app@db:5432/shop?sslmode=require&application_name=x");
        assert!(!u.with_db("other").url.contains("cret"));
    }

    #[test]
    fn passwords_leave_the_url() {
        let u = PgUrl::parse("postgres://app:s3cr%40t@127.0.0.1:5432/shop?sslmode=disable").unwrap();
        assert_eq!(u.url, "postgresql://app@127.0.0.1:5432/shop?sslmode=disable");
        assert_eq!(u.password.as_deref(), Some("s3cr@t"));
        assert_eq!(u.dbname, "shop");
        assert_eq!(u.with_db("postgres").url, "postgresql://app@127.0.0.1:5432/postgres?sslmode=disable");
        assert!(PgUrl::parse("mysql://x/y").is_err());
        assert!(PgUrl::parse("postgres://host").is_err());
    }
}
