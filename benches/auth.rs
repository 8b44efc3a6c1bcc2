//! Per-frame cost of authentication (src/proto/auth) against the CRC-only path, for a
//! 64-byte and a 1400-byte DATA frame (lengths before the 20-byte trailer).
//!
//! - `crc only: finish` writes the CRC of an encoded frame (what every frame costs today);
//!   `seal` sets FLAG_AUTH, appends key id and keyed-BLAKE3 MAC, and rewrites the CRC.
//! - `crc only: parse` checks the CRC and validates the frame (`Frame::parse`); `open`
//!   does the same plus the MAC check (`Keyring::open`).
//!
//! - `hmac-sha256 tag` computes HMAC-SHA256 (RustCrypto `hmac` + `sha2`, which use the
//!   SHA-NI instructions where the CPU has them) over the same bytes as the MAC, the
//!   alternative the design considered; it is not used by nakcast.
//!
//! `cargo bench --bench auth`; docs/SECURITY.md has the figures.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, KeyInit, Mac};
use nakcast::proto::auth::{AUTH_TRAILER_LEN, AuthConfig, Keyring};
use nakcast::proto::wire::{DataFrameWriter, FRAG_BEGIN, FRAG_END, Frame, finish_frame};
use sha2::Sha256;

/// A one-fragment DATA frame of exactly `len` bytes; returns its length.
fn encode(buf: &mut [u8], len: usize) -> usize {
    let payload = vec![0xA5u8; len - DataFrameWriter::EMPTY_LEN - 4];
    let mut w = DataFrameWriter::begin(buf, 7, 0xDEAD_BEEF, 1).unwrap();
    w.push(buf, FRAG_BEGIN | FRAG_END, &payload).unwrap();
    w.finish(buf)
}

fn bench(c: &mut Criterion) {
    let keys = Keyring::new(&AuthConfig::with_key(1, [0x42; 32]));
    let mut g = c.benchmark_group("auth");
    for len in [64usize, 1400] {
        g.throughput(Throughput::Elements(1));
        let mut buf = vec![0u8; 1500];
        let n = encode(&mut buf, len);
        assert_eq!(n, len);
        let plain = buf[..n].to_vec();
        g.bench_function(format!("crc only: finish {len}B"), |b| {
            b.iter(|| finish_frame(black_box(&mut buf[..len])))
        });
        g.bench_function(format!("seal {len}B"), |b| {
            b.iter(|| black_box(keys.seal(black_box(&mut buf), len).unwrap()))
        });
        let sealed_len = keys.seal(&mut buf, len).unwrap();
        assert_eq!(sealed_len, len + AUTH_TRAILER_LEN);
        let sealed = buf[..sealed_len].to_vec();
        g.bench_function(format!("crc only: parse {len}B"), |b| {
            b.iter(|| matches!(Frame::parse(black_box(&plain)), Ok(Frame::Data(_))))
        });
        g.bench_function(format!("open {len}B"), |b| {
            b.iter(|| matches!(keys.open(black_box(&sealed)), Ok(Frame::Data(_))))
        });
        let mac = Hmac::<Sha256>::new_from_slice(&[0x42; 32]).unwrap();
        g.bench_function(format!("hmac-sha256 tag {len}B"), |b| {
            b.iter(|| {
                let mut m = mac.clone();
                m.update(black_box(&sealed[4..len + 4]));
                black_box(m.finalize().into_bytes())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
