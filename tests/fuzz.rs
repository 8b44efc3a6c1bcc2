//! Fuzzing the frame decoder and the publisher's and receiver's datagram handlers with the
//! structure-aware generator of `nakcast::sim::hostile` (mutated valid frames, in scripts
//! that also offer data, advance time and run timers), checking that nothing panics and
//! every configured bound holds.
//!
//! `cargo test` runs a few seconds of it. The long run (docs/security/hostile-input.md has
//! the figures):
//!
//! ```sh
//! NAKCAST_FUZZ_ITERS=4000000 NAKCAST_FUZZ_SEED=1 cargo test --release --test fuzz -- --ignored --nocapture
//! ```
//!
//! A failure prints the failing input as a byte array: add it to
//! `tests/fuzz_regressions.rs`. The coverage-guided targets for the same checkers are in
//! `fuzz/` (cargo-fuzz, nightly).

use std::time::Instant;

use nakcast::sim::hostile::{Target, fuzz};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(target: Target, seed: u64, inputs: u64, ops: usize) {
    let start = Instant::now();
    let r = fuzz(target, seed, inputs, ops);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{target:?} seed {seed}: {} inputs, {} datagrams ({:.0}/s), {} frames produced, \
         max gaps per source {}, {secs:.1} s",
        r.inputs,
        r.datagrams,
        r.datagrams as f64 / secs,
        r.transmits,
        r.max_gaps
    );
    assert_eq!(r.inputs, inputs);
    assert!(r.datagrams >= inputs.min(1), "{r:?}");
}

#[test]
fn short_fuzz_decoder() {
    run(Target::Decode, 0xDEC0DE, 200_000, 0);
}

#[test]
fn short_fuzz_publisher() {
    run(Target::Publisher, 0x9B, 3_000, 120);
}

#[test]
fn short_fuzz_receiver() {
    run(Target::Receiver, 0x7EC, 3_000, 120);
}

/// The long run: `NAKCAST_FUZZ_ITERS` inputs per target (scripts of up to 120 operations
/// for the state machines, one datagram each for the decoder, which gets 20 times as many),
/// from `NAKCAST_FUZZ_SEED`.
#[test]
#[ignore = "long run: NAKCAST_FUZZ_ITERS=N cargo test --release --test fuzz -- --ignored"]
fn long_fuzz() {
    let iters = env_u64("NAKCAST_FUZZ_ITERS", 100_000);
    let seed = env_u64("NAKCAST_FUZZ_SEED", 1);
    let only = std::env::var("NAKCAST_FUZZ_TARGET").unwrap_or_default();
    let targets = [
        ("decode", Target::Decode),
        ("publisher", Target::Publisher),
        ("receiver", Target::Receiver),
    ];
    for (name, target) in targets {
        if !only.is_empty() && only != name {
            continue;
        }
        let n = if target == Target::Decode {
            iters * 20
        } else {
            iters
        };
        run(target, seed, n, 120);
    }
}

/// Seed cargo-fuzz's corpora (`fuzz/corpus/<target>/`, not committed) with generated
/// structure-aware inputs, so coverage-guided fuzzing starts from valid frames and scripts.
#[test]
#[ignore = "writes fuzz/corpus: cargo test --test fuzz write_fuzz_corpus -- --ignored"]
fn write_fuzz_corpus() {
    use nakcast::sim::hostile::Generator;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, target) in [
        ("decode", Target::Decode),
        ("publisher", Target::Publisher),
        ("receiver", Target::Receiver),
    ] {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut g = Generator::new(42);
        for i in 0..500 {
            std::fs::write(dir.join(format!("gen-{i:04}")), g.input(target, 40)).unwrap();
        }
    }
}
