//! Sealing (format.md §7) and the master key (format.md §5).
//!
//! Every blob and sealed object is `nonce ‖ XChaCha20-Poly1305(frame) ‖ tag`,
//! where the frame's first byte says whether zstd compressed the rest. Blobs
//! are additionally checked against their keyed id after opening, so a blob
//! filed under the wrong entry is caught even though it authenticates.
use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};

use crate::{BlobType, FormatError, Id, MAX_BLOB_SIZE, MAX_OBJECT_SIZE};

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Bytes a sealed blob adds to its (possibly compressed) content.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN + 1;

const FLAG_RAW: u8 = 0;
const FLAG_ZSTD: u8 = 1;

/// The repository's secrets. Never written anywhere unwrapped.
#[derive(Clone)]
pub struct MasterKey {
    enc_key: [u8; 32],
    id_key: [u8; 32],
    chunker_key: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    pub fn random() -> MasterKey {
        MasterKey { enc_key: rand::random(), id_key: rand::random(), chunker_key: rand::random() }
    }

    pub(crate) fn to_bytes(&self) -> [u8; 96] {
        let mut out = [0u8; 96];
        out[..32].copy_from_slice(&self.enc_key);
        out[32..64].copy_from_slice(&self.id_key);
        out[64..].copy_from_slice(&self.chunker_key);
        out
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Result<MasterKey, FormatError> {
        if b.len() != 96 {
            return Err(FormatError::corrupt("key file", "master key is not 96 bytes"));
        }
        let mut k = MasterKey { enc_key: [0; 32], id_key: [0; 32], chunker_key: [0; 32] };
        k.enc_key.copy_from_slice(&b[..32]);
        k.id_key.copy_from_slice(&b[32..64]);
        k.chunker_key.copy_from_slice(&b[64..]);
        Ok(k)
    }

    /// The keyed id of a blob's content (format.md §3).
    pub fn blob_id(&self, content: &[u8]) -> Id {
        Id(*blake3::keyed_hash(&self.id_key, content).as_bytes())
    }

    /// The chunker's gear table (format.md §6).
    pub fn gear_table(&self) -> [u64; 256] {
        let mut bytes = [0u8; 2048];
        let mut hasher = blake3::Hasher::new_keyed(&self.chunker_key);
        hasher.update(b"kura gear table v1");
        hasher.finalize_xof().fill(&mut bytes);
        let mut table = [0u64; 256];
        for (i, v) in table.iter_mut().enumerate() {
            *v = u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        }
        table
    }

    /// Seals blob content, compressing it when that saves at least 3%.
    /// `zstd_level` 0 stores it uncompressed.
    pub fn seal_blob(&self, content: &[u8], zstd_level: i32) -> Result<Vec<u8>, FormatError> {
        if content.len() > MAX_BLOB_SIZE as usize {
            return Err(FormatError::corrupt("blob", "larger than 64 MiB"));
        }
        Ok(seal_with(&self.enc_key, content, zstd_level))
    }

    /// [`MasterKey::seal_blob`] into `out` (cleared first), so a worker
    /// can reuse one buffer for every blob it seals.
    pub fn seal_blob_into(
        &self,
        content: &[u8],
        zstd_level: i32,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        if content.len() > MAX_BLOB_SIZE as usize {
            return Err(FormatError::corrupt("blob", "larger than 64 MiB"));
        }
        seal_into(&self.enc_key, content, zstd_level, out);
        Ok(())
    }

    /// Opens a sealed blob and checks it against `id` (format.md §7).
    pub fn open_blob(
        &self,
        sealed: &[u8],
        ty: BlobType,
        id: &Id,
        raw_len: u32,
    ) -> Result<Vec<u8>, FormatError> {
        let mut content = Vec::new();
        self.open_blob_into(sealed, ty, id, raw_len, &mut content)?;
        Ok(content)
    }

    /// [`MasterKey::open_blob`] into `out` (cleared first), reusing its
    /// allocation. On error `out` holds nothing usable.
    pub fn open_blob_into(
        &self,
        sealed: &[u8],
        ty: BlobType,
        id: &Id,
        raw_len: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let what = ty.what();
        open_blob_frame(&self.enc_key, sealed, what, raw_len.min(MAX_BLOB_SIZE) as usize, out)?;
        self.check_blob(out, what, id, raw_len)
    }

    /// [`MasterKey::open_blob_into`] that decrypts inside `sealed` itself,
    /// which it leaves scrambled: for a caller that owns the bytes it read
    /// and needs them only once (a restore), it saves a copy of every blob.
    pub fn open_blob_in_place(
        &self,
        sealed: &mut [u8],
        ty: BlobType,
        id: &Id,
        raw_len: u32,
        out: &mut Vec<u8>,
    ) -> Result<(), FormatError> {
        let what = ty.what();
        open_sealed_in_place(&self.enc_key, sealed, what, raw_len.min(MAX_BLOB_SIZE) as usize, out)?;
        self.check_blob(out, what, id, raw_len)
    }

    /// An opened blob has its recorded length and hashes to its id.
    fn check_blob(
        &self,
        out: &mut Vec<u8>,
        what: &'static str,
        id: &Id,
        raw_len: u32,
    ) -> Result<(), FormatError> {
        if out.len() != raw_len as usize {
            let found = out.len();
            out.clear();
            return Err(FormatError::corrupt(what, format!("{found} bytes where {raw_len} were recorded")));
        }
        if self.blob_id(out) != *id {
            out.clear();
            return Err(FormatError::corrupt(
                what,
                format!("content does not hash to its id {}", id.short()),
            ));
        }
        Ok(())
    }

    /// Seals a whole object (index, snapshot, session, marker, pack header).
    pub fn seal_object(&self, content: &[u8], zstd_level: i32) -> Vec<u8> {
        seal_with(&self.enc_key, content, zstd_level)
    }

    pub fn open_object(&self, sealed: &[u8], what: &'static str) -> Result<Vec<u8>, FormatError> {
        open_object_with(&self.enc_key, sealed, what, MAX_OBJECT_SIZE)
    }
}

pub(crate) fn seal_with(key: &[u8; 32], content: &[u8], zstd_level: i32) -> Vec<u8> {
    let mut out = Vec::new();
    seal_into(key, content, zstd_level, &mut out);
    out
}

/// zstd contexts and frame buffers kept for reuse. Creating and zeroing a
/// context per blob cost about 2% of a backup's CPU; keeping one per thread
/// kept one per blocking thread the runtime ever started (tens of
/// megabytes). A pool holds only as many as were in use at once.
struct Reuse<T>(std::sync::Mutex<Vec<T>>);

impl<T> Reuse<T> {
    const fn new() -> Self {
        Reuse(std::sync::Mutex::new(Vec::new()))
    }

