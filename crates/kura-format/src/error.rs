//! What decoding and opening repository objects can fail with: a version
//! this build does not read, bytes that do not authenticate, structure that
//! does not parse. Nothing here knows where the bytes came from.
use thiserror::Error;

/// Why bytes could not be turned into a repository object.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FormatError {
    /// The object was written by a newer kura (or is not a kura object).
    #[error("{what} has format version {found}, this kura supports up to {max}")]
    UnsupportedVersion { what: &'static str, found: u32, max: u32 },
    /// Authentication failed: tampered, truncated, or sealed with another key.
    #[error("{what} failed authentication (corrupted, or not from this repository)")]
    Unauthentic { what: &'static str },
    /// The bytes authenticate but do not decode, or a hash does not match.
    #[error("{what} is corrupt: {reason}")]
    Corrupt { what: &'static str, reason: String },
    /// No key file could be opened with the given password.
    #[error("wrong password: no key in this repository opens with it")]
    WrongPassword,
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

impl FormatError {
    pub(crate) fn corrupt(what: &'static str, reason: impl Into<String>) -> Self {
        FormatError::Corrupt { what, reason: reason.into() }
    }
}
