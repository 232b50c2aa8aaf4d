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
    #[error("{0}")]
    Refused(String),
}

impl SourceError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SourceError::Io { path: path.into(), source }
    }

    pub(crate) fn sqlite(path: impl Into<PathBuf>, e: impl std::fmt::Display) -> Self {
        SourceError::Sqlite { path: path.into(), message: e.to_string() }
    }

    pub fn hint(&self) -> Option<&'static str> {
        match self {
            SourceError::Repo(e) => e.hint(),
            SourceError::CheckFailed { .. } => {
                Some("run `kura verify --read-data`; the snapshot may be damaged")
            }
            SourceError::Sqlite { .. } => Some("check the path and that the file is a SQLite database"),
            _ => None,
        }
    }
}
