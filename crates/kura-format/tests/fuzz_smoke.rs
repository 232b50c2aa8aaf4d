//! A time-bounded blind mutation run of every fuzz target, inside
//! `cargo test`: it needs no C++ toolchain and measures allocations
//! exactly. The coverage-guided run is `scripts/fuzz` (libFuzzer). Seeds are
//! valid encodings of every file type; mutations flip bits, overwrite
//! length fields with extreme values, truncate, extend and splice. Each
//! input must not panic, not take more than a second, and not allocate more
//! than the format's bound on any single allocation.
//!
//! `KURA_FUZZ_SECONDS` sets the time per target (default 2);
//! `KURA_FUZZ_SEED` replays a run.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kura_format::{fuzz, MAX_BLOB_SIZE};

/// The system allocator, recording the largest single allocation.
struct Measured;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only
// the requested size is recorded.
unsafe impl GlobalAlloc for Measured {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Measured = Measured;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[u32] = &[0, 1, 0x7f, 0x80, 0xff, 0xffff, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(8) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = [0u8, 0xff, 0x7f, 0x80, b'{', b'"', b'0'][rng.below(7)];
            }
            2 if v.len() >= 4 => {
                // A length or count field set to an extreme value.
                let i = rng.below(v.len() - 3);
                let x = INTERESTING[rng.below(INTERESTING.len())];
                let bytes = if rng.below(2) == 0 { x.to_le_bytes() } else { x.to_be_bytes() };
                v[i..i + 4].copy_from_slice(&bytes);
            }
            3 => v.truncate(rng.below(v.len() + 1)),
            4 => {
                let n = rng.below(64);
                v.extend((0..n).map(|_| rng.next() as u8));
            }
            5 if !other.is_empty() => {
                // Splice another seed in.
                let at = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                let n = rng.below(other.len() - from + 1);
                v.splice(at..at, other[from..from + n].iter().copied());
            }
            6 if !v.is_empty() => {
                let at = rng.below(v.len());
                let n = rng.below(v.len() - at + 1);
                v.drain(at..at + n);
            }
            _ => v = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        }
    }
    v
}

#[test]
fn every_decoder_survives_mutated_input() {
    let seconds: u64 = std::env::var("KURA_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    let seed: u64 =
        std::env::var("KURA_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| rand_seed() | 1);
    let seeds = fuzz::seeds();
    let all: Vec<&[u8]> = seeds.iter().map(|(_, s)| s.as_slice()).collect();
    let mut total = 0u64;
    for (name, target) in fuzz::TARGETS {
        let mine: Vec<&[u8]> = seeds.iter().filter(|(n, _)| n == name).map(|(_, s)| s.as_slice()).collect();
        let pool = if mine.is_empty() { all.clone() } else { mine };
        let mut rng = Rng((seed ^ (name.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
        // Every seed itself must pass.
        for s in &pool {
            run_one(name, *target, s, seed);
        }
        let until = Instant::now() + Duration::from_secs(seconds);
        let mut n = 0u64;
        while Instant::now() < until {
            let base = pool[rng.below(pool.len())];
            let other = all[rng.below(all.len())];
            let input = mutate(&mut rng, base, other);
            run_one(name, *target, &input, seed);
            n += 1;
        }
        total += n;
        eprintln!("{name}: {n} inputs");
    }
    eprintln!("{total} inputs in all (KURA_FUZZ_SEED={seed})");
}

fn run_one(name: &str, target: fn(&[u8]), input: &[u8], seed: u64) {
    LARGEST.store(0, Ordering::Relaxed);
    let started = Instant::now();
    let r = std::panic::catch_unwind(|| target(input));
    let took = started.elapsed();
    let largest = LARGEST.load(Ordering::Relaxed);
    let shown = hex(&input[..input.len().min(256)]);
    assert!(r.is_ok(), "{name} panicked on input {shown} (KURA_FUZZ_SEED={seed})");
    assert!(took < Duration::from_secs(1), "{name} took {took:?} on input {shown} (KURA_FUZZ_SEED={seed})");
    // One blob's worth, plus room for the decoder's own bookkeeping.
    let bound = MAX_BLOB_SIZE as usize + (8 << 20);
    assert!(
        largest <= bound,
        "{name} allocated {largest} bytes at once on input {shown} (KURA_FUZZ_SEED={seed})"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}