    fn take(&self) -> Option<T> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give(&self, t: T) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(t);
    }
}

static COMPRESSORS: Reuse<(i32, zstd::bulk::Compressor<'static>)> = Reuse::new();
static DECOMPRESSORS: Reuse<zstd::bulk::Decompressor<'static>> = Reuse::new();
/// Decrypted frames of blobs being opened.
static FRAMES: Reuse<Vec<u8>> = Reuse::new();

/// How small zstd at `level` makes `content` (for choosing a level; the
/// bytes are not kept). `None` if zstd failed.
pub fn compressed_len(content: &[u8], level: i32) -> Option<usize> {
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(content.len()));
    compress_at(content, level, &mut out, 0)
}

/// Compresses `content` into `out` from `at` on (out's length becomes `at`
/// plus the compressed size); `None` if zstd failed.
fn compress_at(content: &[u8], level: i32, out: &mut Vec<u8>, at: usize) -> Option<usize> {
    let (l, mut c) = match COMPRESSORS.take() {
        Some((l, c)) if l == level => (l, c),
        _ => (level, zstd::bulk::Compressor::new(level).ok()?),
    };
    let mut cursor = std::io::Cursor::new(&mut *out);
    cursor.set_position(at as u64);
    let n = c.compress_to_buffer(content, &mut cursor).ok();
    COMPRESSORS.give((l, c));
    n
}

