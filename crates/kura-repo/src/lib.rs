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
pub mod copy;
mod dump;
mod error;
#[doc(hidden)]
pub mod forge;
pub mod index;
pub mod prune;
pub mod repair;
mod repository;
pub mod restore;
mod saver;
mod session;
pub mod verify;

pub use error::{is_transient_io, KeyRefusal, RepoError, Result};
pub use repository::{InitOptions, Locked, Repository};
pub use saver::Counters;
pub use session::SessionGuard;

/// Takes an exclusive `flock` on `file` without waiting. The kernel drops
/// it when the process dies, however it dies: held, it marks a temporary
/// file as in use by a living process.
pub fn try_lock(file: &std::fs::File) -> std::io::Result<()> {
    rustix::fs::flock(file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
        .map_err(std::io::Error::from)
}

/// How a sweep tells an interrupted run's temporary file from a live one.
pub enum Abandoned {
    /// A regular file not modified for this long (zero: any regular file).
    /// For directories other hosts may share, where locks do not reach.
    OlderThan(std::time::Duration),
    /// A file or folder no living process holds locked ([`try_lock`]).
    /// Only for directories on this machine: `flock` does not reach other
    /// hosts on every network filesystem.
    Unlocked,
}

/// Removes the entries of `dir` whose names start with `prefix` and that
/// `when` judges abandoned: the temporary copies interrupted runs left,
/// which are never anything's only copy. An entry named after another plus
/// one of `companions` (a SQLite file's `-journal`) goes only with it.
pub fn remove_leftovers(dir: &std::path::Path, prefix: &str, when: Abandoned, companions: &[&str]) {
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
        let abandoned = match &when {
            Abandoned::OlderThan(age) => e.metadata().is_ok_and(|m| {
                m.is_file()
                    && (age.is_zero()
                        || m.modified().ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > *age))
            }),
            Abandoned::Unlocked => std::fs::File::open(&path).is_ok_and(|h| try_lock(&h).is_ok()),
        };
        if !abandoned {
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
