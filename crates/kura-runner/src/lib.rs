//! The operations layer between the engine and sources below and the
//! binary (and later the daemon) above: a run over configured targets
//! ([`backup::backup_run`]), a restore planned before anything is touched
//! and then carried out ([`restore`]), the repositories they open
//! ([`repos`]), and what happens along the way reported as typed
//! [`Event`]s through a [`Sink`] the caller provides. Nothing here prints:
//! the binary renders events and reports, a daemon will record them.
pub mod backup;
pub mod copy;
pub mod doctor;
pub mod drill;
pub mod error;
pub mod event;
pub mod history;
pub mod hooks;
pub mod kept;
pub mod password;
pub mod plan;
pub mod repos;
pub mod restore;
pub mod retention;
pub mod select;
pub mod serve;
pub mod units;

use std::sync::Arc;

use kura_format::clock::Clock;
use kura_store::{RetryPolicy, Store};

pub use error::RunError;
pub use event::{Event, Recorder, Sink};
pub use repos::{RepoSpec, Repos, Unlock};
pub use select::Selector;

/// What every operation runs with: the time, where events go, how storage
/// calls are retried, and who is running.
#[derive(Clone)]
pub struct Context {
    pub clock: Arc<dyn Clock>,
    pub sink: Arc<dyn Sink>,
    /// For object stores that targets read and restore into; a repository
    /// carries its own in its [`RepoSpec`].
    pub retry: RetryPolicy,
    /// Restores set owners only as root.
    pub root: bool,
    pub hostname: String,
    pub username: String,
    /// This machine's own state: plan locks, the run history, the key
    /// that signs MariaDB swap journals.
    pub state_dir: std::path::PathBuf,
}

/// The key that signs this machine's MariaDB swap journals (see
/// `kura_sources::mysql::JournalKey`), made on first use.
pub fn journal_key(ctx: &Context) -> Result<kura_sources::mysql::JournalKey, RunError> {
    Ok(kura_sources::mysql::JournalKey::load_or_create(&ctx.state_dir.join("keys").join("mysql-journal"))?)
}

/// The store an object_store target reads or restores into: its own
/// credentials first, then the environment.
pub fn object_store(
    o: &kura_policy::ObjectStoreTarget,
    url: &str,
    retry: &RetryPolicy,
) -> Result<Arc<dyn Store>, RunError> {
    let url = o.s3.apply(url).map_err(|e| RunError::Usage { message: e.to_string(), hint: None })?;
    Ok(kura_store::open_url_with(
        &url,
        &|k| o.credentials.get(k).cloned().or_else(|| std::env::var(k).ok()),
        retry.clone(),
    )?)
}

/// A session (format.md §13) held while an operation reads a repository,
/// so that no prune deletes what it still reads. A repository this host
/// may only read (a read-only offsite key) cannot hold one: the operation
/// goes on unprotected, with a warning.
pub async fn hold(
    ctx: &Context,
    repo: &Arc<kura_repo::Repository>,
    kind: &str,
) -> Option<kura_repo::SessionGuard> {
    match kura_repo::SessionGuard::start(repo, kind, &ctx.hostname).await {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write a session into the repository; a prune running meanwhile could remove data this {kind} reads");
            None
        }
    }
}
