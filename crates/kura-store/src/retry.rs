//! Retrying with backoff, as a wrapper around any [`Store`].
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{ErrorKind, ObjectMeta, Result, Store, StoreError};

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// A single attempt that takes longer fails as transient: a hung
    /// connection must not hang a scheduled backup forever.
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(300),
        }
    }
}

/// Retries transient errors with exponential backoff and full jitter.
#[derive(Debug)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: Store> Retry<S> {
    pub fn new(inner: S) -> Self {
        Retry { inner, policy: RetryPolicy::default() }
    }

    pub fn with_policy(inner: S, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    async fn run<T, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut delay = self.policy.first_delay;
        let mut attempt = 1;
        loop {
            let began = std::time::Instant::now();
            let result = match tokio::time::timeout(self.policy.attempt_timeout, f()).await {
                Ok(r) => r,
                Err(_) => Err(StoreError::new(
                    ErrorKind::Transient,
                    op,
                    key,
                    format!("no answer within {:?}", self.policy.attempt_timeout),
                )),
            };
            // One line per request at debug: with `--log-format json` its
            // timestamp and `ms` give the request timeline of a slow step.
            tracing::debug!(
                op,
                key,
                attempt,
                ms = began.elapsed().as_millis() as u64,
                ok = result.is_ok(),
                "storage request"
            );
            match result {
                Err(e) if e.is_transient() && attempt < self.policy.attempts => {
                    let jittered = delay.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tracing::warn!(op, key, attempt, error = %e, "transient storage error, retrying in {jittered:?}");
                    tokio::time::sleep(jittered).await;
                    delay = (delay * 2).min(self.policy.max_delay);
                    attempt += 1;
                }
                Err(mut e) if e.is_transient() => {
                    e.message = format!("{} (gave up after {attempt} attempts)", e.message);
                    return Err(e);
                }
                other => return other,
            }
        }
    }
}

#[async_trait]
impl<S: Store> Store for Retry<S> {
    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        self.run("put", key, || self.inner.put(key, data.clone())).await
    }
    async fn put_new(&self, key: &str, data: Bytes) -> Result<()> {
        self.run("put_new", key, || self.inner.put_new(key, data.clone())).await
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        self.run("get", key, || self.inner.get(key)).await
    }
    async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        // Which bytes, beside the request's own line: a timeline then shows
        // bytes read twice.
        tracing::debug!(key, start = range.start, end = range.end, "storage range");
        self.run("get_range", key, || self.inner.get_range(key, range.clone())).await
    }
    async fn stat(&self, key: &str) -> Result<ObjectMeta> {
        self.run("stat", key, || self.inner.stat(key)).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.run("list", prefix, || self.inner.list(prefix)).await
    }
    async fn delete(&self, key: &str) -> Result<()> {
        self.run("delete", key, || self.inner.delete(key)).await
    }
    async fn put_typed(&self, key: &str, data: Bytes, content_type: &str) -> Result<()> {
        self.run("put", key, || self.inner.put_typed(key, data.clone(), content_type)).await
    }
    async fn put_with(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
        headers: &crate::Headers,
    ) -> Result<()> {
        self.run("put", key, || self.inner.put_with(key, data.clone(), content_type, headers)).await
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
        self.inner.remote()
    }
    async fn put_new_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        self.run("put_new", key, || self.inner.put_new_file(key, path)).await
    }
}
