//! The in-memory index: where every blob lives.
//!
//! Loaded entries sit in one sorted `Vec` of 52-byte records (id, pack
//! number, offset, lengths, type) and are found by binary search; pack ids
//! are stored once each. That is 52 bytes per blob plus a share of 32 bytes
//! per pack, against several hundred for a general-purpose hash map of
//! structs. Blobs added by a running backup go to a small hash set until
//! their pack is uploaded.
use std::collections::{HashMap, HashSet};

use kura_format::index::{IndexBlob, IndexFile, IndexPack};
use kura_format::{BlobType, Id};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    ty: BlobType,
}

/// Where one blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    pub pack: Id,
    pub ty: BlobType,
    pub offset: u32,
    pub length: u32,
    pub raw_length: u32,
}

#[derive(Default)]
pub struct Index {
    packs: Vec<Id>,
    pack_numbers: HashMap<Id, u32>,
    entries: Vec<Entry>,
    sorted: bool,
}

impl Index {
    pub fn new() -> Index {
        // Empty is sorted: a fresh index may be looked up at once.
        Index { sorted: true, ..Index::default() }
    }

    /// Adds every pack of an index file, skipping packs in `exclude` (those
    /// pending deletion, format.md §12.4).
    pub fn add_file(&mut self, file: &IndexFile, exclude: &HashSet<Id>) {
        for p in &file.packs {
            if exclude.contains(&p.id) {
                continue;
            }
            self.add_pack(p);
        }
    }

    pub fn add_pack(&mut self, p: &IndexPack) {
        let n = match self.pack_numbers.get(&p.id) {
            // The same pack listed by two index files (a crash during prune's
            // rewrite): its blobs are already here.
            Some(_) => return,
            None => {
                let n = self.packs.len() as u32;
                self.packs.push(p.id);
                self.pack_numbers.insert(p.id, n);
                n
            }
        };
        self.entries.extend(p.blobs.iter().map(|b| Entry {
            id: b.id.0,
            pack: n,
            offset: b.offset,
            length: b.length,
            raw_length: b.raw_length,
            ty: b.ty,
        }));
        self.sorted = false;
    }

    /// Sorts for lookup; call after adding and before looking up.
    pub fn finish(&mut self) {
        if !self.sorted {
            self.entries.sort_unstable_by_key(|e| e.id);
            self.sorted = true;
        }
    }

    pub fn get(&self, id: &Id) -> Option<Location> {
        debug_assert!(self.sorted, "Index::finish before lookups");
        let i = self.entries.partition_point(|e| e.id < id.0);
        let e = self.entries.get(i).filter(|e| e.id == id.0)?;
        Some(Location {
            pack: self.packs[e.pack as usize],
            ty: e.ty,
            offset: e.offset,
            length: e.length,
            raw_length: e.raw_length,
        })
    }

    /// Every place a blob is stored (usually one).
    pub fn get_all(&self, id: &Id) -> Vec<Location> {
        let i = self.entries.partition_point(|e| e.id < id.0);
        self.entries[i..]
            .iter()
            .take_while(|e| e.id == id.0)
            .map(|e| Location {
                pack: self.packs[e.pack as usize],
                ty: e.ty,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            })
            .collect()
    }

    pub fn contains(&self, id: &Id) -> bool {
        self.get(id).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn packs(&self) -> &[Id] {
        &self.packs
    }

    pub fn has_pack(&self, id: &Id) -> bool {
        self.pack_numbers.contains_key(id)
    }

    /// The tree blobs of every pack that holds any, as positions into this
    /// index (4 bytes each): trees are packed apart from data, and a pack of
    /// trees was mostly written by one backup, so across a network a tree
    /// read-ahead takes all of a pack's trees in the request it makes anyway.
    pub fn trees_by_pack(&self) -> HashMap<Id, Vec<u32>> {
        debug_assert!(self.sorted, "Index::finish before lookups");
        let mut out: HashMap<u32, Vec<u32>> = HashMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.ty == BlobType::Tree {
                out.entry(e.pack).or_default().push(i as u32);
            }
        }
        out.into_iter().map(|(p, v)| (self.packs[p as usize], v)).collect()
    }

    /// The blob at a position [`Index::trees_by_pack`] gave.
    pub fn at(&self, position: u32) -> (Id, Location) {
        let e = &self.entries[position as usize];
        (
            Id(e.id),
            Location {
                pack: self.packs[e.pack as usize],
                ty: e.ty,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            },
        )
    }

    /// Bytes of memory per indexed blob (docs/performance.md).
    pub const BYTES_PER_ENTRY: usize = std::mem::size_of::<Entry>();

    /// Groups entries back into packs, for rewriting index files.
    pub fn to_packs(&self, keep: impl Fn(&Id) -> bool) -> Vec<IndexPack> {
        let mut by_pack: Vec<Vec<IndexBlob>> = vec![Vec::new(); self.packs.len()];
        for e in &self.entries {
            by_pack[e.pack as usize].push(IndexBlob {
                ty: e.ty,
                id: Id(e.id),
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
            });
        }
        self.packs
            .iter()
            .zip(by_pack)
            .filter(|(id, _)| keep(id))
            .map(|(id, mut blobs)| {
                blobs.sort_by_key(|b| b.offset);
                IndexPack { id: *id, blobs }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // docs/performance.md promises at most 64 bytes per indexed blob.
    const _: () = assert!(Index::BYTES_PER_ENTRY <= 52);

    #[test]
    fn lookup_and_exclusion() {
        let blob = |n: u8, off| IndexBlob {
            ty: BlobType::Data,
            id: Id([n; 32]),
            offset: off,
            length: 10,
            raw_length: 9,
        };
        let file = IndexFile {
            packs: vec![
                IndexPack { id: Id([100; 32]), blobs: vec![blob(1, 0), blob(2, 10)] },
                IndexPack { id: Id([101; 32]), blobs: vec![blob(3, 0)] },
            ],
        };
        let mut idx = Index::new();
        idx.add_file(&file, &[Id([101; 32])].into_iter().collect());
        idx.finish();
        assert_eq!(idx.get(&Id([2; 32])).unwrap().offset, 10);
        assert_eq!(idx.get(&Id([2; 32])).unwrap().pack, Id([100; 32]));
        assert!(idx.get(&Id([3; 32])).is_none(), "excluded pack's blobs are not offered");
        assert_eq!(idx.to_packs(|_| true).len(), 1);
    }
}
