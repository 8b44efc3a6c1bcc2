//! Retransmit ring insert (reserve + commit, evicting at steady state; with and without
//! writing a payload into the frame) and lookup.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use nakcast::proto::ring::RetransmitRing;

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    // The publisher's default geometry: 16 MiB, 64k frames, 4M sequence numbers.
    let mut ring = RetransmitRing::new(16 << 20, 1 << 16, 1 << 22, 0);
    let mut seq = 0u64;
    g.bench_function("insert 1472B frame (steady state, evicting)", |b| {
        b.iter(|| {
            let buf = ring.reserve(1472);
            buf[0] = seq as u8;
            ring.commit(seq, seq + 16, 1472);
            seq += 16;
        })
    });
    // As the publisher uses it: a whole 1 KiB payload written into each reserved frame.
    // The ring is larger than the caches and written once per lap, so this measures the
    // cost of writing cold memory, and what `reserve`'s prefetch of the next frame saves
    // (the bench above writes one byte per frame: it pays for the prefetch and gains
    // nothing from it).
    let payload = [0x5Au8; 1024];
    g.bench_function(
        "insert 1472B frame + write 1 KiB (steady state, evicting)",
        |b| {
            b.iter(|| {
                let buf = ring.reserve(1472);
                buf[..1024].copy_from_slice(black_box(&payload));
                ring.commit(seq, seq + 1, 1064);
                seq += 1;
            })
        },
    );
    // Fill completely, then look up retained sequence numbers at pseudo-random places.
    for _ in 0..(1 << 16) {
        ring.reserve(256);
        ring.commit(seq, seq + 16, 256);
        seq += 16;
    }
    let oldest = ring.oldest_seq();
    let span = seq - oldest;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    g.bench_function("lookup (find + frame) in a full ring", |b| {
        b.iter(|| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let s = oldest + x % span;
            let i = ring.find(black_box(s)).expect("retained");
            black_box(ring.frame(i).len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
