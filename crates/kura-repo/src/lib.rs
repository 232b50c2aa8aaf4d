//! kura's repository engine.
//!
//! Content is cut by a keyed content-defined [`chunker`], identified by keyed
//! hashes, deduplicated against the in-memory [`index`], sealed, gathered
//! into packs and uploaded; index files and then a snapshot make it visible
//! (docs/format.md §12). Each operation lives in its own module: [`backup`],
//! [`restore`], [`verify`], [`prune`]. Nothing here knows about databases or
//! terminals: callers pass options in and read results and counters out.
#![forbid(unsafe_code)]

pub mod backup;
pub mod browse;
pub mod chunker;
mod error;
pub mod index;
pub mod prune;
pub mod repair;
mod repository;
pub mod restore;
mod saver;
mod session;
pub mod verify;

pub use error::{RepoError, Result};
pub use repository::{InitOptions, Repository};
pub use saver::Counters;

/// Takes an exclusive `flock` on `file` without waiting. The kernel drops
/// it when the process dies, however it dies: held, it marks a temporary
/// file as in use by a living process.
pub fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(std::io::Error::from)
}

/// Removes the entries of `dir` (files or folders) whose names start with
/// `prefix` and that no living process holds locked ([`try_lock`]): the
/// temporary copies killed runs left. An entry named after another plus
/// one of `companions` (a SQLite file's `-journal`) goes only with it.
/// Only for directories on this machine: `flock` does not reach other
/// hosts on every network filesystem.
pub fn remove_unlocked_leftovers(dir: &std::path::Path, prefix: &str, companions: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        if let Some(base) = companions.iter().find_map(|c| name.strip_suffix(c)) {
            if dir.join(base).symlink_metadata().is_ok() {
                continue;
            }
        }
        let path = e.path();
        let Ok(handle) = std::fs::File::open(&path) else { continue };
        if try_lock(&handle).is_err() {
            continue;
        }
        for c in companions {
            let mut with = path.clone().into_os_string();
            with.push(c);
            let _ = std::fs::remove_file(with);
        }
        let removed =
            if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match removed {
            Ok(()) => tracing::info!(path = %path.display(), "removed the leftover of an interrupted run"),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an interrupted run's leftover")
            }
        }
    }
}

/// Removes the regular files in `dir` whose names start with `prefix` and
/// that were last modified longer than `older_than` ago: the temporary
/// files an interrupted run left, which are never anything's only copy.
pub(crate) fn remove_leftovers(dir: &std::path::Path, prefix: &str, older_than: std::time::Duration) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let Ok(m) = e.metadata() else { continue };
        let old_enough = older_than.is_zero()
            || m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|age| age > older_than);
        if m.is_file() && old_enough && e.file_name().to_string_lossy().starts_with(prefix) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
