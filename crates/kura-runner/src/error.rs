//! What can go wrong in a run or a restore, typed, each with a next step
//! where there is one and whether trying again later may help.
use kura_policy::ConfigError;
use kura_repo::RepoError;
use kura_sources::SourceError;
use kura_store::StoreError;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Password(#[from] crate::password::PasswordError),
    /// The repository refused the password; `from` says where it came from.
    #[error("{source}")]
    WrongPassword {
        from: String,
        #[source]
        source: RepoError,
    },
    /// A request that does not fit: a flag for another kind of target, a
    /// table of a target that has no tables, a repository not configured.
    #[error("{message}")]
    Usage { message: String, hint: Option<String> },
    /// No snapshot matches what was asked for.
    #[error("{message}")]
    NoSnapshot { message: String, hint: String },
    /// A hook exited non-zero or could not start.
    #[error("{hook} hook `{command}` failed ({status}){}", said(.tail))]
    Hook { hook: &'static str, command: String, status: String, tail: Vec<String> },
    /// A signal stopped the work; every step leaves the live copy whole.
    #[error("interrupted by {signal}: the restore stopped; the live copy is whole, old or new")]
    Interrupted { signal: &'static str },
    /// Some entries of a directory restore could not be written.
    #[error("{} entries could not be restored: {failed:?}", failed.len())]
    EntriesFailed { failed: Vec<(String, String)> },
    /// The run history database could not be read or written.
    #[error("run history {}: {message}", path.display())]
    History { path: std::path::PathBuf, message: String },
    /// Another run of the plan holds its lock.
    #[error("plan {plan} is already running ({holder}); this run did nothing")]
    PlanRunning { plan: String, holder: String },
    /// The target type is known to the config but not to this operation.
    #[error("{0}")]
    Unsupported(String),
    /// An error with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        context: String,
        #[source]
        source: Box<RunError>,
    },
}

fn said(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; it said: {}", tail.join(" / "))
    }
}

impl RunError {
    pub fn usage(message: impl Into<String>) -> RunError {
        RunError::Usage { message: message.into(), hint: None }
    }

    pub fn usage_hint(message: impl Into<String>, hint: impl Into<String>) -> RunError {
        RunError::Usage { message: message.into(), hint: Some(hint.into()) }
    }

    pub fn context(self, what: impl Into<String>) -> RunError {
        RunError::Context { context: what.into(), source: Box::new(self) }
    }

    /// The error under any context.
    pub fn root(&self) -> &RunError {
        match self {
            RunError::Context { source, .. } => source.root(),
            e => e,
        }
    }

    /// A next step, where the error itself knows one. Repository errors
    /// have none here: their next steps name commands, which only the
    /// binary knows.
    pub fn hint(&self) -> Option<String> {
        match self {
            RunError::Source(e) => e.hint().map(String::from),
            RunError::Password(e) => e.hint(),
            RunError::Usage { hint, .. } => hint.clone(),
            RunError::NoSnapshot { hint, .. } => Some(hint.clone()),
            RunError::Context { source, .. } => source.hint(),
            _ => None,
        }
    }

    /// Whether the same work may succeed later unchanged (a storage or
    /// database outage), as a scheduler deciding on a retry needs to know.
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Repo(e) => e.is_transient(),
            RunError::Source(e) => e.is_transient(),
            RunError::Context { source, .. } => source.is_transient(),
            RunError::PlanRunning { .. } => true,
            _ => false,
        }
    }
}

impl From<StoreError> for RunError {
    fn from(e: StoreError) -> RunError {
        RunError::Repo(e.into())
    }
}
