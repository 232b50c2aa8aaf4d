//! What repository operations fail with, typed: storage, format, a wrong
//! password, damage, refusals. Whether a retry may help is
//! [`RepoError::is_transient`]; next steps for the user, which name
//! commands, are the binary's to give.
use std::path::PathBuf;

use kura_format::FormatError;
use kura_store::StoreError;
use thiserror::Error;

/// Everything a repository operation can fail with. [`RepoError::hint`] says
/// what the user can do next.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RepoError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error("{location} is not a kura repository (no config object)")]
    NotARepository { location: String },
    #[error("{location} already holds a kura repository")]
    AlreadyInitialized { location: String },
    #[error("wrong password for repository {location}")]
    WrongPassword { location: String },
    #[error("repository {location} has no keys")]
    NoKeys { location: String },
    #[error("no snapshot matches {0:?}")]
    SnapshotNotFound(String),
    #[error("{prefix:?} matches several snapshots: {candidates}")]
    AmbiguousId { prefix: String, candidates: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("path {path:?} is not in snapshot {snapshot}")]
    PathNotInSnapshot { snapshot: String, path: String },
    #[error("restore target {0} is not empty")]
    TargetNotEmpty(PathBuf),
    #[error("restore target {0} holds a restore that was interrupted: its files may be incomplete")]
    TargetInterrupted(PathBuf),
    #[error("blob {blob} is not in the index")]
    MissingBlob { blob: String },
    #[error("another prune is running (started {started} on {host})")]
    PruneRunning { host: String, started: String },
    /// A task the operation ran on its own thread panicked or was
    /// cancelled.
    #[error("a worker task stopped: {0}")]
    Worker(String),
    /// The uploader stopped after an error, which is reported on its own.
    #[error("upload stopped after an error")]
    UploadStopped,
    /// An exclude pattern that is not a glob.
    #[error("exclude pattern {pattern:?}: {message}")]
    BadExclude { pattern: String, message: String },
    /// Another prune took the prune lock over while this one waited.
    #[error("could not take the prune lock")]
    PruneLockLost,
    /// Prune cannot tell what is in use, so it deletes nothing.
    #[error("{what} cannot be read ({reason}); prune cannot tell what it uses and will not delete anything")]
    Unsure { what: String, reason: String },
    /// A pack whose own header does not describe it.
    #[error("pack damaged: {0}")]
    BadPack(&'static str),
    /// `dump` was pointed at something other than a file.
    #[error("{path} is {kind}, not a file")]
    NotAFile { path: String, kind: String },
    #[error("{}", key_refusal(prefix, why))]
    KeyRefused { prefix: String, why: KeyRefusal },
    /// A hostile snapshot could not be forged (tests only).
    #[error("forge: {0}")]
    Forge(String),
    #[error("the backup could not refresh its session for over 4 minutes, so a concurrent prune may have removed data it reused; no snapshot was written")]
    SessionLapsed,
    #[error("snapshot {id} is unreadable and may be the newest ({reason}); \"latest\" would quietly mean an older one")]
    DamagedSnapshot { id: String, reason: String },
    #[error("the snapshot's directories nest deeper than {max} levels; it is refused as damaged or hostile")]
    TreeTooDeep { max: usize },
    #[error("the snapshot expands to more than {max} entries; it is refused as damaged or hostile")]
    TooManyEntries { max: u64 },
    #[error("the program producing the stream failed: {0}")]
    StreamSource(String),
    #[error("the source and destination are the same repository")]
    SameRepository,
    /// A copy read back from the destination did not hold what it should;
    /// its snapshot was not written.
    #[error("the copy of snapshot {snapshot} did not check out at the destination: {reason}")]
    CopyCheck { snapshot: String, reason: String },
}

/// Why a key was not removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    NoMatch,
    Ambiguous,
    /// The key this handle opened the repository with.
    InUse,
    Last,
}

fn key_refusal(prefix: &str, why: &KeyRefusal) -> String {
    match why {
        KeyRefusal::NoMatch => format!("no key matches {prefix:?}"),
        KeyRefusal::Ambiguous => format!("{prefix:?} matches several keys; type more of the id"),
        KeyRefusal::InUse => "refusing to remove the key this command opened the repository with; open with \
                              another password to remove it"
            .to_string(),
        KeyRefusal::Last => "refusing to remove the last key".to_string(),
    }
}

impl RepoError {
    /// A task run on its own thread that did not finish.
    pub fn worker(e: tokio::task::JoinError) -> RepoError {
        RepoError::Worker(e.to_string())
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RepoError::Io { path: path.into(), source }
    }

    /// Whether the same operation may succeed later unchanged: a storage
    /// outage, another prune holding the repository, a session that lapsed
    /// while the connection was down. A scheduler retries these; the rest
    /// (a wrong password, damage, a refusal) need someone to act.
    pub fn is_transient(&self) -> bool {
        match self {
            RepoError::Store(e) => e.is_transient(),
            RepoError::PruneRunning { .. } | RepoError::SessionLapsed => true,
            RepoError::Io { source, .. } => is_transient_io(source),
            _ => false,
        }
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Local I/O that may clear by itself: an interrupted or timed-out call, a
/// resource briefly exhausted. A full disk is not: it needs someone.
pub fn is_transient_io(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::Interrupted | K::TimedOut | K::WouldBlock | K::ConnectionReset | K::ConnectionAborted
    )
}
