//! Content-defined chunking: FastCDC with normalized chunking (format.md §6).
//!
//! The gear table comes from the repository's secret chunker key, so cut
//! points reveal nothing about content to someone who sees only chunk sizes.
use kura_format::config::ChunkerParams;

#[derive(Clone)]
pub struct Chunker {
    gear: [u64; 256],
    min: usize,
    avg: usize,
    max: usize,
    mask_small: u64,
    mask_large: u64,
}

impl Chunker {
    pub fn new(gear: [u64; 256], p: ChunkerParams) -> Chunker {
        let bits = p.avg_size.trailing_zeros();
        Chunker {
            gear,
            min: p.min_size as usize,
            avg: p.avg_size as usize,
            max: p.max_size as usize,
            // Spread one-bits over the high half of the word: the gear hash
            // shifts left, so its high bits depend on the most bytes.
            mask_small: spread_mask(bits + 2),
            mask_large: spread_mask(bits.saturating_sub(2).max(1)),
        }
    }

    pub fn max_size(&self) -> usize {
        self.max
    }

    /// The length of the first chunk of `data`. When `data` is shorter than
    /// `max_size` and no cut point is found, returns `data.len()`: callers
    /// that have more input must only treat that as a chunk at end of stream.
    pub fn cut(&self, data: &[u8]) -> usize {
        let n = data.len();
        if n <= self.min {
            return n;
        }
        let end = n.min(self.max);
        let normal = end.min(self.avg);
        let mut hash: u64 = 0;
        let mut i = self.min;
        while i < normal {
            hash = (hash << 1).wrapping_add(self.gear[data[i] as usize]);
            if hash & self.mask_small == 0 {
                return i + 1;
            }
            i += 1;
        }
        while i < end {
            hash = (hash << 1).wrapping_add(self.gear[data[i] as usize]);
            if hash & self.mask_large == 0 {
                return i + 1;
            }
            i += 1;
        }
        end
    }

    /// Splits a complete buffer into chunk lengths.
    pub fn split_all(&self, mut data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let c = self.cut(data);
            out.push(c);
            data = &data[c..];
        }
        out
    }
}

fn spread_mask(bits: u32) -> u64 {
    // Every other bit from the top: `bits` one-bits in all.
    let mut mask = 0u64;
    for k in 0..bits.min(32) {
        mask |= 1u64 << (63 - 2 * k);
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunker(min: u32, avg: u32, max: u32) -> Chunker {
        let mut gear = [0u64; 256];
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for g in gear.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *g = x;
        }
        Chunker::new(gear, ChunkerParams { min_size: min, avg_size: avg, max_size: max })
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    #[test]
    fn average_chunk_size_is_near_target() {
        let c = chunker(2048, 8192, 65536);
        let data = noise(4 << 20, 7);
        let cuts = c.split_all(&data);
        let avg = data.len() / cuts.len();
        assert!((6000..14000).contains(&avg), "average {avg}");
    }

    #[test]
    fn an_insertion_only_disturbs_nearby_chunks() {
        let c = chunker(2048, 8192, 65536);
        let data = noise(1 << 20, 3);
        let mut edited = data.clone();
        edited.splice(500_000..500_000, b"inserted!".iter().copied());
        let chunks = |d: &[u8]| {
            let mut pos = 0;
            c.split_all(d)
                .into_iter()
                .map(|l| {
                    let s = &d[pos..pos + l];
                    pos += l;
                    blake3::hash(s)
                })
                .collect::<std::collections::HashSet<_>>()
        };
        let (a, b) = (chunks(&data), chunks(&edited));
        let shared = a.intersection(&b).count();
        assert!(shared + 3 >= a.len(), "{shared} of {} chunks shared", a.len());
    }

    proptest! {
        #[test]
        fn chunks_respect_bounds_and_cover_input(len in 0usize..300_000, seed in any::<u64>()) {
            let c = chunker(1024, 4096, 16384);
            let data = noise(len, seed);
            let cuts = c.split_all(&data);
            prop_assert_eq!(cuts.iter().sum::<usize>(), data.len());
            for (i, l) in cuts.iter().enumerate() {
                prop_assert!(*l <= 16384);
                if i + 1 < cuts.len() {
                    prop_assert!(*l > 1024);
                }
            }
        }

        #[test]
        fn cut_points_do_not_depend_on_buffering(seed in any::<u64>(), split in 1usize..100_000) {
            // Cutting a prefix then the rest equals cutting the whole, as long
            // as the prefix ends on a cut: what streaming relies on.
            let c = chunker(1024, 4096, 16384);
            let data = noise(200_000, seed);
            let whole = c.split_all(&data);
            let mut pos = 0;
            let mut k = 0;
            while pos + whole[k] < split.min(data.len()) { pos += whole[k]; k += 1; }
            let rest = c.split_all(&data[pos..]);
            prop_assert_eq!(&whole[k..], &rest[..]);
        }
    }
}
