//! kura's configuration: repositories and targets, read from `kura.toml`.
//!
//! Parsing happens in two steps so that every mistake gets a message naming
//! its place: the TOML is read as a table, `${VAR}` references are expanded
//! (a missing variable is an error naming it), and then each section is
//! decoded into its own strict struct, where an unknown key is an error.
//!
//! ```
//! let cfg = kura_policy::Config::parse(r#"
//! [repository.main]
//! url = "/var/backups/kura"
//!
//! [target.registry]
//! type = "sqlite"
//! path = "/opt/app/app.db"
//! "#, &|_| None).unwrap();
//! assert_eq!(cfg.target("registry").unwrap().repository, "main");
//! ```
#![forbid(unsafe_code)]

mod config;
pub mod retention;
pub mod schedule;
pub mod zone;

pub use config::{
    check, literal_secrets, parse_compression, parse_duration, AlertRules, Channel, ChannelKind,
    CommandTarget, Config, ConfigError, FilesTarget, KeptPolicy, Level, MonitorConfig, MysqlTarget,
    ObjectStoreTarget, Plan, PostgresTarget, Problem, RepositoryConfig, S3Options, Severity, SqliteTarget,
    Target, TargetKind, COMPONENTS,
};
