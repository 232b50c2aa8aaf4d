//! The kura repository format: every byte layout of `docs/format.md`, encoded
//! and decoded here and nowhere else.
//!
//! This crate does no I/O. It turns objects into bytes and bytes back into
//! objects, refusing anything it does not understand with a typed
//! [`FormatError`]. Everything persisted carries a version, and readers
//! refuse versions newer than [`FORMAT_VERSION`].
//!
//! ```
//! use kura_format::{crypto::MasterKey, BlobType};
//! let key = MasterKey::random();
//! let id = key.blob_id(b"hello");
//! let sealed = key.seal_blob(b"hello", 3).unwrap();
//! assert_eq!(key.open_blob(&sealed, BlobType::Data, &id, 5).unwrap(), b"hello");
//! ```
#![forbid(unsafe_code)]

pub mod clock;
pub mod config;
pub mod crypto;
mod error;
#[doc(hidden)]
pub mod fuzz;
pub mod id;
pub mod index;
pub mod key;
pub mod objects;
pub mod pack;
pub mod paths;
pub mod session;
pub mod snapshot;
pub mod tree;

pub use error::FormatError;
pub use id::Id;
pub use pack::BlobType;

/// The repository format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// Largest raw blob a reader accepts (format.md §8): bounds every allocation a
/// crafted header or index could ask for.
pub const MAX_BLOB_SIZE: u32 = 64 << 20;

/// Largest decompressed size of a non-blob sealed object (format.md §7).
pub const MAX_OBJECT_SIZE: usize = 256 << 20;

pub(crate) fn check_version(what: &'static str, found: u32) -> Result<(), FormatError> {
    if found == 0 || found > FORMAT_VERSION {
        return Err(FormatError::UnsupportedVersion { what, found, max: FORMAT_VERSION });
    }
    Ok(())
}
