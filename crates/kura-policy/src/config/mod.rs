use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

mod secrets;
mod values;
pub use secrets::literal_secrets;
use values::{de_duration, expand_value, section};
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
    /// Sections naming an environment variable that is not set. They do
    /// not stop the rest of the file from working: the error comes when
    /// one of them is used.
    pub unresolved: Vec<Unresolved>,
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
        let config = Config::parse_named(&text, &path.display().to_string(), env)?;
        Ok((config, text))
    }

    pub fn parse(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        Config::parse_named(text, "kura.toml", env)
    }

    fn parse_named(
        text: &str,
        name: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut root: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
            path: name.to_string(),
            message: e.to_string(),
        })?;
        for key in root.keys() {
            if key != "repository" && key != "target" && key != "kept" {
                return Err(invalid(key.as_str(), "unknown section (known: repository, target, kept)"));
            }
        }
        let kept_default = match root.remove("kept") {
            None => KeptPolicy::default(),
            Some(toml::Value::Table(mut t)) => {
                let p = KeptPolicy::take(&mut t, "kept", "", KeptPolicy::default())?;
                if let Some(k) = t.keys().next() {
                    return Err(invalid(format!("kept.{k}"), "unknown key (known: last, within)"));
                }
                p
            }
            Some(_) => return Err(invalid("kept", "must be a table (last = 3, within = \"30d\")")),
        };
        let mut repositories = BTreeMap::new();
        let mut unresolved = Vec::new();
        if let Some(v) = root.remove("repository") {
            let toml::Value::Table(t) = v else {
                return Err(invalid("repository", "must be a table of repositories"));
            };
            for (rname, mut v) in t {
                let place = format!("repository.{rname}");
                match expand_value(&mut v, &place, env) {
                    Err(e @ ConfigError::MissingEnv { .. }) => {
                        let error = e.to_string();
                        unresolved.push(Unresolved {
                            section: "repository",
                            name: rname,
                            component: None,
                            error,
                        });
                        continue;
                    }
                    other => other?,
                }
                let toml::Value::Table(t) = v else { return Err(invalid(place, "must be a table")) };
                let repo: RepositoryConfig = section(&place, t)?;
                if repo.password_file.is_some() && repo.password_command.is_some() {
                    return Err(invalid(place, "give password_file or password_command, not both"));
                }
                if let Some(c) = &repo.compression {
                    parse_compression(c).map_err(|e| invalid(format!("{place}.compression"), e))?;
                }
                repositories.insert(rname, repo);
            }
        }
        let mut targets = BTreeMap::new();
        if let Some(v) = root.remove("target") {
            let toml::Value::Table(t) = v else {
                return Err(invalid("target", "must be a table of targets"));
            };
            for (tname, mut v) in t {
                let place = format!("target.{tname}");
                // Its component, as far as the unexpanded text tells.
                let raw_component = match (
                    v.get("component").and_then(|c| c.as_str()),
                    v.get("type").and_then(|t| t.as_str()),
                ) {
                    (Some(c), _) if !c.contains("${") => Some(c.to_string()),
                    (None, Some("sqlite" | "postgres" | "postgresql" | "mysql" | "mariadb")) => {
                        Some("database".into())
                    }
                    (None, Some(t)) if !t.contains("${") => Some("data".into()),
                    _ => None,
                };
                match expand_value(&mut v, &place, env) {
                    Err(e @ ConfigError::MissingEnv { .. }) => {
                        let error = e.to_string();
                        unresolved.push(Unresolved {
                            section: "target",
                            name: tname,
                            component: raw_component,
                            error,
                        });
                        continue;
                    }
                    other => other?,
                }
                let toml::Value::Table(mut t) = v else { return Err(invalid(place, "must be a table")) };
                let kind_name = match t.remove("type") {
                    Some(toml::Value::String(s)) => s,
                    Some(_) => return Err(invalid(format!("{place}.type"), "must be a string")),
                    None => {
                        return Err(invalid(
                            &place,
                            "missing `type` (sqlite, files, postgres, mysql, command, object_store)",
                        ))
                    }
                };
                let take = |t: &mut toml::Table, key: &str| -> Result<Option<String>, ConfigError> {
                    match t.remove(key) {
                        None => Ok(None),
                        Some(toml::Value::String(s)) => Ok(Some(s)),
                        Some(_) => Err(invalid(format!("{place}.{key}"), "must be a string")),
                    }
                };
                let repository = take(&mut t, "repository")?;
                let pre_restore = take(&mut t, "pre_restore")?;
                let post_restore = take(&mut t, "post_restore")?;
                let component = take(&mut t, "component")?;
                let kept = KeptPolicy::take(&mut t, &place, "kept_", kept_default)?;
                if let Some(c) = &component {
                    if !COMPONENTS.contains(&c.as_str()) {
                        return Err(invalid(
                            format!("{place}.component"),
                            format!("unknown component {c:?} (known: {})", COMPONENTS.join(", ")),
                        ));
                    }
                }
                let kind = match kind_name.as_str() {
                    "sqlite" => TargetKind::Sqlite(section(&place, t)?),
                    "postgres" | "postgresql" => {
                        let mut t = t;
                        pg_url_from_parts(&mut t, &place)?;
                        let p: PostgresTarget = section(&place, t)?;
                        let many = p.databases.len() > 1 || p.databases.iter().any(|d| d == "*");
                        if many && !(p.tables.is_empty() && p.exclude_tables.is_empty()) {
                            return Err(invalid(
                                format!("{place}.tables"),
                                "table lists apply to one database; make a target per database",
                            ));
                        }
                        if p.jobs == 0 || p.jobs > 64 {
                            return Err(invalid(format!("{place}.jobs"), "must be between 1 and 64"));
                        }
                        if p.jobs > 1 && !(p.tables.is_empty() && p.exclude_tables.is_empty()) {
                            return Err(invalid(
                                format!("{place}.jobs"),
                                "parallel dumps take whole databases; drop tables and exclude_tables, or jobs",
                            ));
                        }
                        if p.databases.iter().any(|d| d.is_empty() || (d == "*" && p.databases.len() > 1)) {
                            return Err(invalid(
                                format!("{place}.databases"),
                                "names databases, or is [\"*\"] for all of them",
                            ));
                        }
                        TargetKind::Postgres(p)
                    }
                    "mysql" | "mariadb" => TargetKind::Mysql(section(&place, t)?),
                    "command" => {
                        let c: CommandTarget = section(&place, t)?;
                        if c.name.is_empty() || c.name.contains('/') || c.name == "." || c.name == ".." {
                            return Err(invalid(format!("{place}.name"), "must be a plain file name"));
                        }
                        TargetKind::Command(c)
                    }
                    "object_store" => {
                        let o: ObjectStoreTarget = section(&place, t)?;
                        if o.url.is_empty() {
                            return Err(invalid(format!("{place}.url"), "must name a bucket prefix or directory"));
                        }
                        if let Some(f) = &o.key_date {
                            // A format that cannot read back what it writes
                            // would match no key.
                            let sample = chrono::NaiveDate::from_ymd_opt(2025, 11, 3)
                                .and_then(|d| d.and_hms_opt(4, 5, 6))
                                .expect("a valid date");
                            let items = chrono::format::StrftimeItems::new(f);
                            let valid = !items.clone().any(|i| matches!(i, chrono::format::Item::Error));
                            let text = valid.then(|| sample.format_with_items(items).to_string());
                            let reads = text.as_deref().is_some_and(|t| {
                                chrono::NaiveDateTime::parse_from_str(t, f).is_ok()
                                    || chrono::NaiveDate::parse_from_str(t, f).is_ok()
                            });
                            if !reads {
                                return Err(invalid(
                                    format!("{place}.key_date"),
                                    format!("{f:?} is not a date format that names a day (e.g. \"%Y-%m-%d\" or \"%Y%m%d\")"),
                                ));
                            }
                        }
                        TargetKind::ObjectStore(o)
                    }
                    "files" => {
                        let f: FilesTarget = section(&place, t)?;
                        if f.paths.is_empty() {
                            return Err(invalid(format!("{place}.paths"), "needs at least one path"));
                        }
                        TargetKind::Files(f)
                    }
                    other => {
                        return Err(invalid(
                            format!("{place}.type"),
                            format!(
                            "unknown target type {other:?} (known: sqlite, files, postgres, mysql, command, object_store)"
                        ),
                        ))
                    }
                };
                let repository = match repository {
                    Some(r) => r,
                    None if repositories.len() == 1 => repositories.keys().next().expect("one").clone(),
                    None => "main".to_string(),
                };
                let waiting = unresolved.iter().any(|u| u.section == "repository" && u.name == repository);
                if !repositories.is_empty() && !repositories.contains_key(&repository) && !waiting {
                    return Err(invalid(
                        format!("{place}.repository"),
                        format!(
                            "no repository named {repository:?} (configured: {})",
                            join(repositories.keys())
                        ),
                    ));
                }
                let component = component.unwrap_or_else(|| {
                    match kind {
                        TargetKind::Sqlite(_) | TargetKind::Postgres(_) | TargetKind::Mysql(_) => "database",
                        _ => "data",
                    }
                    .to_string()
                });
                targets.insert(
                    tname.clone(),
                    Target { name: tname, component, repository, pre_restore, post_restore, kept, kind },
                );
            }
        }
        Ok(Config { repositories, targets, unresolved })
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
mod tests {
    use super::values::expand;
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "APP_DIR").then(|| "/srv/app".to_string())
    }

    const GOOD: &str = r#"
