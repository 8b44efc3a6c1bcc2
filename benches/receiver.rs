//! The receiver core's in-order path: `handle_datagram` of pre-encoded frames, no sockets.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nakcast::proto::{Event, FlowControl, Publisher, PublisherConfig, Receiver, ReceiverConfig};

/// `frames` in-order DATA frames of `per_frame` messages of `size` bytes from one session.
fn encode(frames: usize, per_frame: usize, size: usize, now: Instant) -> Vec<Vec<u8>> {
    let mut p = Publisher::new(
        PublisherConfig {
            stream: 7,
            // No receiver reports here: the start-up window would hold frames back.
            flow_control: FlowControl::None,
            ..PublisherConfig::default()
        },
        42,
        now,
    );
    let msg = vec![0x3Cu8; size];
    let mut buf = vec![0u8; 1472];
    let mut out = Vec::with_capacity(frames);
    while out.len() < frames {
        for _ in 0..per_frame {
            p.offer(now, &msg).unwrap();
        }
        while let Some(t) = p.poll_transmit(now, &mut buf) {
            out.push(buf[..t.len].to_vec());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("receiver");
    let now = Instant::now();
    let from: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    for (per_frame, size) in [(1usize, 64usize), (16, 64), (1, 1400)] {
        let frames = encode(100_000, per_frame, size, now);
        g.throughput(Throughput::Elements(per_frame as u64));
        g.bench_function(
            format!("handle_datagram in order, {per_frame}x{size}B per frame"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut left = iters as usize;
                    while left > 0 {
                        // A fresh receiver per pass over the frames (not timed).
                        let n = left.min(frames.len());
                        let mut r = Receiver::new(ReceiverConfig::default(), 1);
                        let mut bytes = 0usize;
                        let mut handler = |e: Event<'_>| {
                            if let Event::Message { payload, .. } = e {
                                bytes += payload.len();
                            }
                        };
                        let t = Instant::now();
                        for f in &frames[..n] {
                            r.handle_datagram(now, from, black_box(f), &mut handler);
                        }
                        total += t.elapsed();
                        black_box(bytes);
                        left -= n;
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
