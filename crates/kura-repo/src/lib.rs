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
