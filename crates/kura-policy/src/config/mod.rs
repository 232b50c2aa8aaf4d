//! The config model of kura.toml: repositories (with their S3 write
//! options), targets of each type, the `[kept]` rule, and the errors that
//! name their place (`target.db.url`). Parsing lives in `parse.rs`, values
//! (durations, compression, `${VAR}` expansion) in `values.rs`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

mod check;
mod notify;
mod parse;
mod plans;
mod secrets;
mod values;
pub use secrets::literal_secrets;
use values::{de_duration, expand_value, section};

pub use check::{check, Problem, Severity};
pub use notify::{AlertRules, Channel, ChannelKind, Level};
pub use plans::Plan;
pub use values::{parse_compression, parse_duration};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{place}: environment variable {var} is not set")]
    MissingEnv { place: String, var: String },
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
    #[error("no target named {name:?} (configured: {known})")]
    UnknownTarget { name: String, known: String },
    /// A section used now names an environment variable that is not set.
    #[error("{0}")]
    Unresolved(String),
}

fn invalid(place: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { place: place.into(), message: message.into() }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub repositories: BTreeMap<String, RepositoryConfig>,
    pub targets: BTreeMap<String, Target>,
    pub plans: BTreeMap<String, Plan>,
    pub monitor: MonitorConfig,
    pub alerts: AlertRules,
    /// `[notify.NAME]` channels, by name.
    pub notify: BTreeMap<String, Channel>,
    /// Sections naming an environment variable that is not set. They do
    /// not stop the rest of the file from working: the error comes when
    /// one of them is used.
    pub unresolved: Vec<Unresolved>,
}

/// `[monitor]`: what `kura serve` answers on HTTP (health, metrics).
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// `host:port` to listen on; unset, `kura serve` does not listen.
    pub listen: Option<String>,
    /// A bearer token a request must carry (`token = "${VAR}"`, or
    /// `token_file`); unset, anyone who can connect may read.
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    /// A Pushgateway `kura run` pushes its metrics to after each run
    /// (`http://user:password@host:9091`), under job `pushgateway_job`
    /// and instance = this host.
    pub pushgateway: Option<String>,
    pub pushgateway_job: String,
    /// A node-exporter textfile `kura run` rewrites after each run.
    pub textfile: Option<PathBuf>,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig {
            listen: None,
            token: None,
            token_file: None,
            pushgateway: None,
            pushgateway_job: "kura".into(),
            textfile: None,
        }
    }
}

/// A repository or target whose `${VAR}` could not be resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Unresolved {
    /// `repository` or `target`.
    pub section: &'static str,
    pub name: String,
    /// A target's component, when the unexpanded text tells it.
    pub component: Option<String>,
    /// The missing variable and where (as [`ConfigError::MissingEnv`]).
    pub error: String,
}

/// Which kept copies (what in-place restores moved aside) to keep when a
/// restore finishes; the rest are removed. Unset keeps them all.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct KeptPolicy {
    /// At most this many, the newest.
    pub last: Option<usize>,
    /// Only those younger than this.
    pub within: Option<Duration>,
}

impl KeptPolicy {
    /// Reads `last` and `within` (with `prefix` before each key) from a
    /// table, over `base`.
    fn take(
        t: &mut toml::Table,
        place: &str,
        prefix: &str,
        base: KeptPolicy,
    ) -> Result<KeptPolicy, ConfigError> {
        let mut p = base;
        if let Some(v) = t.remove(&format!("{prefix}last")) {
            match v {
                toml::Value::Integer(n) if n >= 1 => p.last = Some(n as usize),
                _ => {
                    return Err(invalid(format!("{place}.{prefix}last"), "must be a whole number, 1 or more"))
                }
            }
        }
        if let Some(v) = t.remove(&format!("{prefix}within")) {
            let key = format!("{place}.{prefix}within");
            let toml::Value::String(s) = v else {
                return Err(invalid(key, "must be a duration like \"7d\""));
            };
            p.within = Some(parse_duration(&s).map_err(|e| invalid(key, e))?);
        }
        Ok(p)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    pub url: String,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    #[serde(default)]
    pub password_command: Option<String>,
    /// How hard to compress what is written: `auto`, `off`, `fast`, `max`
    /// or a zstd level (see [`parse_compression`]).
    #[serde(default)]
    pub compression: Option<String>,
    /// What the storage costs per GB (10^9 bytes) and month, for `kura
    /// report`'s projection and the `[alerts] budget`.
    #[serde(default)]
    pub price_per_gb_month: Option<f64>,
    /// A warning when the repository holds more than this (`50GB`).
    #[serde(default, deserialize_with = "values::de_size")]
    pub quota: Option<u64>,
    #[serde(flatten)]
    pub s3: S3Options,
}

/// S3 settings sent with every write (as the URL options of the same
/// names): server-side encryption and storage class.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct S3Options {
    /// `AES256` or `aws:kms`.
    #[serde(default)]
    pub sse: Option<String>,
    #[serde(default)]
    pub sse_kms_key_id: Option<String>,
    /// `STANDARD_IA`, `INTELLIGENT_TIERING`, ...
    #[serde(default)]
    pub storage_class: Option<String>,
}

