//! Storage for kura repositories.
//!
//! [`Store`] is a flat key → bytes namespace with a small contract that every
//! backend honours and that the conformance suite (`tests/conformance.rs`)
//! checks against real servers. Features are wrappers around a store, not
//! flags inside one: `Retry::new(OpendalStore::s3(..))`.
//!
//! Two implementations: [`LocalStore`] for a directory (our own code, for
//! control over fsync and atomic rename) and [`OpendalStore`] for S3-compatible,
//! GCS and Azure Blob storage (through OpenDAL; ARCHITECTURE.md says why).
#![forbid(unsafe_code)]

mod error;
#[cfg(feature = "faulty")]
mod faulty;
mod local;
mod object;
mod retry;
mod url;

use std::ops::Range;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

pub use error::{ErrorKind, StoreError};
#[cfg(feature = "faulty")]
pub use faulty::Faulty;
pub use local::LocalStore;
pub use object::OpendalStore;
pub use retry::{Retry, RetryPolicy};
pub use url::{open_url, open_url_with, percent_decode, StoreUrl};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Checks that `key` is a plain relative path: segments separated by `/`,
/// none empty, `.` or `..`, no leading `/`, no NUL. Every store refuses
/// other keys with [`ErrorKind::InvalidKey`] before any I/O, so a key taken
/// from a repository (an object_store manifest) can never name a place
/// outside the store's root, on a local disk or in a bucket.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.contains('\0')
        || key.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad {
        return Err(StoreError::new(
            ErrorKind::InvalidKey,
            "check",
            key,
            "not a plain relative key (empty, `.` or `..` segments, a leading `/`, or a NUL)",
        ));
    }
    Ok(())
}

/// The same for a listing prefix, which may be empty or end in `/`.
pub fn check_prefix(prefix: &str) -> Result<()> {
    match prefix.strip_suffix('/').unwrap_or(prefix) {
        "" if !prefix.starts_with('/') => Ok(()),
        p => check_key(p),
    }
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key relative to the store's root, `/`-separated.
    pub key: String,
    pub size: u64,
    /// Last modification, seconds since the Unix epoch, when the store says.
    pub modified: Option<i64>,
    /// The media type the store keeps for the object, from `stat` only
    /// (listings do not carry it).
    pub content_type: Option<String>,
    /// Its other headers and user metadata, from `stat` only.
    pub headers: Headers,
}

/// What an object store keeps with an object besides its media type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers {
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub cache_control: Option<String>,
    /// User metadata, names without the service's prefix (`x-amz-meta-`).
    pub metadata: std::collections::BTreeMap<String, String>,
}

impl Headers {
    /// The names of the headers set here.
    pub fn present(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.content_encoding.is_some() {
            v.push("Content-Encoding");
        }
        if self.content_disposition.is_some() {
            v.push("Content-Disposition");
        }
        if self.cache_control.is_some() {
            v.push("Cache-Control");
        }
        if !self.metadata.is_empty() {
            v.push("user metadata");
        }
        v
    }
}

/// The storage contract.
///
/// * Keys are `/`-separated relative paths without a leading `/`.
/// * **Atomic:** a reader never sees a partially written object, on any store.
/// * A missing key is [`ErrorKind::NotFound`] for `get`, `get_range` and `stat`;
///   `delete` of a missing key succeeds; `list` of a missing prefix is empty.
/// * `put` replaces an existing object. `put_new` fails with
///   [`ErrorKind::AlreadyExists`] when the key exists; on stores that enforce
///   conditional writes this is atomic against concurrent creators.
/// * Every error says whether retrying may help ([`StoreError::is_transient`]);
///   all operations are idempotent, so a transient failure may be retried as is.
///   A `put_new` retried after a lost reply may report `AlreadyExists` for its
///   own object; callers writing content-addressed objects treat that as done.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    async fn put_new(&self, key: &str, data: Bytes) -> Result<()>;
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// Exactly the bytes in `range`; a range past the end is an error.
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes>;
    async fn stat(&self, key: &str) -> Result<ObjectMeta>;
    /// Every object under `prefix` (recursively), in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;
    async fn delete(&self, key: &str) -> Result<()>;
    /// `put` that records a media type on stores that keep one; the others
    /// ignore it.
    async fn put_typed(&self, key: &str, data: Bytes, _content_type: &str) -> Result<()> {
        self.put(key, data).await
    }
    /// `put_typed` that also records `headers` on stores that keep them.
    async fn put_with(&self, key: &str, data: Bytes, content_type: &str, _headers: &Headers) -> Result<()> {
        self.put_typed(key, data, content_type).await
    }
    /// The headers of `h` this store cannot record with `put_with` (a
    /// local directory keeps none), so that a caller can say so.
    fn unkept_headers(&self, h: &Headers) -> Vec<&'static str> {
        h.present()
    }
    /// Where this store is, for messages: a path or URL without secrets.
    fn location(&self) -> String;
    /// A directory on this machine where a large new object may be
    /// assembled so that [`Store::put_new_file`] publishes it without
    /// copying it (a local store's own tree). `None`: assemble it anywhere.
    fn spool_dir(&self) -> Option<PathBuf> {
        None
    }
    /// Reads worth keeping in flight at once to stay busy: a disk is
    /// served best by a few, a store across a network by enough requests
    /// to cover its round trips (at 40 ms and 50 MB/s, 2 MB are in flight).
    fn read_concurrency(&self) -> usize {
        8
    }
    /// Whether every request crosses a network, a round trip of tens of
    /// milliseconds, so that reading ahead and fewer, larger requests pay
    /// for the memory they hold. A local disk answers in microseconds.
    fn remote(&self) -> bool {
        true
    }
    /// `put_new` of the content of the file at `path`. The caller removes
    /// the file afterwards; a store may already have moved it.
    async fn put_new_file(&self, key: &str, path: &Path) -> Result<()> {
        let owned = path.to_path_buf();
        let data = tokio::task::spawn_blocking(move || std::fs::read(&owned))
            .await
            .map_err(|e| StoreError::new(ErrorKind::Other, "task", key, e.to_string()))?
            .map_err(|e| StoreError::from_io("put_new", key, e))?;
        self.put_new(key, Bytes::from(data)).await
    }
}
