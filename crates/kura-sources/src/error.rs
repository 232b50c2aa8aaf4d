//! What sources and restore targets fail with: a database or its client
//! tool, a SQLite file, a check after restore, other sessions' locks.
use std::path::PathBuf;

use kura_repo::RepoError;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SourceError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("sqlite {path}: {message}")]
    Sqlite { path: PathBuf, message: String },
    #[error("{path} failed its check after restore: {message}; the live copy was not touched")]
    CheckFailed { path: PathBuf, message: String },
    /// A database server or its client tool said no.
    #[error("{engine} at {at}: {message}")]
    Database { engine: &'static str, at: String, message: String },
    /// A dump's objects belong to roles this server lacks, or that the
    /// restoring user cannot act as.
    #[error("the backup of database {database} has objects owned by role(s) {} that do not exist on this server or that this user cannot act as; nothing was touched", roles.join(", "))]
    MissingRoles { database: String, roles: Vec<String> },
    /// Other sessions held the live tables longer than the restore may wait.
    #[error("gave up after {waited_secs} s waiting for other sessions to release database {database}'s tables ({}); nothing was changed", holders.join("; "))]
    LockTimeout { database: String, waited_secs: u64, holders: Vec<String> },
    #[error("{0}")]
    Refused(String),
}

impl SourceError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SourceError::Io { path: path.into(), source }
    }

    pub(crate) fn database(engine: &'static str, at: impl Into<String>, message: impl Into<String>) -> Self {
        SourceError::Database { engine, at: at.into(), message: message.into() }
    }

    pub(crate) fn sqlite(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        SourceError::Sqlite { path: path.into(), message: e.to_string() }
    }

    /// Whether the same work may succeed later unchanged: the repository's
    /// storage or the database server briefly unreachable, another
    /// session's locks held too long.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Repo(e) => e.is_transient(),
            SourceError::Io { source, .. } => kura_repo::is_transient_io(source),
            SourceError::LockTimeout { .. } => true,
            SourceError::Database { message, .. } => database_unreachable(message),
            _ => false,
        }
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SourceError::CheckFailed { .. } => {
                Some("run `kura verify --read-data`; the snapshot may be damaged")
            }
            SourceError::Sqlite { .. } => Some("check the path and that the file is a SQLite database"),
            SourceError::Database { message, .. } => Some(database_hint(message)),
            _ => None,
        }
    }
}

/// What to do about a database client's message, by what it says.
fn database_hint(message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    if database_unreachable(message) {
        "is the server running, and are the host and port in the target's url right?"
    } else if [
        "password authentication failed",
        "access denied",
        "no password supplied",
        "role",
        "authentication",
    ]
    .iter()
    .any(|s| m.contains(s))
    {
        "check the user and password: PGPASSWORD or ~/.pgpass for PostgreSQL, the url or ~/.my.cnf for MySQL"
    } else if m.contains("does not exist") || m.contains("unknown database") {
        "check the database name in the target's url"
    } else {
        "the database's own message is above"
    }
}

/// Whether a database client's message says the server could not be
/// reached (as opposed to refusing what was asked).
fn database_unreachable(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    [
        "connection refused",
        "can't connect",
        "could not connect",
        "no route to host",
        "timed out",
        "timeout expired",
        "could not translate host name",
        "unknown server host",
        "no such file or directory",
    ]
    .iter()
    .any(|s| m.contains(s))
}
