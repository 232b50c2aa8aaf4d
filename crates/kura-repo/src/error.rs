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
    #[error("blob {blob} is not in the index")]
    MissingBlob { blob: String },
    #[error("another prune is running (started {started} on {host})")]
    PruneRunning { host: String, started: String },
    #[error("{0}")]
    Refused(String),
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
}

impl RepoError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RepoError::Io { path: path.into(), source }
    }

    /// A next step for the user, where there is one.
    pub fn hint(&self) -> Option<&'static str> {
        use kura_store::ErrorKind;
        Some(match self {
            RepoError::NotARepository { .. } => {
                "create one with `kura init`, or check --repo / KURA_REPOSITORY"
            }
            RepoError::AlreadyInitialized { .. } => "use the existing repository, or choose another location",
            RepoError::WrongPassword { .. } => {
                "check the password source (KURA_PASSWORD, --password-file or --password-command)"
            }
            RepoError::SnapshotNotFound(_) => "`kura snapshots` lists them",
            RepoError::AmbiguousId { .. } => "type more characters of the id",
            RepoError::TargetNotEmpty(_) => "choose an empty directory, or pass --overwrite",
            RepoError::PruneRunning { .. } => "wait for it; a prune that died is taken over after 5 minutes",
            RepoError::SessionLapsed => "check the connection to the repository and run the backup again",
            RepoError::Format(FormatError::UnsupportedVersion { .. }) => {
                "upgrade kura to open this repository"
            }
            RepoError::Format(
                FormatError::Unauthentic { what: "index" } | FormatError::Corrupt { what: "index", .. },
            ) => "`kura repair index` rebuilds the index from the packs' own headers; `kura verify` shows what else is affected",
            RepoError::Format(FormatError::Unauthentic { .. } | FormatError::Corrupt { .. }) => {
                "run `kura verify --read-data` to see what is affected"
            }
            RepoError::MissingBlob { .. } => {
                "`kura verify` shows which snapshots lost data; `kura repair index` helps if only the index is damaged"
            }
            RepoError::DamagedSnapshot { .. } => {
                "name the snapshot to restore (`kura snapshots` lists the readable ones), or `kura verify` \
                 and then `kura forget` the damaged one"
            }
            RepoError::TreeTooDeep { .. } | RepoError::TooManyEntries { .. } => {
                "`kura verify` names such snapshots; restore an older one, or forget this one"
            }
            RepoError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                "free space on that filesystem (packs are assembled in a local repository's data/ folder, \
                 and for a remote one in TMPDIR), or move it"
            }
            RepoError::Store(e) => match e.kind {
                ErrorKind::NoSpace => "free space at the repository, or move it",
                ErrorKind::PermissionDenied => "check the credentials and the permissions of the repository",
                ErrorKind::Transient => "the storage did not answer well; the command is safe to run again",
                ErrorKind::Config => "check the repository URL and the environment variables it needs",
                _ => return None,
            },
            _ => return None,
        })
    }
}

pub type Result<T, E = RepoError> = std::result::Result<T, E>;
