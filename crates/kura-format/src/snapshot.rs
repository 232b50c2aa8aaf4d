//! Snapshots (format.md §11).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::{check_version, FormatError, Id, FORMAT_VERSION};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub version: u32,
    pub time: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    pub paths: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    pub tree: Id,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    pub program: String,
    pub summary: Summary,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    /// The configured target this snapshot belongs to (format.md §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The run: every target backed up by one invocation shares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Id>,
    /// What produced the content: `files`, `sqlite`, `stream`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The plan whose run made it (format.md §11).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Where a copy came from (format.md §11.3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied_from: Option<CopiedFrom>,
}

/// The origin of a copied snapshot: the source repository's config id and
/// the source snapshot's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopiedFrom {
    pub repository: Id,
    pub snapshot: Id,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub files_new: u64,
    pub files_changed: u64,
    pub files_unchanged: u64,
    pub blobs_new: u64,
    pub bytes_new: u64,
    pub bytes_stored: u64,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub path: String,
    pub message: String,
}

impl Snapshot {
    /// A snapshot of `tree` taken at `time` (the repository's clock).
    pub fn new(tree: Id, paths: Vec<String>, time: DateTime<Utc>) -> Snapshot {
        Snapshot {
            version: FORMAT_VERSION,
            time,
            hostname: String::new(),
            username: String::new(),
            paths,
            tags: Vec::new(),
            tree,
            parent: None,
            program: format!("kura {}", env!("CARGO_PKG_VERSION")),
            summary: Summary::default(),
            warnings: Vec::new(),
            target: None,
            run: None,
            source: None,
            plan: None,
            copied_from: None,
        }
    }

    /// Seals the snapshot; returns its id and stored bytes.
    pub fn seal(&self, key: &MasterKey) -> (Id, Vec<u8>) {
        let bytes = key.seal_object(&serde_json::to_vec(self).expect("snapshot serializes"), 3);
        (Id::of_object(&bytes), bytes)
    }

    pub fn open(key: &MasterKey, sealed: &[u8]) -> Result<Snapshot, FormatError> {
        Snapshot::decode(&key.open_object(sealed, "snapshot")?)
    }

    pub fn decode(content: &[u8]) -> Result<Snapshot, FormatError> {
        #[derive(Deserialize)]
        struct Head {
            version: u32,
        }
        let head: Head =
            serde_json::from_slice(content).map_err(|e| FormatError::corrupt("snapshot", e.to_string()))?;
        check_version("snapshot", head.version)?;
        serde_json::from_slice(content).map_err(|e| FormatError::corrupt("snapshot", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let key = MasterKey::random();
        let mut s = Snapshot::new(Id::random(), vec!["/srv".into()], Utc::now());
        s.tags.push("daily".into());
        s.warnings.push(Warning { path: "/srv/x".into(), message: "permission denied".into() });
        let (id, bytes) = s.seal(&key);
        assert_eq!(Id::of_object(&bytes), id);
        assert_eq!(Snapshot::open(&key, &bytes).unwrap(), s);
    }
}
