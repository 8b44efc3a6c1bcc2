//! The publisher core's offer path: `offer` then `poll_transmit` into a buffer, and the
//! lone-message path (`offer_lone`, as `Publisher::offer` of the transport takes it when
//! nothing else waits); no sockets. Flow control is off: no receiver reports here, and the
//! start-up window would hold the frames back after 64 KiB.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nakcast::proto::{FlowControl, Publisher, PublisherConfig};

fn config() -> PublisherConfig {
    PublisherConfig {
        flow_control: FlowControl::None,
        ..PublisherConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("publisher");
    let msg = [0x5Au8; 1400];
    let mut frame = vec![0u8; 1472];
    let now = Instant::now();
    for size in [64usize, 1400] {
        let mut p = Publisher::new(config(), 1, now);
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
    // The latency path: a frame of its own, sealed, read back from the ring for the send.
    for size in [64usize, 1400] {
        let mut p = Publisher::new(config(), 1, now);
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("offer_lone+data_sent {size}B"), |b| {
            b.iter(|| {
                let (_, frame) = p.offer_lone(now, black_box(&msg[..size])).expect("lone");
                black_box(frame.len());
                p.data_sent(now, 1);
            })
        });
    }
    // Natural batching: 16 messages offered between polls share frames.
    let mut p = Publisher::new(config(), 1, now);
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
