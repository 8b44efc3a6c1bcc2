//! Coverage-guided fuzzing of a script driving a publisher core (NAKs, STATUS, garbage, offers, time), with the checker of
//! `nakcast::sim::hostile::check_publisher` (no panic, configured bounds held).
//! `cargo +nightly fuzz run publisher` from the repository root; seed its corpus with
//! `cargo test --test fuzz write_fuzz_corpus -- --ignored` (structure-aware inputs).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = nakcast::sim::hostile::check_publisher(data);
});
