//! MySQL and MariaDB through mysqldump / mariadb-dump and the command-line
//! client.
//!
//! Backup runs one dump with `--single-transaction` (a consistent view of
//! InnoDB tables without locking them) and `--routines --triggers --events`,
//! and splits it while it streams into one file per table, view, and
//! section (see [`crate::mysql_split`]); nothing touches the local disk.
//!
//! Connection settings, the password above all, reach the client tools
//! through a 0600 option file (`--defaults-extra-file`), never argv.
//!
//! Restore always loads into a fresh database first. A whole-database
//! restore then swaps the tables of the two databases in one atomic
//! `RENAME TABLE` (triggers and views, which cannot cross databases, are
//! recreated on the other side); the old tables are kept in
//! `NAME_bak_YYYYMMDD_HHMM`. A single-table restore copies the live table
//! into that database before replacing it: renaming one table across
//! databases would leave foreign keys pointing at the wrong database.
//! Either way the definitions a swap drops are first written to a journal
//! in the scratch database, so a swap killed midway is undone or finished
//! by the next restore or backup (see [`journal`]).
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use kura_format::Id;
use kura_repo::backup::{backup_stream_sequence, BackupOptions, BackupResult, Stream};
use kura_repo::{Counters, Repository};
use kura_store::percent_decode;

use crate::child::{feed, stderr_tail, Fed};
use crate::mysql_split::{PartKind, Splitter};
use crate::SourceError;

/// Where the database is, as given in a `mysql://` URL.
#[derive(Clone, Debug)]
pub struct MyUrl {
    pub user: Option<String>,
    pub password: Option<String>,
    pub host: String,
    pub port: Option<u16>,
    pub socket: Option<PathBuf>,
    pub dbname: String,
}

impl MyUrl {
    /// `mysql://user:password@host:port/db`, or `mariadb://`; a Unix socket
    /// with `?socket=/run/mysqld/mysqld.sock`.
    pub fn parse(raw: &str) -> Result<MyUrl, SourceError> {
        let bad = |why: &str| {
            SourceError::Refused(format!("mysql url: {why} (expected mysql://user@host:port/dbname)"))
        };
        let rest = raw
            .strip_prefix("mysql://")
            .or_else(|| raw.strip_prefix("mariadb://"))
            .ok_or_else(|| bad("not a mysql:// URL"))?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| bad("no database name"))?;
        let (db, query) = path.split_once('?').unwrap_or((path, ""));
        let dbname = percent_decode(db);
        if dbname.is_empty() {
            return Err(bad("no database name"));
        }
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((name, pw)) => (Some(percent_decode(name)), Some(percent_decode(pw))),
                None => (Some(percent_decode(u)), None),
            },
            None => (None, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p.parse().map_err(|_| bad("the port is not a number"))?)),
            None => (hostport.to_string(), None),
        };
        let mut socket = None;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("socket", v)) => socket = Some(PathBuf::from(percent_decode(v))),
                _ => return Err(bad(&format!("unknown option {pair:?} (known: socket)"))),
            }
        }
        Ok(MyUrl { user, password, host, port, socket, dbname })
    }

    /// The option file's `[client]` group: everything needed to connect.
    fn option_file(&self) -> Result<String, SourceError> {
        let mut s = String::from("[client]\ndefault-character-set=utf8mb4\n");
        let quote = |key: &str, v: &str| -> Result<String, SourceError> {
            if v.contains('\n') || (v.contains('"') && v.contains('\'')) {
                return Err(SourceError::Refused(format!(
                    "the MySQL {key} contains characters an option file cannot hold"
                )));
            }
            let v = v.replace('\\', "\\\\");
            Ok(if v.contains('"') { format!("{key}='{v}'\n") } else { format!("{key}=\"{v}\"\n") })
        };
        if let Some(u) = &self.user {
            s.push_str(&quote("user", u)?);
        }
        if let Some(p) = &self.password {
            s.push_str(&quote("password", p)?);
        }
        if !self.host.is_empty() {
            s.push_str(&quote("host", &self.host)?);
        }
        if let Some(p) = self.port {
            s.push_str(&format!("port={p}\n"));
        }
        if let Some(sock) = &self.socket {
            s.push_str(&quote("socket", &sock.display().to_string())?);
        }
        Ok(s)
    }
}

