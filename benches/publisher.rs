//! The publisher core's offer path: `offer` then `poll_transmit` into a buffer, no sockets.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nakcast::proto::{Publisher, PublisherConfig};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("publisher");
    let msg = [0x5Au8; 1400];
    let mut frame = vec![0u8; 1472];
    let now = Instant::now();
    for size in [64usize, 1400] {
        let mut p = Publisher::new(PublisherConfig::default(), 1, now);
        g.throughput(Throughput::Elements(1));
        g.bench_function(
            format!("offer+poll_transmit {size}B (one frame each)"),
            |b| {
                b.iter(|| {
                    p.offer(now, black_box(&msg[..size])).unwrap();
                    let t = p.poll_transmit(now, &mut frame).expect("a frame");
                    black_box(t.len)
                })
            },
        );
    }
    // Natural batching: 16 messages offered between polls share frames.
    let mut p = Publisher::new(PublisherConfig::default(), 1, now);
    g.throughput(Throughput::Elements(16));
    g.bench_function("offer x16 64B then poll_transmit (batched)", |b| {
        b.iter(|| {
            for _ in 0..16 {
                p.offer(now, black_box(&msg[..64])).unwrap();
            }
            while let Some(t) = p.poll_transmit(now, &mut frame) {
                black_box(t.len);
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
