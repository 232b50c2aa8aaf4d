//! Key files: the master key wrapped by one password (format.md §5).
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{seal_raw, unseal_raw, KdfParams, MasterKey};
use crate::{check_version, FormatError, Id, FORMAT_VERSION};

/// The most costly key derivation a key file may ask for (format.md §5).
pub const KDF_MAX_MEMORY_KIB: u32 = 256 * 1024;
pub const KDF_MAX_ITERATIONS: u32 = 16;
pub const KDF_MAX_PARALLELISM: u32 = 4;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyFile {
    pub version: u32,
    pub created: DateTime<Utc>,
    pub hostname: String,
    pub username: String,
    pub kdf: Kdf,
    /// base64 of `Seal_kek(enc_key ‖ id_key ‖ chunker_key)`.
    pub master: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kdf {
    pub algorithm: String,
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
    pub salt: String,
}

impl KeyFile {
    /// Wraps `master` with `password`.
    pub fn wrap(
        master: &MasterKey,
        password: &[u8],
        params: KdfParams,
        hostname: &str,
        username: &str,
        created: chrono::DateTime<Utc>,
    ) -> Result<KeyFile, FormatError> {
        let salt: [u8; 16] = rand::random();
        let kek = params.derive(password, &salt)?;
        // The frame flag byte is part of the sealed plaintext everywhere, so
        // the 96 master bytes travel as a raw (0x00) frame.
        let sealed = seal_raw(&kek, 0, &master.to_bytes());
        Ok(KeyFile {
            version: FORMAT_VERSION,
            created,
            hostname: hostname.to_string(),
            username: username.to_string(),
            kdf: Kdf {
                algorithm: "argon2id".into(),
                memory_kib: params.memory_kib,
                iterations: params.iterations,
                parallelism: params.parallelism,
                salt: B64.encode(salt),
            },
            master: B64.encode(sealed),
        })
    }

    /// Unwraps the master key. A wrong password is [`FormatError::WrongPassword`].
    pub fn unwrap_master(&self, password: &[u8]) -> Result<MasterKey, FormatError> {
        check_version("key file", self.version)?;
        if self.kdf.algorithm != "argon2id" {
            return Err(FormatError::corrupt("key file", format!("unknown KDF {:?}", self.kdf.algorithm)));
        }
        let salt =
            B64.decode(&self.kdf.salt).map_err(|e| FormatError::corrupt("key file", format!("salt: {e}")))?;
        let sealed =
            B64.decode(&self.master).map_err(|e| FormatError::corrupt("key file", format!("master: {e}")))?;
        let params = KdfParams {
            memory_kib: self.kdf.memory_kib,
            iterations: self.kdf.iterations,
            parallelism: self.kdf.parallelism,
        };
        // A crafted key file must not make us spend unbounded memory or time.
        // format.md §5: at most what `kura init` could ever write, so that a
        // key file planted by anyone who can write the store cannot make
        // every open cost gigabytes and seconds.
        if params.memory_kib > KDF_MAX_MEMORY_KIB
            || params.iterations > KDF_MAX_ITERATIONS
            || params.parallelism > KDF_MAX_PARALLELISM
        {
            return Err(FormatError::corrupt(
                "key file",
                format!(
                    "KDF parameters beyond the maximum ({} MiB, {} iterations, {} lanes)",
                    KDF_MAX_MEMORY_KIB / 1024,
                    KDF_MAX_ITERATIONS,
                    KDF_MAX_PARALLELISM
                ),
            ));
        }
        let kek = params.derive(password, &salt)?;
        let frame = unseal_raw(&kek, &sealed, "key file").map_err(|e| match e {
            FormatError::Unauthentic { .. } => FormatError::WrongPassword,
            other => other,
        })?;
        if frame.first() != Some(&0) {
            return Err(FormatError::corrupt("key file", "unexpected frame"));
        }
        MasterKey::from_bytes(&frame[1..])
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("key file serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<KeyFile, FormatError> {
        let k: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| FormatError::corrupt("key file", e.to_string()))?;
        check_version("key file", k.version)?;
        Ok(k)
    }

    /// Encodes and names the key file (its id is the hash of its bytes).
    pub fn to_object(&self) -> (Id, Vec<u8>) {
        let bytes = self.encode();
        (Id::of_object(&bytes), bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap_and_wrong_password() {
        let master = MasterKey::random();
        let kf =
            KeyFile::wrap(&master, b"pw", KdfParams::insecure_for_tests(), "h", "u", Utc::now()).unwrap();
        let decoded = KeyFile::decode(&kf.encode()).unwrap();
        let got = decoded.unwrap_master(b"pw").unwrap();
        assert_eq!(got.blob_id(b"x"), master.blob_id(b"x"));
        assert!(matches!(decoded.unwrap_master(b"nope"), Err(FormatError::WrongPassword)));
    }

    #[test]
    fn newer_key_version_is_refused() {
        let master = MasterKey::random();
        let mut kf =
            KeyFile::wrap(&master, b"pw", KdfParams::insecure_for_tests(), "h", "u", Utc::now()).unwrap();
        kf.version = 9;
        let err = KeyFile::decode(&kf.encode()).unwrap_err();
        assert!(matches!(err, FormatError::UnsupportedVersion { found: 9, max: 1, .. }));
    }
}