const TOOLS: crate::db::Tools = crate::db::Tools {
    bindir_env: "KURA_MYSQL_BINDIR",
    extra_dirs: Vec::new,
    install: "install the MariaDB or MySQL client (apt-get install mariadb-client)",
};

/// A client program, MariaDB's name first; an error says how to install it.
pub fn find_tool(names: &[&str]) -> Result<PathBuf, SourceError> {
    TOOLS.find(names)
}

const DUMP_TOOLS: &[&str] = &["mariadb-dump", "mysqldump"];
const CLIENT_TOOLS: &[&str] = &["mariadb", "mysql"];

/// Whether this client takes `--sandbox` (MariaDB's since 10.5.25, 10.6.18
/// and 10.11.8), asked once per program. In its sandbox the client refuses
/// the commands that reach the file system or a shell (`\!`, `system`,
/// `source`, `tee`, `pager`): a dump names tables and writes comments
/// verbatim, and older dump tools let a name with a newline in it start a
/// line of its own with such a command. Newer dumps enable the sandbox in
/// their first line; this covers those that do not.
fn has_sandbox(program: &std::ffi::OsStr) -> bool {
    static SEEN: std::sync::Mutex<Vec<(std::ffi::OsString, bool)>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().expect("sandbox probes");
    if let Some((_, has)) = seen.iter().find(|(p, _)| p == program) {
        return *has;
    }
    let has = Command::new(program)
        .args(["--no-defaults", "--sandbox", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    seen.push((program.to_owned(), has));
    has
}

/// A connection to one server: the option file lives as long as this does.
pub struct Conn {
    pub url: MyUrl,
    options: tempfile::NamedTempFile,
}

pub fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

pub(crate) fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''"))
}

/// Undoes the client's batch-mode escaping of one output field.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('\\') => out.push('\\'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

/// What the client said when a statement failed, for a message. In batch
/// mode MariaDB's client prints the whole failing statement between lines
/// of dashes before its `ERROR` line: for a dump's `INSERT` that is
/// megabytes of rows, so only the statement's first line is kept.
pub(crate) fn client_error(said: &str) -> String {
    const RULE: &str = "--------------";
    let lines: Vec<&str> = said.trim().lines().collect();
    let Some(at) = lines.iter().rposition(|l| l.starts_with("ERROR ")) else {
        return said.trim().to_string();
    };
    let mut error = lines[at..].join("\n");
    if error.contains("sandbox mode") {
        error += " (the dump holds a client command, such as `\\!`, that would run a program or \
                  touch a file: the client's sandbox refused it, and kura never runs one)";
    }
    let close = lines[..at].iter().rposition(|l| *l == RULE);
    let open = close.and_then(|c| lines[..c].iter().rposition(|l| *l == RULE));
    match (open, close) {
        (Some(o), Some(c)) if o + 1 < c => {
            let first = lines[o + 1].trim();
            let more = if c > o + 2 { " …" } else { "" };
            format!("{error} (in the statement: {first}{more})")
        }
        _ => error,
    }
}

/// A named lock held by a client session; dropping it ends the session.
struct HeldLock {
    child: std::process::Child,
    _stdin: Option<std::process::ChildStdin>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The name of the lock a restore holds on its scratch database while it
/// works on it. Lock names are limited to 64 characters, database names are
/// not much shorter, so the name is hashed (FNV-1a: stable across builds,
/// which matters because another kura may be the one sweeping).
fn scratch_lock(db: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in db.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("kura-restore-{h:016x}")
}

impl Conn {
    pub fn new(url: MyUrl) -> Result<Conn, SourceError> {
        // tempfile creates the file 0600: only this user can read the password.
        let mut options = tempfile::Builder::new()
            .prefix("kura-mysql-")
            .suffix(".cnf")
            .tempfile()
            .map_err(|e| SourceError::io(std::env::temp_dir(), e))?;
        options
            .write_all(url.option_file()?.as_bytes())
            .and_then(|_| options.flush())
            .map_err(|e| SourceError::io(options.path(), e))?;
        Ok(Conn { url, options })
    }

    /// The client, to load a dump: in its sandbox where it has one
    /// ([`has_sandbox`]).
    fn loader(&self) -> Result<Command, SourceError> {
        let mut cmd = self.command(CLIENT_TOOLS)?;
        if has_sandbox(cmd.get_program()) {
            cmd.arg("--sandbox");
        }
        Ok(cmd)
    }

    fn command(&self, tools: &[&str]) -> Result<Command, SourceError> {
        let mut c = Command::new(find_tool(tools)?);
        // Must be the first argument, or the tools ignore it.
        c.arg(format!("--defaults-extra-file={}", self.options.path().display()));
        Ok(c)
    }

    /// The client in batch mode, with one extra argument, its stdin and
    /// stdout piped.
    fn client(&self, extra: Option<&str>, stderr: Stdio) -> Result<std::process::Child, SourceError> {
        let mut cmd = self.command(CLIENT_TOOLS)?;
        cmd.args(["--batch", "--skip-column-names"]).args(extra);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| SourceError::Refused(format!("cannot run the MySQL client: {e}")))
    }

    /// Runs a script with the client, optionally in a database; returns the
    /// result rows (batch mode, fields unescaped).
    pub(crate) fn run(&self, db: Option<&str>, script: &str) -> Result<Vec<Vec<String>>, SourceError> {
        let database = db.map(|db| format!("--database={db}"));
        let mut child = self.client(database.as_deref(), Stdio::piped())?;
        let mut stdin = child.stdin.take().expect("piped");
        let script = script.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(script.as_bytes()));
        let out = child.wait_with_output().map_err(|e| SourceError::Refused(e.to_string()))?;
        let _ = writer.join();
        if !out.status.success() {
            return Err(SourceError::database(
                "MySQL",
                self.where_(),
                client_error(&String::from_utf8_lossy(&out.stderr)),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(unescape).collect())
            .collect())
    }

    pub(crate) fn query(&self, sql: &str) -> Result<Vec<Vec<String>>, SourceError> {
        self.run(None, sql)
    }

    /// Takes a server-side named lock in a client session kept open until
    /// the returned guard is dropped. The server releases it by itself when
    /// that session ends, however this process ends (kill -9 included).
    fn hold_lock(&self, name: &str) -> Result<HeldLock, SourceError> {
        let mut child = self.client(Some("--unbuffered"), Stdio::null())?;
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
        let mut held = HeldLock { child, _stdin: None };
        writeln!(stdin, "SELECT GET_LOCK({}, 0);", quote_literal(name))
            .map_err(|e| SourceError::Refused(format!("MySQL client: {e}")))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line)
            .map_err(|e| SourceError::Refused(format!("MySQL client: {e}")))?;
        if line.trim() != "1" {
            return Err(SourceError::Refused(format!("could not take the lock {name} at {}", self.where_())));
        }
        held._stdin = Some(stdin);
        Ok(held)
    }

    pub(crate) fn exec(&self, db: Option<&str>, script: &str) -> Result<(), SourceError> {
        self.run(db, script).map(|_| ())
    }

    /// The server, for messages (never the password).
    fn where_(&self) -> String {
        match (&self.url.socket, self.url.port) {
            (Some(s), _) => s.display().to_string(),
            (None, Some(p)) => format!("{}:{p}", self.url.host),
            (None, None) => self.url.host.clone(),
        }
    }

    fn database_exists(&self, db: &str) -> Result<bool, SourceError> {
        Ok(!self
            .query(&format!(
                "SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
                quote_literal(db)
            ))?
            .is_empty())
    }
}

