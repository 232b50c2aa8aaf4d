//! The plaintext `config` object (format.md §4).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{check_version, FormatError, Id, FORMAT_VERSION};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RepoConfig {
    pub format: String,
    pub version: u32,
    pub id: Id,
    pub created: DateTime<Utc>,
    pub chunker: ChunkerParams,
    pub pack_size: u32,
    pub zstd_level: i32,
}

/// Chunk size bounds. Chosen by measurement (docs/performance.md): 1 MiB
/// average keeps the index small (about 1 M entries per TiB) while still
/// deduplicating appended and lightly edited files well.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ChunkerParams {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams { min_size: 256 << 10, avg_size: 1 << 20, max_size: 4 << 20 }
    }
}

impl ChunkerParams {
    /// Sizes around an average as the repository's are (a quarter and four
    /// times it).
    pub fn with_average(avg: u32) -> ChunkerParams {
        ChunkerParams { min_size: avg / 4, avg_size: avg, max_size: avg.saturating_mul(4) }
    }

    pub fn validate(&self) -> Result<(), FormatError> {
        let ok = self.min_size >= 64
            && self.min_size < self.avg_size
            && self.avg_size < self.max_size
            && self.avg_size.is_power_of_two()
            && self.max_size <= crate::MAX_BLOB_SIZE;
        if !ok {
            return Err(FormatError::corrupt(
                "config",
                format!(
                    "chunker sizes {}/{}/{} must satisfy 64 <= min < avg < max <= 64 MiB, avg a power of two",
                    self.min_size, self.avg_size, self.max_size
                ),
            ));
        }
        Ok(())
    }
}

impl RepoConfig {
    pub fn new(
        chunker: ChunkerParams,
        pack_size: u32,
        zstd_level: i32,
        created: DateTime<Utc>,
    ) -> RepoConfig {
        RepoConfig {
            format: "kura".into(),
            version: FORMAT_VERSION,
            id: Id::random(),
            created,
            chunker,
            pack_size,
            zstd_level,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("config serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<RepoConfig, FormatError> {
        // Read the version before the rest, so that a newer repository whose
        // config has other fields is refused for its version, not its shape.
        #[derive(Deserialize)]
        struct Head {
            format: String,
            version: u32,
        }
        let head: Head = serde_json::from_slice(bytes)
            .map_err(|e| FormatError::corrupt("config", format!("not a kura config: {e}")))?;
        if head.format != "kura" {
            return Err(FormatError::corrupt("config", format!("format is {:?}, not \"kura\"", head.format)));
        }
        check_version("repository", head.version)?;
        let c: RepoConfig =
            serde_json::from_slice(bytes).map_err(|e| FormatError::corrupt("config", e.to_string()))?;
        c.chunker.validate()?;
        if check_pack_size(c.pack_size).is_err() {
            return Err(FormatError::corrupt("config", "pack_size out of range"));
        }
        Ok(c)
    }
}

/// Pack sizes a repository may have: 1 MiB to 1 GiB. `init` refuses others
/// before writing anything, and reading refuses them as damage.
pub fn check_pack_size(size: u32) -> Result<(), FormatError> {
    if !(1 << 20..=1 << 30).contains(&size) {
        return Err(FormatError::corrupt(
            "config",
            format!("pack size {size} bytes is out of range (1 MiB to 1 GiB)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_newer_version() {
        let c = RepoConfig::new(ChunkerParams::default(), 16 << 20, 3, Utc::now());
        assert_eq!(RepoConfig::decode(&c.encode()).unwrap(), c);
        let newer = String::from_utf8(c.encode()).unwrap().replace("\"version\": 1", "\"version\": 2");
        let err = RepoConfig::decode(newer.as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "repository has format version 2, this kura supports up to 1");
    }
}
