//! A store that fails on purpose, for tests of the layers above: only
//! built with the `faulty` feature, which test builds turn on, so that no
//! release binary can hold it.
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ErrorKind, ObjectMeta, Result, Store, StoreError};

/// Fails every `every`-th operation with a transient error before it reaches
/// the inner store. For tests of the layers above.
#[derive(Debug)]
pub struct Faulty<S> {
    inner: S,
    every: u64,
    count: AtomicU64,
    first: u64,
    /// Says it is across a network, whatever the inner store is.
    remote: bool,
}

impl<S: Store> Faulty<S> {
    pub fn new(inner: S, every: u64) -> Self {
        Faulty { inner, every: every.max(1), count: AtomicU64::new(0), first: 0, remote: false }
    }

    /// One that never fails and only counts: for tests of how many
    /// requests an operation makes.
    pub fn counting(inner: S) -> Self {
        Faulty { inner, every: u64::MAX, count: AtomicU64::new(1), first: 1, remote: false }
    }

    /// The same, behaving as a store across a network does
    /// ([`Store::remote`]): for tests of what a remote store is spared.
    pub fn as_remote(mut self) -> Self {
        self.remote = true;
        self
    }

    /// The operations that reached it so far.
    pub fn operations(&self) -> u64 {
        self.count.load(Ordering::Relaxed) - self.first
    }

    fn trip(&self, op: &'static str, key: &str) -> Result<()> {
        if self.count.fetch_add(1, Ordering::Relaxed).is_multiple_of(self.every) {
            return Err(StoreError::new(ErrorKind::Transient, op, key, "injected fault"));
        }
        Ok(())
    }
}

#[async_trait]
impl<S: Store> Store for Faulty<S> {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.trip("put", key)?;
        self.inner.put(key, data).await
    }
    async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        self.trip("put_new", key)?;
        self.inner.put_new(key, data).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.trip("get", key)?;
        self.inner.get(key).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        self.trip("get_range", key)?;
        self.inner.get_range(key, range).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        self.trip("stat", key)?;
        self.inner.stat(key).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.trip("list", prefix)?;
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.trip("delete", key)?;
        self.inner.delete(key).await
    }
    async fn put_typed(&self, key: &str, data: Bytes, content_type: &str) -> Result<()> {
        self.trip("put", key)?;
        self.inner.put_typed(key, data, content_type).await
    }
    async fn put_with(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        headers: &crate::Headers,
    ) -> Result<()> {
        self.trip("put", key)?;
        self.inner.put_with(key, data, content_type, headers).await
    }
    fn unkept_headers(&self, h: &crate::Headers) -> Vec<&'static str> {
        self.inner.unkept_headers(h)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn spool_dir(&self) -> Option<std::path::PathBuf> {
        self.inner.spool_dir()
    }
    fn read_concurrency(&self) -> usize {
        self.inner.read_concurrency()
    }
    fn remote(&self) -> bool {
        self.remote || self.inner.remote()
    }
    async fn put_new_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        self.trip("put_new", key)?;
        self.inner.put_new_file(key, path).await
    }
}