impl S3Options {
    /// `url` with these settings added as its options (those the URL
    /// already gives win). Only `s3://` URLs take them; a local path
    /// ignores them; GCS and Azure URLs are refused.
    pub fn apply(&self, url: &str) -> Result<String, String> {
        let pairs = [
            ("sse", &self.sse),
            ("sse_kms_key_id", &self.sse_kms_key_id),
            ("storage_class", &self.storage_class),
        ];
        let set: Vec<(&str, &String)> =
            pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| (*k, v))).collect();
        if set.is_empty() {
            return Ok(url.to_string());
        }
        if !url.starts_with("s3://") {
            // A local directory (an object_store target's source, say) has
            // nothing to encrypt or tier on the server's side.
            if !url.contains("://") || url.starts_with("file://") {
                return Ok(url.to_string());
            }
            return Err(format!(
                "{} apply to s3:// URLs only (GCS and Azure take encryption keys and storage classes from the bucket's or container's defaults)",
                set.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ));
        }
        let mut out = url.to_string();
        for (k, v) in set {
            let given = url
                .split_once('?')
                .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(k)));
            if !given {
                let encoded: String = v
                    .chars()
                    .map(|c| match c {
                        '&' | '=' | '%' | '#' | '?' | ' ' => format!("%{:02X}", c as u32),
                        c => c.to_string(),
                    })
                    .collect();
                out.push(if out.contains('?') { '&' } else { '?' });
                out.push_str(&format!("{k}={encoded}"));
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    /// What part of the application it holds, for `kura restore
    /// --component`: one of [`COMPONENTS`]. Defaults by type: databases
    /// (sqlite, postgres, mysql) are `database`, the rest `data`.
    pub component: String,
    /// The repository this target backs up into (a key of `repositories`).
    pub repository: String,
    pub pre_restore: Option<String>,
    pub post_restore: Option<String>,
    /// Which of its kept copies a restore leaves behind (`kept_last`,
    /// `kept_within`, over the `[kept]` section's defaults).
    pub kept: KeptPolicy,
    /// Queries a restore drill runs in the restored copy of a database
    /// target; each must answer true (`SELECT count(*) > 0 FROM users`).
    pub checks: Vec<String>,
    /// The share of a files or object_store target's files a drill
    /// restores and checks (`sample = "10%"`), chosen afresh each drill;
    /// `None`: all of them.
    pub sample: Option<f64>,
    /// A PostgreSQL or MySQL server a drill restores into instead of the
    /// target's own (`drill_server = "postgres://drill@scratch-db/postgres"`):
    /// its host, port and credentials; the database name is the drill's.
    pub drill_server: Option<String>,
    /// This target's own objectives, beside its plans': its newest good
    /// backup no older than `rpo`, its last passing drill no slower than
    /// `rto`.
    pub rpo: Option<std::time::Duration>,
    pub rto: Option<std::time::Duration>,
    /// The average chunk size of this target's streams (`chunk_size =
    /// "64KiB"`, a power of two from 4 KiB to 4 MiB); `None`: the
    /// repository's for files, the database size for dumps (format.md
    /// §6.1).
    pub chunk_size: Option<u32>,
    pub kind: TargetKind,
}

/// The components a target may belong to.
pub const COMPONENTS: &[&str] = &["database", "configs", "data", "logs"];

#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TargetKind {
    Sqlite(SqliteTarget),
    Files(FilesTarget),
    Postgres(PostgresTarget),
    Mysql(MysqlTarget),
    Command(CommandTarget),
    ObjectStore(ObjectStoreTarget),
}

impl TargetKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            TargetKind::Sqlite(_) => "sqlite",
            TargetKind::Files(_) => "files",
            TargetKind::Postgres(_) => "postgres",
            TargetKind::Mysql(_) => "mysql",
            TargetKind::Command(_) => "command",
            TargetKind::ObjectStore(_) => "object_store",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteTarget {
    pub path: PathBuf,
}

/// One PostgreSQL database. The password comes from PGPASSWORD or
/// ~/.pgpass, or from the URL (kura then passes it by environment, never on
/// a command line).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresTarget {
    /// Where to connect; its database is the one backed up unless
    /// `databases` says otherwise.
    pub url: String,
    /// Several databases of the server, or `["*"]` for every database that
    /// accepts connections; one dump each in one snapshot.
    #[serde(default)]
    pub databases: Vec<String>,
    /// pg_dump processes at once: with more than one, each database's
    /// tables of 32 MiB and more are dumped beside it from one snapshot.
    #[serde(default = "one")]
    pub jobs: usize,
    /// Only these tables (pg_dump --table patterns).
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub exclude_tables: Vec<String>,
}

