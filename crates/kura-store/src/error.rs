//! Storage errors, each with a kind that says what happened (not found,
//! exists, no space, permission, transient, configuration) whatever the
//! backend, so that retries and messages need not know the backend.
use thiserror::Error;

/// What went wrong, in the terms a caller branches on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    PermissionDenied,
    /// The destination is out of space or quota.
    NoSpace,
    /// Network trouble, throttling, a 5xx, a timeout: retrying may help.
    Transient,
    /// The store's configuration is wrong (bad URL, missing credentials).
    Config,
    /// A key that is not a plain relative path (`..`, `.` or empty
    /// segments, a leading `/`, a NUL): refused before any I/O, so no key
    /// can reach outside the store's root.
    InvalidKey,
    Other,
}

#[derive(Debug, Error)]
#[error("{op} {key}: {message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    pub op: &'static str,
    pub key: String,
    pub message: String,
}

impl StoreError {
    pub fn new(kind: ErrorKind, op: &'static str, key: &str, message: impl Into<String>) -> Self {
        StoreError { kind, op, key: key.to_string(), message: message.into() }
    }

    pub fn config(message: impl Into<String>) -> Self {
        StoreError::new(ErrorKind::Config, "open", "", message)
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }

    pub(crate) fn from_io(op: &'static str, key: &str, e: std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let kind = match e.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::PermissionDenied => ErrorKind::PermissionDenied,
            K::StorageFull | K::QuotaExceeded => ErrorKind::NoSpace,
            K::Interrupted | K::TimedOut | K::WouldBlock => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
        StoreError::new(kind, op, key, e.to_string())
    }
}