/// Writes `nonce ‖ Seal(flag ‖ body) ‖ tag` into `out`, compressing the
/// body when that saves at least 3%, straight into `out` (no intermediate
/// buffer).
fn seal_into(key: &[u8; 32], content: &[u8], zstd_level: i32, out: &mut Vec<u8>) {
    out.clear();
    let nonce: [u8; NONCE_LEN] = rand::random();
    out.extend_from_slice(&nonce);
    out.push(FLAG_RAW);
    let header = out.len();
    let mut compressed = false;
    if zstd_level > 0 && content.len() >= 64 {
        out.reserve(zstd::zstd_safe::compress_bound(content.len()) + TAG_LEN);
        match compress_at(content, zstd_level, out, header) {
            Some(n) if n < content.len() - content.len() / 33 => {
                out[NONCE_LEN] = FLAG_ZSTD;
                compressed = true;
            }
            _ => out.truncate(header),
        }
    }
    if !compressed {
        out.reserve(content.len() + TAG_LEN);
        out.extend_from_slice(content);
    }
    encrypt_after_nonce(key, out);
}

pub(crate) fn seal_raw(key: &[u8; 32], flag: u8, body: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let mut out = Vec::with_capacity(NONCE_LEN + 1 + body.len() + TAG_LEN);
    out.extend_from_slice(&nonce);
    out.push(flag);
    out.extend_from_slice(body);
    encrypt_after_nonce(key, &mut out);
    out
}

/// Encrypts everything after the nonce `out` starts with, in place, and
/// appends the tag.
fn encrypt_after_nonce(key: &[u8; 32], out: &mut Vec<u8>) {
    let (nonce, frame) = out.split_at_mut(NONCE_LEN);
    let tag = XChaCha20Poly1305::new(key.into())
        .encrypt_in_place_detached(XNonce::from_slice(nonce), b"", frame)
        .expect("XChaCha20-Poly1305 accepts any length kura produces");
    out.extend_from_slice(&tag);
}

/// Opens a blob into `out`: the sealed bytes are copied into a pooled
/// buffer and opened there, at most `limit` bytes.
fn open_blob_frame(
    key: &[u8; 32],
    sealed: &[u8],
    what: &'static str,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    let mut buf = FRAMES.take().unwrap_or_default();
    buf.clear();
    buf.extend_from_slice(sealed);
    let opened = open_sealed_in_place(key, &mut buf, what, limit, out);
    FRAMES.give(buf);
    opened
}

/// Opens `nonce ‖ ciphertext ‖ tag` by decrypting the ciphertext where it
/// lies, then decompressing it into `out`.
fn open_sealed_in_place(
    key: &[u8; 32],
    sealed: &mut [u8],
    what: &'static str,
    limit: usize,
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    out.clear();
    if sealed.len() < NONCE_LEN + TAG_LEN + 1 {
        return Err(FormatError::corrupt(what, format!("{} bytes is too short to be sealed", sealed.len())));
    }
    let (nonce, rest) = sealed.split_at_mut(NONCE_LEN);
    let at = rest.len() - TAG_LEN;
    let (ct, tag) = rest.split_at_mut(at);
    open_frame(key, nonce, tag, what, limit, ct, out)
}

