//! Pack headers (format.md §8).
//!
//! `Pack = Blob_1 ‖ … ‖ Blob_n ‖ Seal(Header) ‖ u32le(len(Seal(Header)))`.
//! Packs are immutable once uploaded; offsets are implied by the order of
//! the header's entries.
use crate::crypto::MasterKey;
use crate::{check_version, FormatError, Id, MAX_BLOB_SIZE};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobType {
    Data,
    Tree,
}

impl BlobType {
    pub fn to_byte(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    pub fn from_byte(b: u8) -> Result<BlobType, FormatError> {
        match b {
            0 => Ok(BlobType::Data),
            1 => Ok(BlobType::Tree),
            _ => Err(FormatError::corrupt("blob entry", format!("unknown blob type {b}"))),
        }
    }

    pub(crate) fn what(self) -> &'static str {
        match self {
            BlobType::Data => "data blob",
            BlobType::Tree => "tree blob",
        }
    }
}

/// One blob of a pack as its header records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub ty: BlobType,
    pub id: Id,
    pub length: u32,
    pub raw_length: u32,
}

const MAGIC: &[u8; 3] = b"KPK";
const ENTRY_LEN: usize = 41;
/// Bytes of the trailing length field.
pub const TRAILER_LEN: usize = 4;

pub fn encode_header(entries: &[PackEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * ENTRY_LEN);
    out.extend_from_slice(MAGIC);
    out.push(1);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        out.push(e.ty.to_byte());
        out.extend_from_slice(&e.length.to_le_bytes());
        out.extend_from_slice(&e.raw_length.to_le_bytes());
        out.extend_from_slice(e.id.as_bytes());
    }
    out
}

pub fn decode_header(bytes: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
    const W: &str = "pack header";
    if bytes.len() < 8 || &bytes[..3] != MAGIC {
        return Err(FormatError::corrupt(W, "bad magic"));
    }
    check_version(W, bytes[3] as u32)?;
    let n = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let body = &bytes[8..];
    if body.len() != n.checked_mul(ENTRY_LEN).ok_or_else(|| FormatError::corrupt(W, "count overflows"))? {
        return Err(FormatError::corrupt(W, format!("{n} entries do not fit {} bytes", body.len())));
    }
    body.chunks_exact(ENTRY_LEN)
        .map(|e| {
            let length = u32::from_le_bytes(e[1..5].try_into().expect("4 bytes"));
            let raw_length = u32::from_le_bytes(e[5..9].try_into().expect("4 bytes"));
            if raw_length > MAX_BLOB_SIZE || length as usize > MAX_BLOB_SIZE as usize + 1024 {
                return Err(FormatError::corrupt(W, "blob larger than 64 MiB"));
            }
            Ok(PackEntry {
                ty: BlobType::from_byte(e[0])?,
                length,
                raw_length,
                id: Id(e[9..41].try_into().expect("32 bytes")),
            })
        })
        .collect()
}

/// Builds the tail of a pack: the sealed header and its length.
pub fn seal_trailer(key: &MasterKey, entries: &[PackEntry]) -> Vec<u8> {
    let mut sealed = key.seal_object(&encode_header(entries), 1);
    let len = sealed.len() as u32;
    sealed.extend_from_slice(&len.to_le_bytes());
    sealed
}

/// Reads the header of a complete pack, checking that the blobs it lists
/// exactly fill the space before it.
pub fn read_header(key: &MasterKey, pack: &[u8]) -> Result<Vec<PackEntry>, FormatError> {
    const W: &str = "pack";
    if pack.len() < TRAILER_LEN {
        return Err(FormatError::corrupt(W, "shorter than its trailer"));
    }
    let hlen = u32::from_le_bytes(pack[pack.len() - 4..].try_into().expect("4 bytes")) as usize;
    let end = pack.len() - TRAILER_LEN;
    if hlen > end {
        return Err(FormatError::corrupt(W, "header length beyond the pack"));
    }
    let header = key.open_object(&pack[end - hlen..end], "pack header")?;
    let entries = decode_header(&header)?;
    let blobs: u64 = entries.iter().map(|e| e.length as u64).sum();
    if blobs != (end - hlen) as u64 {
        return Err(FormatError::corrupt(W, "header does not account for the pack's blobs"));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_round_trip(raw in proptest::collection::vec((any::<bool>(), any::<[u8; 32]>(), 0u32..1<<20, 0u32..1<<20), 0..50)) {
            let entries: Vec<PackEntry> = raw.into_iter().map(|(t, id, l, r)| PackEntry {
                ty: if t { BlobType::Tree } else { BlobType::Data }, id: Id(id), length: l, raw_length: r,
            }).collect();
            prop_assert_eq!(decode_header(&encode_header(&entries)).unwrap(), entries);
        }

        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_header(&bytes);
        }
    }

    #[test]
    fn whole_pack_round_trip_and_truncation() {
        let key = MasterKey::random();
        let mut pack = Vec::new();
        let mut entries = Vec::new();
        for content in [&b"alpha"[..], b"beta", b"gamma"] {
            let sealed = key.seal_blob(content, 3).unwrap();
            entries.push(PackEntry {
                ty: BlobType::Data,
                id: key.blob_id(content),
                length: sealed.len() as u32,
                raw_length: content.len() as u32,
            });
            pack.extend_from_slice(&sealed);
        }
        pack.extend_from_slice(&seal_trailer(&key, &entries));
        assert_eq!(read_header(&key, &pack).unwrap(), entries);
        for cut in [1, 4, 10, pack.len() - 1] {
            assert!(read_header(&key, &pack[..pack.len() - cut]).is_err());
        }
    }
}
