//! What every fuzz target shares: an allocator that aborts on any single
//! allocation larger than the format allows, so that a length field an
//! attacker chose cannot become an allocation of that size unnoticed.
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer's malloc hooks,
//! which a build without one does not have; this bound holds in any build.
use std::alloc::{GlobalAlloc, Layout, System};

/// One blob's worth, plus room for a decoder's own bookkeeping (the same
/// bound as the stable smoke run in `kura-format/tests/fuzz_smoke.rs`).
pub const LARGEST_ALLOCATION: usize = kura_format::MAX_BLOB_SIZE as usize + (8 << 20);

pub struct Bounded;

impl Bounded {
    fn check(size: usize) {
        if size > LARGEST_ALLOCATION {
            // Printing would allocate; a fixed message and an abort make
            // libFuzzer save the input as a crash.
            let msg = b"fuzz: allocation above the format's bound\n";
            // SAFETY: writes a static buffer to stderr.
            unsafe { libc_write(2, msg.as_ptr(), msg.len()) };
            std::process::abort();
        }
    }
}

extern "C" {
    #[link_name = "write"]
    fn libc_write(fd: i32, buf: *const u8, len: usize) -> isize;
}

// SAFETY: every call is forwarded unchanged to the system allocator after
// the size check.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::check(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::check(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// Defines a fuzz target whose body is `kura_format::fuzz::$name`, run
/// under the bounded allocator.
#[macro_export]
macro_rules! target {
    ($name:ident) => {
        #[global_allocator]
        static ALLOC: $crate::Bounded = $crate::Bounded;
        libfuzzer_sys::fuzz_target!(|data: &[u8]| kura_format::fuzz::$name(data));
    };
}