fn open_frame(
    key: &[u8; 32],
    nonce: &[u8],
    tag: &[u8],
    what: &'static str,
    limit: usize,
    frame: &mut [u8],
    out: &mut Vec<u8>,
) -> Result<(), FormatError> {
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(XNonce::from_slice(nonce), b"", frame, Tag::from_slice(tag))
        .map_err(|_| FormatError::Unauthentic { what })?;
    match frame[0] {
        FLAG_RAW => {
            if frame.len() - 1 > limit {
                return Err(FormatError::corrupt(what, "larger than its recorded size"));
            }
            out.extend_from_slice(&frame[1..]);
            Ok(())
        }
        // The limit is the blob's recorded size, reserved at once: the
        // fast path for restores.
        FLAG_ZSTD => {
            let mut d = match DECOMPRESSORS.take() {
                Some(d) => d,
                None => zstd::bulk::Decompressor::new()
                    .map_err(|e| FormatError::corrupt(what, format!("zstd: {e}")))?,
            };
            out.reserve(limit);
            let r = d.decompress_to_buffer(&frame[1..], out).map(|_| ()).map_err(|e| {
                out.clear();
                FormatError::corrupt(what, format!("zstd: {e}"))
            });
            DECOMPRESSORS.give(d);
            r
        }
        f => Err(FormatError::corrupt(what, format!("unknown frame flag {f}"))),
    }
}

/// Authenticates and decrypts, returning `flag ‖ body`.
pub(crate) fn unseal_raw(key: &[u8; 32], sealed: &[u8], what: &'static str) -> Result<Vec<u8>, FormatError> {
    if sealed.len() < NONCE_LEN + TAG_LEN + 1 {
        return Err(FormatError::corrupt(what, format!("{} bytes is too short to be sealed", sealed.len())));
    }
    let (nonce, rest) = sealed.split_at(NONCE_LEN);
    let (ct, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut buf = ct.to_vec();
    XChaCha20Poly1305::new(key.into())
        .decrypt_in_place_detached(XNonce::from_slice(nonce), b"", &mut buf, Tag::from_slice(tag))
        .map_err(|_| FormatError::Unauthentic { what })?;
    Ok(buf)
}

/// Opens a sealed object: its size is not recorded, so decompression grows
/// its buffer up to `limit` rather than reserving it.
fn open_object_with(
    key: &[u8; 32],
    sealed: &[u8],
    what: &'static str,
    limit: usize,
) -> Result<Vec<u8>, FormatError> {
    let mut frame = unseal_raw(key, sealed, what)?;
    match frame[0] {
        FLAG_RAW => {
            frame.remove(0);
            if frame.len() > limit {
                return Err(FormatError::corrupt(what, "larger than its recorded size"));
            }
            Ok(frame)
        }
        FLAG_ZSTD => inflate(&frame[1..], limit).map_err(|e| FormatError::corrupt(what, e)),
        f => Err(FormatError::corrupt(what, format!("unknown frame flag {f}"))),
    }
}

/// Decompresses at most `limit` bytes. The buffer grows with the output
/// instead of being reserved at `limit` up front: objects have no recorded
/// size, and their limit (256 MiB) is far above what any of them needs.
fn inflate(compressed: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let declared = zstd::zstd_safe::get_frame_content_size(compressed).ok().flatten();
    let mut out = Vec::with_capacity(declared.map_or(0, |d| d.min(limit as u64) as usize));
    let decoder = zstd::stream::read::Decoder::with_buffer(compressed).map_err(|e| format!("zstd: {e}"))?;
    decoder.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| format!("zstd: {e}"))?;
    if out.len() > limit {
        return Err("larger than its recorded size".into());
    }
    Ok(out)
}

/// Argon2id cost parameters (format.md §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KdfParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 24 MiB and 4 passes: 2.5 times the memory-time product of OWASP's
    /// recommended Argon2id floor (19 MiB, 2 passes) and above restic's
    /// scrypt default (32 MiB, 2 passes over it). Its memory is also kura's
    /// peak on small jobs. Parameters are stored per key file, so changing
    /// this default never affects existing keys.
    fn default() -> Self {
        KdfParams { memory_kib: 24 * 1024, iterations: 4, parallelism: 1 }
    }
}

