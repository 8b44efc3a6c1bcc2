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
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let start = bytes.as_ptr() as usize & !(CACHE_LINE - 1);
        let end = bytes.as_ptr() as usize + bytes.len();
        for addr in (start..end).step_by(CACHE_LINE) {
            // SAFETY: SSE, which the intrinsic requires, is part of the x86-64 baseline,
            // and a prefetch never faults, whatever the address (each one here is in a
            // cache line of a live slice anyway).
            #[allow(unsafe_code)]
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}
