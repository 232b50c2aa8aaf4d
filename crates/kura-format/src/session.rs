//! Sessions, the prune lock and deletion markers (format.md §13).
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::{check_version, FormatError, Id, FORMAT_VERSION};

/// How long a session stays live without a heartbeat.
pub const SESSION_TTL: Duration = Duration::minutes(5);
/// How often writers refresh their session.
pub const HEARTBEAT_EVERY: Duration = Duration::seconds(60);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub version: u32,
    pub kind: String,
    pub hostname: String,
    pub pid: u32,
    pub started: DateTime<Utc>,
    pub heartbeat: DateTime<Utc>,
}

impl Session {
    /// A session started at `now` (the repository's clock).
    pub fn new(kind: &str, hostname: &str, now: DateTime<Utc>) -> Session {
        Session {
            version: FORMAT_VERSION,
            kind: kind.into(),
            hostname: hostname.into(),
            pid: std::process::id(),
            started: now,
            heartbeat: now,
        }
    }

    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now - self.heartbeat < SESSION_TTL
    }

    /// This session's times on the store's clock (format.md §13): `stored`
    /// is when the store last wrote the object, the moment the writer set
    /// `heartbeat` by its own clock. Their difference is the writer's skew,
    /// which comes off `started` too.
    pub fn on_store_clock(mut self, stored: DateTime<Utc>) -> Session {
        let skew = self.heartbeat - stored;
        self.started -= skew;
        self.heartbeat = stored;
        self
    }

    pub fn seal(&self, key: &MasterKey) -> Vec<u8> {
        key.seal_object(&serde_json::to_vec(self).expect("session serializes"), 0)
    }

    pub fn open(key: &MasterKey, sealed: &[u8]) -> Result<Session, FormatError> {
        let s: Session = serde_json::from_slice(&key.open_object(sealed, "session")?)
            .map_err(|e| FormatError::corrupt("session", e.to_string()))?;
        check_version("session", s.version)?;
        Ok(s)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeletionMarker {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub packs: Vec<Id>,
}

impl DeletionMarker {
    pub fn new(packs: Vec<Id>, now: DateTime<Utc>) -> DeletionMarker {
        DeletionMarker { version: FORMAT_VERSION, created: now, packs }
    }

    pub fn seal(&self, key: &MasterKey) -> (Id, Vec<u8>) {
        let bytes = key.seal_object(&serde_json::to_vec(self).expect("marker serializes"), 3);
        (Id::of_object(&bytes), bytes)
    }

    pub fn open(key: &MasterKey, sealed: &[u8]) -> Result<DeletionMarker, FormatError> {
        let m: DeletionMarker = serde_json::from_slice(&key.open_object(sealed, "deletion marker")?)
            .map_err(|e| FormatError::corrupt("deletion marker", e.to_string()))?;
        check_version("deletion marker", m.version)?;
        Ok(m)
    }
}