/// What the snapshot records about the database beside the dump.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct DatabaseInfo {
    pub database: String,
    pub charset: String,
    pub collation: String,
    pub server: String,
    /// The tables chosen for the dump; empty for the whole database.
    #[serde(default)]
    pub tables: Vec<String>,
}

pub const INFO_FILE: &str = "database.json";
/// Rows per table and schema objects per kind (format.md §11.4).
pub const CATALOGUE_FILE: &str = "catalogue.json";

/// Checks the server answers and the database exists; returns what the
/// snapshot records about it.
pub fn preflight(conn: &Conn, tables: &[String]) -> Result<DatabaseInfo, SourceError> {
    let db = &conn.url.dbname;
    let version = conn.query("SELECT VERSION()")?;
    let server = version.first().and_then(|r| r.first()).cloned().unwrap_or_default();
    let rows = conn.query(&format!(
        "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
        quote_literal(db)
    ))?;
    let row = rows.first().filter(|r| r.len() == 2).ok_or_else(|| {
        SourceError::Refused(format!("database {db} does not exist on the MySQL server at {}", conn.where_()))
    })?;
    find_tool(DUMP_TOOLS)?;
    Ok(DatabaseInfo {
        database: db.clone(),
        charset: row[0].clone(),
        collation: row[1].clone(),
        server,
        tables: tables.to_vec(),
    })
}