/// One MySQL or MariaDB database, whole or some of its tables. The
/// password comes from the URL or the client's own option files
/// (~/.my.cnf); kura hands it to the client tools in a 0600 option file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MysqlTarget {
    pub url: String,
    /// Only these tables.
    #[serde(default)]
    pub tables: Vec<String>,
}

/// Any program's standard output, with the program that reads it back.
/// Both run under `sh -c`. Write `$${VAR}` for a secret the shell should
/// expand from the environment, so it never appears in a process argument.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandTarget {
    pub backup: String,
    /// Reads what `backup` wrote on its standard input.
    #[serde(default)]
    pub restore: Option<String>,
    /// The file name of the output in the snapshot.
    #[serde(default = "default_output_name")]
    pub name: String,
}

/// Every object under a bucket prefix. `url` is written like a repository
/// URL (`s3://bucket/prefix?endpoint=…`, `gcs://…`, `azblob://…`, or a
/// directory). `credentials` gives this store its own access keys under the
/// names of the cloud's environment variables (`AWS_ACCESS_KEY_ID`, …), so
/// a bucket in another account than the repository's can be read; anything
/// not given there comes from the environment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectStoreTarget {
    pub url: String,
    #[serde(default)]
    pub credentials: BTreeMap<String, String>,
    #[serde(flatten)]
    pub s3: S3Options,
    /// Where an object's date is in its key, as a chrono format
    /// (`%Y-%m-%d` for `exports/daily/2025-11-03.json`): `--start` and
    /// `--end` then compare that date instead of the last-modified time.
    #[serde(default)]
    pub key_date: Option<String>,
}

/// `host`, `port`, `user` and `database` written out instead of `url`
/// become the URL they spell (`host` may be a socket directory).
fn pg_url_from_parts(t: &mut toml::Table, place: &str) -> Result<(), ConfigError> {
    const PARTS: [&str; 4] = ["host", "port", "user", "database"];
    if !PARTS.iter().any(|k| t.contains_key(*k)) {
        return Ok(());
    }
    if t.contains_key("url") {
        return Err(invalid(format!("{place}.url"), "give url, or host/port/user/database, not both"));
    }
    let mut get = |k: &str| -> Result<Option<String>, ConfigError> {
        match t.remove(k) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s)),
            Some(toml::Value::Integer(n)) if k == "port" => Ok(Some(n.to_string())),
            Some(_) => Err(invalid(format!("{place}.{k}"), "must be a string")),
        }
    };
    let (host, port, user, database) = (get("host")?, get("port")?, get("user")?, get("database")?);
    let database =
        database.ok_or_else(|| invalid(format!("{place}.database"), "is needed with host/port/user"))?;
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    let mut url = String::from("postgres://");
    if let Some(u) = &user {
        url.push_str(&enc(u));
        url.push('@');
    }
    let socket = host.as_deref().filter(|h| h.starts_with('/'));
    if let Some(h) = host.as_deref().filter(|h| !h.starts_with('/')) {
        url.push_str(h);
    }
    if let Some(p) = &port {
        url.push(':');
        url.push_str(p);
    }
    url.push('/');
    url.push_str(&enc(&database));
    if let Some(dir) = socket {
        url.push_str("?host=");
        url.push_str(&enc(dir));
    }
    t.insert("url".into(), toml::Value::String(url));
    Ok(())
}

fn one() -> usize {
    1
}

fn default_output_name() -> String {
    "output".to_string()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesTarget {
    pub paths: Vec<PathBuf>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Only files modified this recently, e.g. "24h" (log folders).
    #[serde(default, deserialize_with = "de_duration")]
    pub changed_within: Option<Duration>,
    #[serde(default)]
    pub one_file_system: bool,
}

impl Config {
    /// Reads a config file.
    /// Reads and parses the config file at `path`; returns its text too,
    /// for checks on what is written in it ([`literal_secrets`]).
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<(Config, String), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let config = parse::parse_named(&text, &path.display().to_string(), env)?;
        Ok((config, text))
    }

    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        parse::parse_named(text, "kura.toml", env)
    }

    pub fn target(&self, name: &str) -> Result<&Target, ConfigError> {
        if let Some(u) = self.unresolved_named("target", name) {
            return Err(ConfigError::Unresolved(u.error.clone()));
        }
        let t = self.targets.get(name).ok_or_else(|| ConfigError::UnknownTarget {
            name: name.to_string(),
            known: join(
                self.targets
                    .keys()
                    .chain(self.unresolved.iter().filter(|u| u.section == "target").map(|u| &u.name)),
            ),
        })?;
        if let Some(u) = self.unresolved_named("repository", &t.repository) {
            return Err(ConfigError::Unresolved(u.error.clone()));
        }
        Ok(t)
    }

    /// The section `section.name` if its variables could not be resolved.
    pub fn unresolved_named(&self, section: &str, name: &str) -> Option<&Unresolved> {
        self.unresolved.iter().find(|u| u.section == section && u.name == name)
    }
}

fn join<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.map(String::as_str).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests;
