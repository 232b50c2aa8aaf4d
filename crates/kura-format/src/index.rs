//! Index files (format.md §9): which pack holds each blob, and where.
use crate::{check_version, BlobType, FormatError, Id, MAX_BLOB_SIZE};

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct IndexFile {
    pub packs: Vec<IndexPack>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPack {
    pub id: Id,
    pub blobs: Vec<IndexBlob>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexBlob {
    pub ty: BlobType,
    pub id: Id,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

const MAGIC: &[u8; 3] = b"KIX";
const BLOB_LEN: usize = 45;

impl IndexPack {
    /// The index entry of a pack written as `entries`, blob after blob from
    /// offset 0 (format.md §8).
    pub fn of(id: Id, entries: &[crate::pack::PackEntry]) -> IndexPack {
        let mut offset = 0u32;
        let blobs = entries
            .iter()
            .map(|e| {
                let b = IndexBlob { ty: e.ty, id: e.id, offset, length: e.length, raw_length: e.raw_length };
                offset += e.length;
                b
            })
            .collect();
        IndexPack { id, blobs }
    }
}

impl IndexFile {
    pub fn blob_count(&self) -> usize {
        self.packs.iter().map(|p| p.blobs.len()).sum()
    }

    /// The unsealed content; callers seal it with `MasterKey::seal_object`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.packs.len() * 36 + self.blob_count() * BLOB_LEN);
        out.extend_from_slice(MAGIC);
        out.push(1);
        out.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        for p in &self.packs {
            out.extend_from_slice(p.id.as_bytes());
            out.extend_from_slice(&(p.blobs.len() as u32).to_le_bytes());
            for b in &p.blobs {
                out.push(b.ty.to_byte());
                out.extend_from_slice(&b.offset.to_le_bytes());
                out.extend_from_slice(&b.length.to_le_bytes());
                out.extend_from_slice(&b.raw_length.to_le_bytes());
                out.extend_from_slice(b.id.as_bytes());
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<IndexFile, FormatError> {
        const W: &str = "index";
        let mut r = Reader { b: bytes, what: W };
        if r.take(3)? != MAGIC {
            return Err(FormatError::corrupt(W, "bad magic"));
        }
        check_version(W, r.take(1)?[0] as u32)?;
        let np = r.u32()? as usize;
        // Each pack takes at least 36 bytes: a count larger than the input
        // allows is corrupt, and must not become a huge allocation.
        if np > r.b.len() / 36 {
            return Err(FormatError::corrupt(W, "pack count exceeds the file"));
        }
        let mut packs = Vec::with_capacity(np);
        for _ in 0..np {
            let id = Id(r.take(32)?.try_into().expect("32 bytes"));
            let nb = r.u32()? as usize;
            if nb > r.b.len() / BLOB_LEN {
                return Err(FormatError::corrupt(W, "blob count exceeds the file"));
            }
            let mut blobs = Vec::with_capacity(nb);
            for _ in 0..nb {
                let ty = BlobType::from_byte(r.take(1)?[0])?;
                let offset = r.u32()?;
                let length = r.u32()?;
                let raw_length = r.u32()?;
                if raw_length > MAX_BLOB_SIZE {
                    return Err(FormatError::corrupt(W, "blob larger than 64 MiB"));
                }
                let id = Id(r.take(32)?.try_into().expect("32 bytes"));
                blobs.push(IndexBlob { ty, id, offset, length, raw_length });
            }
            packs.push(IndexPack { id, blobs });
        }
        if !r.b.is_empty() {
            return Err(FormatError::corrupt(W, "trailing bytes"));
        }
        Ok(IndexFile { packs })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        if self.b.len() < n {
            return Err(FormatError::corrupt(self.what, "truncated"));
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, FormatError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_index() -> impl Strategy<Value = IndexFile> {
        let blob = (any::<bool>(), any::<[u8; 32]>(), any::<u32>(), any::<u32>(), 0..MAX_BLOB_SIZE).prop_map(
            |(t, id, offset, length, raw_length)| IndexBlob {
                ty: if t { BlobType::Tree } else { BlobType::Data },
                id: Id(id),
                offset,
                length,
                raw_length,
            },
        );
        let pack = (any::<[u8; 32]>(), proptest::collection::vec(blob, 0..20))
            .prop_map(|(id, blobs)| IndexPack { id: Id(id), blobs });
        proptest::collection::vec(pack, 0..10).prop_map(|packs| IndexFile { packs })
    }

    proptest! {
        #[test]
        fn round_trip(idx in arb_index()) {
            prop_assert_eq!(IndexFile::decode(&idx.encode()).unwrap(), idx);
        }

        #[test]
        fn truncation_is_an_error(idx in arb_index(), cut in 1usize..100) {
            let bytes = idx.encode();
            let cut = cut.min(bytes.len());
            prop_assert!(IndexFile::decode(&bytes[..bytes.len() - cut]).is_err());
        }

        #[test]
        fn decoder_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = IndexFile::decode(&bytes);
        }
    }
}