/// The schema objects of the URL's database, per kind, as a drill counts
/// them in its restored copy.
pub(crate) fn schema_objects(conn: &Conn, db: &str) -> Result<crate::catalogue::Catalogue, SourceError> {
    let db = quote_literal(db);
    let rows = conn.query(&format!(
        "SELECT 'table', COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db} AND TABLE_TYPE = 'BASE TABLE' \
         UNION ALL SELECT 'view', COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {db} \
         UNION ALL SELECT 'routine', COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {db} \
         UNION ALL SELECT 'trigger', COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {db} \
         UNION ALL SELECT 'event', COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {db}"
    ))?;
    let mut c = crate::catalogue::Catalogue::new();
    for r in rows {
        if let [kind, n] = &r[..] {
            let n = n.parse().map_err(|_| SourceError::Refused(format!("counting {kind}s: {n:?}")))?;
            c.objects.insert(kind.clone(), n);
        }
    }
    Ok(c)
}

/// The dump's parts, produced as the dump streams; the child is reaped
/// (and its exit status checked) when the last part has been read.
struct DumpParts {
    splitter: Splitter<BufReader<std::process::ChildStdout>>,
    child: Option<Child>,
    stderr: Option<std::thread::JoinHandle<String>>,
    first: Option<Stream>,
    seq: usize,
    saw_footer: bool,
    tool: String,
    /// Rows counted per table part; its stream ends the snapshot.
    gathered: crate::catalogue::Gathered,
}

impl DumpParts {
    fn reap(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let status = child.wait().map_err(|e| e.to_string())?;
        let stderr = self.stderr.take().map(|h| h.join().unwrap_or_default()).unwrap_or_default();
        if !status.success() {
            return Err(format!("{} failed ({status}): {}; no snapshot was saved", self.tool, stderr.trim()));
        }
        if !self.saw_footer {
            return Err(format!(
                "{} output ended early (no closing section); no snapshot was saved",
                self.tool
            ));
        }
        Ok(())
    }
}

impl Iterator for DumpParts {
    type Item = Result<Stream, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(s) = self.first.take() {
            return Some(Ok(s));
        }
        self.child.as_ref()?;
        match self.splitter.next_part() {
            Ok(Some((kind, part))) => {
                self.saw_footer |= kind == PartKind::Footer;
                let name = kind.file_name(self.seq);
                self.seq += 1;
                let reader: Box<dyn std::io::Read + Send> = match &kind {
                    PartKind::Table(t) => Box::new(crate::catalogue::Tallied::new(
                        part,
                        Box::new(rows::InsertCounter::new(t)),
                        self.gathered.clone(),
                    )),
                    _ => Box::new(part),
                };
                Some(Ok(Stream::new(name, reader)))
            }
            // The dump is whole: its catalogue follows it.
            Ok(None) => Some(self.reap().map(|()| Stream::new(CATALOGUE_FILE, self.gathered.reader()))),
            Err(e) => {
                if let Some(c) = self.child.as_mut() {
                    let _ = c.kill();
                }
                let why = self.reap().err().unwrap_or_default();
                Some(Err(format!("reading {} output: {e}; {why}", self.tool)))
            }
        }
    }
}

