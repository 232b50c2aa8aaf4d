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