impl KdfParams {
    /// Cheap parameters for test suites only; never a default.
    pub fn insecure_for_tests() -> Self {
        KdfParams { memory_kib: 64, iterations: 1, parallelism: 1 }
    }

    pub fn derive(&self, password: &[u8], salt: &[u8]) -> Result<[u8; 32], FormatError> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| FormatError::Kdf(e.to_string()))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = [0u8; 32];
        argon.hash_password_into(password, salt, &mut out).map_err(|e| FormatError::Kdf(e.to_string()))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn incompressible_blob_is_stored_raw_with_fixed_overhead() {
        let key = MasterKey::random();
        let data: Vec<u8> = (0..10_000).map(|_| rand::random::<u8>()).collect();
        let sealed = key.seal_blob(&data, 3).unwrap();
        assert_eq!(sealed.len(), data.len() + SEAL_OVERHEAD);
    }

    #[test]
    fn compressible_blob_shrinks() {
        let key = MasterKey::random();
        let data = vec![b'a'; 100_000];
        let sealed = key.seal_blob(&data, 3).unwrap();
        assert!(sealed.len() < 1000);
        let id = key.blob_id(&data);
        assert_eq!(key.open_blob(&sealed, BlobType::Data, &id, 100_000).unwrap(), data);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let key = MasterKey::random();
        let data = b"the quick brown fox".to_vec();
        let id = key.blob_id(&data);
        let sealed = key.seal_blob(&data, 3).unwrap();
        for i in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(key.open_blob(&bad, BlobType::Data, &id, data.len() as u32).is_err());
        }
    }

    #[test]
    fn in_place_open_matches_and_detects_damage() {
        let key = MasterKey::random();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let id = key.blob_id(&data);
        let sealed = key.seal_blob(&data, 3).unwrap();
        let mut out = Vec::new();
        key.open_blob_in_place(&mut sealed.clone(), BlobType::Data, &id, data.len() as u32, &mut out)
            .unwrap();
        assert_eq!(out, data);
        for at in [0, 30, sealed.len() / 2, sealed.len() - 1] {
            let mut bad = sealed.clone();
            bad[at] ^= 1;
            let r = key.open_blob_in_place(&mut bad, BlobType::Data, &id, data.len() as u32, &mut out);
            assert!(r.is_err() && out.is_empty(), "flip at {at} is caught and yields nothing");
        }
        let short = &mut sealed[..20].to_vec();
        assert!(key.open_blob_in_place(short, BlobType::Data, &id, 1, &mut out).is_err());
    }

    #[test]
    fn blob_under_wrong_id_is_refused() {
        let key = MasterKey::random();
        let sealed = key.seal_blob(b"one", 0).unwrap();
        let wrong = key.blob_id(b"two");
        let err = key.open_blob(&sealed, BlobType::Data, &wrong, 3).unwrap_err();
        assert!(matches!(err, FormatError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn other_key_cannot_open() {
        let a = MasterKey::random();
        let b = MasterKey::random();
        let sealed = a.seal_object(b"secret", 3);
        assert!(matches!(b.open_object(&sealed, "x"), Err(FormatError::Unauthentic { .. })));
    }

    #[test]
    fn decompression_is_bounded_by_recorded_size() {
        let key = MasterKey::random();
        let data = vec![0u8; 1 << 20];
        let id = key.blob_id(&data);
        let sealed = key.seal_blob(&data, 3).unwrap();
        assert!(key.open_blob(&sealed, BlobType::Data, &id, 1000).is_err());
    }

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..5000), level in 0i32..4) {
            let key = MasterKey::random();
            let id = key.blob_id(&data);
            let sealed = key.seal_blob(&data, level).unwrap();
            prop_assert_eq!(key.open_blob(&sealed, BlobType::Data, &id, data.len() as u32).unwrap(), data);
        }
    }
}