impl Drop for DumpParts {
    fn drop(&mut self) {
        // A backup that failed elsewhere must not leave the dump running.
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Streams a dump of one database (or of chosen tables) into the repository.
pub async fn backup(
    repo: &Arc<Repository>,
    raw_url: &str,
    tables: &[String],
    journal_key: Option<&JournalKey>,
    opts: &BackupOptions,
    counters: Arc<Counters>,
) -> Result<BackupResult, SourceError> {
    let conn = Conn::new(MyUrl::parse(raw_url)?)?;
    let t = tables.to_vec();
    let key = journal_key.cloned();
    let (conn, info) = tokio::task::spawn_blocking(move || {
        // A restore of this database killed during its swap is finished
        // (or undone) first: a dump without its triggers would be kept
        // for as long as the backup is.
        match &key {
            Some(key) => {
                if let Err(e) = restore::sweep_scratch_databases(&conn, &conn.url.dbname, key) {
                    tracing::warn!("could not check for interrupted restores of {}: {e}", conn.url.dbname);
                }
            }
            None => tracing::warn!(
                "interrupted restores of {} are not checked for: no swap journal key",
                conn.url.dbname
            ),
        }
        let info = preflight(&conn, &t)?;
        // Read beside the dump, not inside its transaction: MariaDB's
        // DDL is not transactional anyway. A dump of chosen tables holds
        // no routines or events, and is only counted in rows.
        let objects =
            if t.is_empty() { schema_objects(&conn, &conn.url.dbname)? } else { Default::default() };
        Ok::<_, SourceError>((conn, (info, objects)))
    })
    .await
    .map_err(|e| SourceError::Refused(e.to_string()))??;
    let (info, objects) = info;
    let mut cmd = conn.command(DUMP_TOOLS)?;
    let tool = cmd.get_program().to_string_lossy().rsplit('/').next().unwrap_or("mysqldump").to_string();
    cmd.args([
        "--single-transaction",
        "--routines",
        "--triggers",
        "--events",
        "--hex-blob",
        "--quick",
        "--skip-dump-date",
        "--no-tablespaces",
        "--default-character-set=utf8mb4",
    ]);
    cmd.arg("--").arg(&conn.url.dbname).args(tables);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SourceError::Refused(format!("cannot start {tool}: {e}")))?;
    let out = child.stdout.take().expect("piped");
    let stderr = stderr_tail(child.stderr.take().expect("piped"));
    let info_json = serde_json::to_vec_pretty(&info).expect("serializable");
    let parts = DumpParts {
        splitter: Splitter::new(BufReader::with_capacity(1 << 20, out)),
        child: Some(child),
        stderr: Some(stderr),
        first: Some(Stream::new(INFO_FILE, Box::new(std::io::Cursor::new(info_json)))),
        seq: 0,
        saw_footer: false,
        tool,
        gathered: crate::catalogue::Gathered::with(objects),
    };
    let mut opts = opts.clone();
    opts.source = Some("mysql".into());
    let result = backup_stream_sequence(repo, Box::new(parts), &opts, counters).await;
    // The option file must outlive the dump, which reads it at start-up.
    drop(conn);
    Ok(result?)
}

mod journal;
mod rows;
pub use journal::JournalKey;
mod objects;
mod restore;
pub use restore::{dump_order, restore, MyRestore, MyRestored};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_passwords_out_of_argv() {
        let u = MyUrl::parse("mysql://app:p%40ss@127.0.0.1:3306/shop").unwrap();
        assert_eq!(u.user.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("p@ss"));
        assert_eq!(u.port, Some(3306));
        assert_eq!(u.dbname, "shop");
        let file = u.option_file().unwrap();
        assert!(file.contains("password=\"p@ss\""), "{file}");
        let s = MyUrl::parse("mariadb://root@localhost/app?socket=/run/mysqld/mysqld.sock").unwrap();
        assert_eq!(s.socket, Some(PathBuf::from("/run/mysqld/mysqld.sock")));
        assert!(MyUrl::parse("postgres://x/y").is_err());
        assert!(MyUrl::parse("mysql://host").is_err());
        assert!(MyUrl::parse("mysql://h/db?ssl=1").is_err());
        let q = MyUrl::parse("mysql://u:a%22b@h/db").unwrap().option_file().unwrap();
        assert!(q.contains("password='a\"b'"), "{q}");
    }

    #[test]
    fn batch_fields_unescape() {
        assert_eq!(unescape("a\\nb\\tc\\\\d"), "a\nb\tc\\d");
    }
}
