//! CPU hints: instructions that change how fast memory is reached, never what it holds.
//!
//! The one module outside the syscall wrappers allowed `unsafe`: `_mm_prefetch` is an
//! `unsafe fn`, being a `#[target_feature]` intrinsic that takes a raw pointer, but a
//! prefetch cannot fault (not even on an invalid address) and has no effect a program can
//! observe except time.

/// Bytes in a cache line on the CPUs this targets.
const CACHE_LINE: usize = 64;

/// Ask the CPU to start loading every cache line `bytes` touches (the first and last may
/// be partly outside it) into its caches now, so that writes to them soon after do not
/// stall on memory. A no-op off x86-64.
#[inline]
pub(crate) fn prefetch(bytes: &[u8]) {
    prefetch_range(bytes.as_ptr() as usize, bytes.len());
}

/// Like [`prefetch`], for the `T` that would be stored at `at`, which need not be a place
/// the program may read (one past the end of a buffer, say): nothing is read.
#[inline]
pub(crate) fn prefetch_at<T>(at: *const T) {
    prefetch_range(at as usize, std::mem::size_of::<T>());
}

#[inline]
fn prefetch_range(from: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = from & !(CACHE_LINE - 1);
        let end = from.saturating_add(len);
        for addr in (start..end).step_by(CACHE_LINE) {
            // SAFETY: SSE, which the intrinsic requires, is part of the x86-64 baseline,
            // and a prefetch never faults and reads nothing the program can see, whatever
            // the address.
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (from, len);
}