[repository.main]
url = "/var/backups/kura"
password_file = "/etc/kura/password"

[target.registry]

type = "sqlite"
path = "${APP_DIR}/data/app.db"
pre_restore = "systemctl stop app"
post_restore = "systemctl start app"

[target.logs]

type = "files"
paths = ["${APP_DIR}/logs"]
exclude = ["*.tmp"]
changed_within = "24h"
"#;

    #[test]
    fn parses_targets_with_env_expansion() {
        let c = Config::parse(GOOD, &env).unwrap();
        let reg = c.target("registry").unwrap();
        assert_eq!(reg.repository, "main");
        assert_eq!(reg.kind, TargetKind::Sqlite(SqliteTarget { path: "/srv/app/data/app.db".into() }));
        assert_eq!(reg.pre_restore.as_deref(), Some("systemctl stop app"));
        match &c.target("logs").unwrap().kind {
            TargetKind::Files(f) => assert_eq!(f.changed_within, Some(Duration::from_secs(86400))),
            other => panic!("{other:?}"),
        }
    }

    /// The configuration README.md shows is one kura reads.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../../../README.md");
        let start = readme.find("```toml\n").expect("a toml block") + 8;
        let text = &readme[start..start + readme[start..].find("```").expect("its end")];
        let env = |_: &str| Some("value".to_string());
        let cfg = Config::parse(text, &env).unwrap_or_else(|e| panic!("README's example: {e}"));
        assert_eq!(cfg.repositories["offsite"].s3.storage_class.as_deref(), Some("STANDARD_IA"));
        assert_eq!(cfg.targets["registry"].kept.last, Some(3));
        for name in cfg.targets.keys() {
            assert!(cfg.target(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn every_mistake_names_its_place() {
        let cases: &[(&str, &str)] = &[
            ("[target.x]\ntype = \"sqlite\"\npth = \"/a\"\n", "target.x: unknown field `pth`"),
            ("[target.x]\ntype = \"oracle\"\n", "target.x.type: unknown target type \"oracle\""),
            ("[target.x]\npath = \"/a\"\n", "target.x: missing `type`"),
            ("[target.x]\ntype = \"files\"\npaths = [\"/a\"]\nchanged_within = \"soon\"\n", "\"soon\" is not a duration"),
            ("[targets.x]\n", "targets: unknown section"),
            ("[repository.a]\nurl = \"/a\"\n[repository.b]\nurl = \"/b\"\n[target.x]\ntype = \"sqlite\"\npath = \"/a\"\n", "target.x.repository: no repository named \"main\""),
            ("[target.x\n", "kura.toml:"),
            ("[target.x]\ntype = \"sqlite\"\npath = \"/a\"\ncomponent = \"db\"\n", "target.x.component: unknown component \"db\" (known: database, configs, data, logs)"),
            ("[target.x]\ntype = \"postgres\"\nurl = \"postgres://h/a\"\ndatabases = [\"*\"]\ntables = [\"t\"]\n", "target.x.tables: table lists apply to one database"),
            ("[target.x]\ntype = \"postgres\"\nurl = \"postgres://h/a\"\ndatabases = [\"*\", \"b\"]\n", "target.x.databases: names databases"),
            ("[target.x]\ntype = \"object_store\"\nurl = \"\"\n", "target.x.url: must name a bucket prefix"),
            ("[target.x]\ntype = \"object_store\"\nurl = \"s3://b\"\nkeys = 1\n", "target.x: unknown field `keys`"),
            ("[target.x]\ntype = \"object_store\"\nurl = \"s3://b\"\nkey_date = \"%H\"\n", "target.x.key_date: \"%H\" is not a date format"),
            ("[target.x]\ntype = \"object_store\"\nurl = \"s3://b\"\nkey_date = \"%Q\"\n", "target.x.key_date"),
        ];
        for (text, want) in cases {
            let err = Config::parse(text, &env).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: got {err:?}, want {want:?}");
        }
        let err = Config::parse(GOOD, &env).unwrap().target("nope").unwrap_err().to_string();
        assert_eq!(err, "no target named \"nope\" (configured: logs, registry)");
        assert_eq!(
            parse_duration("0000000010342869041953112064h").unwrap_err(),
            "\"0000000010342869041953112064h\" is longer than a hundred years"
        );
        assert_eq!(parse_duration("36600d"), Ok(Duration::from_secs(36600 * 86400)));
        assert!(parse_duration("36601d").is_err());
        // An unset variable is an error where it is used, not before.
        let text = "[target.x]\ntype = \"sqlite\"\npath = \"${NOPE}/a\"\n[target.y]\ntype = \"sqlite\"\npath = \"/b\"\n";
        let cfg = Config::parse(text, &env).unwrap();
        assert!(cfg.target("y").is_ok());
        assert_eq!(
            cfg.target("x").unwrap_err().to_string(),
            "target.x.path: environment variable NOPE is not set"
        );
    }

    #[test]
    fn compression_choices() {
        assert_eq!(parse_compression("auto"), Ok(None));
        assert_eq!(parse_compression("off"), Ok(Some(0)));
        assert_eq!(parse_compression("fast"), Ok(Some(1)));
        assert_eq!(parse_compression("max"), Ok(Some(19)));
        assert_eq!(parse_compression("7"), Ok(Some(7)));
        for bad in ["0", "23", "-1", "turbo", ""] {
            assert!(parse_compression(bad).is_err(), "{bad}");
        }
        let err =
            Config::parse("[repository.main]\nurl = \"/r\"\ncompression = \"turbo\"\n", &env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "repository.main.compression: \"turbo\" is not a compression (use auto, off, fast, max, or a level from 1 to 22)"
        );
    }

    #[test]
    fn literal_secrets_are_found_and_references_are_not() {
        let text = r#"
[repository.main]
url = "s3://bucket/kura"
password_file = "/etc/kura/password"

[target.shop]

type = "mysql"
url = "mysql://app:hunter2@db:3306/shop"

[target.env]

type = "mysql"
url = "mysql://app:${SHOP_PW}@db/shop"

[target.nopw]

type = "postgres"
url = "postgres://app@db/shop"

[target.query]

type = "postgres"
url = "postgres://app@db/shop?sslmode=require&password=hunter3"

[target.cmd]

type = "command"
command = "dump"
api_token = "abc123"
"#;
        assert_eq!(
            literal_secrets(text),
            vec!["target.cmd.api_token", "target.query.url", "target.shop.url"]
        );
        assert!(literal_secrets("not [ toml").is_empty());
    }

    #[test]
    fn postgres_from_host_port_user_database() {
        let c = Config::parse(
            "[target.a]\ntype = \"postgres\"\nhost = \"db.internal\"\nport = 5433\nuser = \"app\"\ndatabase = \"shop\"\n\n[target.b]\ntype = \"postgres\"\nhost = \"/run/postgresql\"\ndatabase = \"my db\"\n",
            &env,
        )
        .unwrap();
        let url = |n: &str| match &c.target(n).unwrap().kind {
            TargetKind::Postgres(p) => p.url.clone(),
            _ => unreachable!(),
        };
        assert_eq!(url("a"), "postgres://app@db.internal:5433/shop");
        assert_eq!(url("b"), "postgres:///my%20db?host=%2Frun%2Fpostgresql");
        let err =
            Config::parse("[target.a]\ntype = \"postgres\"\nurl = \"postgres://h/x\"\nhost = \"h\"\n", &env)
                .unwrap_err();
        assert!(
            err.to_string().contains("target.a.url: give url, or host/port/user/database, not both"),
            "{err}"
        );
    }

    #[test]
    fn dollar_escape_keeps_a_literal() {
        assert_eq!(expand("a$${b}", "p", &env).unwrap(), "a${b}");
    }
}
