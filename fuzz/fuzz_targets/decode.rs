//! Coverage-guided fuzzing of one datagram through `Frame::parse`, with the checker of
//! `nakcast::sim::hostile::check_decode` (no panic, configured bounds held).
//! `cargo +nightly fuzz run decode` from the repository root; seed its corpus with
//! `cargo test --test fuzz write_fuzz_corpus -- --ignored` (structure-aware inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    nakcast::sim::hostile::check_decode(data);
});
