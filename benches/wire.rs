//! Frame encode and decode (src/proto/wire), no syscalls.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nakcast::proto::wire::{DataFrameWriter, FRAG_BEGIN, FRAG_END, Frame};

const FLAGS: u8 = FRAG_BEGIN | FRAG_END;

/// A frame of `n` messages of `size` bytes; returns its length.
fn encode(buf: &mut [u8], n: usize, size: usize, seq: u64) -> usize {
    let payload = [0xA5u8; 1500];
    let mut w = DataFrameWriter::begin(buf, 7, 0xDEAD_BEEF, seq).unwrap();
    for _ in 0..n {
        w.push(buf, FLAGS, &payload[..size]).unwrap();
    }
    w.finish(buf)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wire");
    let mut buf = vec![0u8; 1472];
    for (n, size) in [(1usize, 64usize), (16, 64), (1, 1400)] {
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("encode frame {n}x{size}B"), |b| {
            let mut seq = 0u64;
            b.iter(|| {
                seq += n as u64;
                black_box(encode(black_box(&mut buf), n, size, seq))
            })
        });
        let len = encode(&mut buf, n, size, 1);
        let frame = buf[..len].to_vec();
        g.bench_function(format!("decode frame {n}x{size}B"), |b| {
            b.iter(|| {
                let Ok(Frame::Data(d)) = Frame::parse(black_box(&frame)) else {
                    panic!("not a data frame")
                };
                let mut bytes = 0;
                for f in d.fragments() {
                    bytes += f.payload.len();
                }
                black_box(bytes)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
