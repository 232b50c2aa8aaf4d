//! The manifest of an object_store snapshot, `objects.json` (format.md
//! §11.2): the keys, sizes, times and media types of the objects, in key
//! order. Keys come from the repository and become places to write, so a
//! manifest that holds a key with an empty, `.` or `..` segment, a leading
//! `/` or a NUL is refused whole, before anyone writes anything.
use serde::{Deserialize, Serialize};

use crate::FormatError;

pub const MANIFEST_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    pub source: String,
    pub objects: Vec<Entry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub path: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_disposition: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
    /// User metadata, names without the service's prefix.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub metadata: std::collections::BTreeMap<String, String>,
}

/// Whether `key` is a plain relative path (the rule of format.md §11.2,
/// which every store also enforces on its own side).
pub fn plain_key(key: &str) -> bool {
    !key.is_empty() && !key.contains('\0') && key.split('/').all(|s| !s.is_empty() && s != "." && s != "..")
}

impl Manifest {
    pub fn decode(bytes: &[u8]) -> Result<Manifest, FormatError> {
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::Corrupt { what: "object manifest", reason: e.to_string() })?;
        if m.version != MANIFEST_VERSION {
            return Err(FormatError::UnsupportedVersion {
                what: "object manifest",
                found: m.version,
                max: MANIFEST_VERSION,
            });
        }
        let escaping: Vec<&str> =
            m.objects.iter().filter(|e| !plain_key(&e.key)).map(|e| e.key.as_str()).collect();
        if !escaping.is_empty() {
            let shown: Vec<String> = escaping.iter().take(5).map(|k| format!("{k:?}")).collect();
            return Err(FormatError::Corrupt {
                what: "object manifest",
                reason: format!(
                    "it holds {} object keys that would leave the destination ({}{}); nothing was written: \
                     the snapshot is damaged or was written by someone hostile",
                    escaping.len(),
                    shown.join(", "),
                    if escaping.len() > 5 { ", …" } else { "" }
                ),
            });
        }
        Ok(m)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest serializes")
    }
}
