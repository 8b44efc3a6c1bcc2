//! CPU hints: instructions that change how fast memory is reached, never what it holds.
//!
//! The one module outside the syscall wrappers allowed `unsafe`: `_mm_prefetch` is an
//! `unsafe fn` only because it is a `#[target_feature]` intrinsic; a prefetch cannot fault
//! (not even on an invalid address) and has no effect a program can observe except time.

/// Bytes in a cache line on the CPUs this targets.
pub(crate) const CACHE_LINE: usize = 64;

/// Ask the CPU to start loading the cache lines of `bytes` into its caches now, so that
/// writes to them soon after do not stall on memory. A no-op off x86-64.
#[inline]
pub(crate) fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        for line in bytes.chunks(CACHE_LINE) {
            // SAFETY: SSE, which the intrinsic requires, is part of the x86-64 baseline;
            // the pointer comes from a live slice, and a prefetch never faults anyway.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
