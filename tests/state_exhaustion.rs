//! State exhaustion: floods of frames with random session ids, source addresses and
//! streams cannot grow a receiver's or a publisher's memory past its configured limits.
//! Each test measures the process's resident set (`/proc/self/statm`) before and after the
//! flood and checks the bounded-state counters ([`Receiver::footprint`],
//! [`Publisher::queued_repairs`], [`Publisher::dynamic_destinations`]).
//!
//! The tests take a lock so that they never run at the same time (they share one RSS).
//! `cargo test --release --test state_exhaustion -- --nocapture` prints the figures.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use nakcast::proto::wire::{
    self, DataFrameWriter, FRAG_BEGIN, FRAG_END, FrameType, MAX_RANGE_SPAN, SeqRange,
};
use nakcast::proto::{Publisher, PublisherConfig, Receiver, ReceiverConfig};

static RSS_LOCK: Mutex<()> = Mutex::new(());

/// Resident set size of this process, in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn mib(b: usize) -> f64 {
    b as f64 / f64::from(1 << 20)
}

fn random_addr(rng: &mut SmallRng) -> SocketAddr {
    SocketAddr::from((
        [10, rng.random(), rng.random(), rng.random()],
        rng.random::<u16>(),
    ))
}

/// One random frame a receiver acts on: DATA, HEARTBEAT or CLOSE announcing random (often
/// huge) windows, or UNAVAILABLE, with a random session and stream.
fn random_group_frame(rng: &mut SmallRng, buf: &mut [u8]) -> usize {
    let stream = rng.random_range(0..4);
    let session = rng.random();
    let seq = if rng.random_bool(0.5) {
        rng.random_range(0..1 << 20)
    } else {
        rng.random::<u64>() >> 1
    };
    match rng.random_range(0..4) {
        0 | 1 => {
            let mut w = DataFrameWriter::begin(buf, stream, session, seq).unwrap();
            let len = rng.random_range(0..1400);
            w.push(buf, FRAG_BEGIN | FRAG_END, &vec![0xAB; len])
                .unwrap();
            w.finish(buf)
        }
        2 => {
            let ty = if rng.random_bool(0.8) {
                FrameType::Heartbeat
            } else {
                FrameType::Close
            };
            let next = seq.saturating_add(rng.random_range(0..u64::MAX >> 2));
            wire::emit_control(buf, ty, stream, session, next, seq).unwrap()
        }
        _ => {
            let r = SeqRange::new(seq, seq + rng.random_range(1..MAX_RANGE_SPAN));
            wire::emit_ranges(buf, FrameType::Unavailable, stream, session, &[r]).unwrap()
        }
    }
}

/// A million frames from random sources, sessions and streams: the receiver tracks at most
/// `max_sources`, refuses the rest, and its memory stops growing once those are full.
#[test]
fn a_million_forged_frames_leave_the_receiver_within_its_limits() {
    let _serial = RSS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = ReceiverConfig::default();
    let mut r = Receiver::new(cfg.clone(), 1);
    let mut rng = SmallRng::seed_from_u64(7);
    let mut buf = vec![0u8; 2048];
    let mut nak = vec![0u8; 2048];
    let t0 = Instant::now();
    let mut now = t0;
    let before = rss();
    let mut peak_sources = 0;
    let mut max_gaps = 0;
    let mut max_buffer = 0;
    for i in 0..1_000_000u64 {
        let n = random_group_frame(&mut rng, &mut buf);
        let from = random_addr(&mut rng);
        r.handle_datagram(now, from, &buf[..n], &mut |_| {});
        if i % 64 == 0 {
            now += Duration::from_micros(50);
            r.handle_timeout(now, &mut |_| {});
            while r.poll_transmit(now, &mut nak).is_some() {}
            let f = r.footprint();
            peak_sources = peak_sources.max(f.sources);
            max_gaps = max_gaps.max(f.max_gaps);
            max_buffer = max_buffer.max(f.max_buffer_bytes);
            assert!(f.sources <= cfg.max_sources, "{f:?}");
            assert!(f.max_gaps <= 2 * cfg.reorder_window + 4, "{f:?}");
            assert!(f.max_held_bytes <= cfg.reorder_bytes, "{f:?}");
            assert!(
                f.max_buffer_bytes <= 2 * cfg.reorder_bytes + 2 * cfg.max_message_size + 65_535,
                "{f:?}"
            );
        }
    }
    let after = rss();
    let s = r.stats();
    println!(
        "receiver: 1,000,000 forged frames in {:.2} s; RSS {:.1} MiB -> {:.1} MiB (+{:.1}); \
         sources peak {peak_sources} (limit {}), rejected {}, most gaps in a source \
         {max_gaps}, most buffer bytes in a source {max_buffer}",
        t0.elapsed().as_secs_f64(),
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        cfg.max_sources,
        s.sources_rejected,
    );
    assert_eq!(peak_sources, cfg.max_sources, "the flood filled the table");
    // A quarter of the frames are UNAVAILABLE, which never creates a source.
    assert!(s.sources_rejected > 700_000, "{s:?}");
    // Each tracked source costs its reorder window's slot table (reorder_window slots of
    // under 64 bytes) plus what its buffers hold; the random frames rarely buffer much.
    let bound = cfg.max_sources * cfg.reorder_window * 64 + (64 << 20);
    assert!(
        after.saturating_sub(before) <= bound,
        "RSS grew {} B, bound {bound}",
        after - before
    );
}

/// Forged sources each make every other slot of their reorder window grow to a 16 KiB
/// fragment in turn (each held only briefly, so `reorder_bytes` never binds). Before the
/// window bounded its buffers this kept 8 x 2048 x 16 KiB = 256 MiB; now it keeps at most
/// twice `reorder_bytes` per source.
#[test]
fn forged_sources_cannot_make_reorder_buffers_outgrow_reorder_bytes() {
    let _serial = RSS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = ReceiverConfig {
        max_sources: 8,
        reorder_window: 4096,
        reorder_bytes: 1 << 20,
        max_message_size: 64 << 10,
        ..ReceiverConfig::default()
    };
    let mut r = Receiver::new(cfg.clone(), 1);
    let mut buf = vec![0u8; 20_000];
    let big = vec![0xCD; 16 << 10];
    let now = Instant::now();
    let before = rss();
    let frame = |buf: &mut Vec<u8>, session: u64, seq: u64, payload: &[u8]| {
        let mut w = DataFrameWriter::begin(buf, 0, session, seq).unwrap();
        w.push(buf, FRAG_BEGIN | FRAG_END, payload).unwrap();
        w.finish(buf)
    };
    let mut delivered = 0u64;
    for src in 0..8u8 {
        let from = SocketAddr::from(([10, 9, 9, src], 9000));
        let session = 1000 + u64::from(src);
        let n = frame(&mut buf, session, 0, b"join");
        r.handle_datagram(now, from, &buf[..n], &mut |_| {});
        // Round k: fragment 2k+2 (large) arrives ahead of 2k+1 (small), then 2k+1 delivers
        // both; every slot of the window is used in turn.
        for k in 0..5000u64 {
            let n = frame(&mut buf, session, 2 * k + 2, &big);
            r.handle_datagram(now, from, &buf[..n], &mut |_| {});
            let n = frame(&mut buf, session, 2 * k + 1, b"x");
            r.handle_datagram(now, from, &buf[..n], &mut |e| {
                if let nakcast::Event::Message { .. } = e {
                    delivered += 1;
                }
            });
        }
    }
    let after = rss();
    let f = r.footprint();
    println!(
        "slot-growth attack, 8 sources x 5000 rounds of 16 KiB: RSS {:.1} MiB -> {:.1} MiB \
         (+{:.1}); payload buffers {} B in all, at most {} B in a source (reorder_bytes {})",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        f.buffer_bytes,
        f.max_buffer_bytes,
        cfg.reorder_bytes
    );
    assert_eq!(delivered, 8 * 10_000, "the attack went through the window");
    assert!(
        f.max_buffer_bytes <= 2 * cfg.reorder_bytes + big.len(),
        "{f:?}"
    );
    assert!(
        after.saturating_sub(before) < 64 << 20,
        "RSS grew {:.1} MiB",
        mib(after - before)
    );
}

/// A million NAK and STATUS frames from random addresses, sessions and streams (a quarter
/// of them for the publisher's own session and stream; half the STATUS frames flow
/// reports): queued repairs, destinations and flow receivers stay at their limits and the
/// publisher allocates nothing more.
#[test]
fn a_million_forged_naks_and_statuses_leave_the_publisher_within_its_limits() {
    let _serial = RSS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    // The flood arrives at 800,000/s of virtual time; lift the control-rate limit (which
    // would shed most of it unread) so that every frame reaches the state it could grow.
    let cfg = PublisherConfig {
        stream: 7,
        max_control_rate: u64::MAX,
        control_burst: u64::MAX,
        ..PublisherConfig::default()
    };
    let session = 0xABCD;
    let mut p = Publisher::new(cfg.clone(), session, t0);
    let mut out = vec![0u8; cfg.mtu];
    let mut now = t0;
    for _ in 0..20_000 {
        p.offer(now, &[1; 300]).unwrap();
        while p.poll_transmit(now, &mut out).is_some() {}
    }
    let mut rng = SmallRng::seed_from_u64(9);
    let mut buf = vec![0u8; 2048];
    let before = rss();
    let (mut max_queued, mut max_dest, mut max_flow) = (0, 0, 0);
    for i in 0..1_000_000u64 {
        let ours = rng.random_bool(0.25);
        let (stream, sess) = if ours {
            (7, session)
        } else {
            (rng.random_range(0..16), rng.random())
        };
        let n = if rng.random_bool(0.5) {
            let start = rng.random_range(0..40_000);
            let r = SeqRange::new(start, start + rng.random_range(1..MAX_RANGE_SPAN));
            wire::emit_ranges(&mut buf, FrameType::Nak, stream, sess, &[r]).unwrap()
        } else {
            {
                // Flow reports from ever new addresses: the flow table must stay bounded.
                let flow = rng.random_bool(0.5).then(|| wire::FlowReport {
                    position: rng.random_range(0..40_000),
                    window: rng.random(),
                });
                wire::emit_status(&mut buf, stream, sess, rng.random_bool(0.1), flow).unwrap()
            }
        };
        p.handle_datagram(now, random_addr(&mut rng), &buf[..n]);
        if i % 16 == 0 {
            now += Duration::from_micros(20);
            while p.poll_transmit(now, &mut out).is_some() {}
        }
        max_queued = max_queued.max(p.queued_repairs());
        max_dest = max_dest.max(p.dynamic_destinations());
        max_flow = max_flow.max(p.flow_receivers());
        assert!(p.queued_repairs() <= cfg.max_queued_repairs);
        assert!(p.dynamic_destinations() <= cfg.max_destinations);
        assert!(p.flow_receivers() <= cfg.max_flow_receivers);
    }
    let after = rss();
    let s = p.stats();
    println!(
        "publisher: 1,000,000 forged NAK/STATUS frames; RSS {:.1} MiB -> {:.1} MiB (+{:.1}); \
         queued repairs peak {max_queued} (limit {}), destinations peak {max_dest} (limit {}), \
         refused {}, flow receivers peak {max_flow} (limit {}), refused {}, NAKs for this \
         session {}",
        mib(before),
        mib(after),
        mib(after.saturating_sub(before)),
        cfg.max_queued_repairs,
        cfg.max_destinations,
        s.destinations_refused,
        cfg.max_flow_receivers,
        s.flow_refused,
        s.naks_received
    );
    assert_eq!(max_dest, cfg.max_destinations, "the flood filled the table");
    assert!(s.destinations_refused > 50_000, "{s:?}");
    assert_eq!(
        max_flow, cfg.max_flow_receivers,
        "the flood filled the flow table"
    );
    assert!(s.flow_refused > 10_000, "{s:?}");
    assert!(s.naks_received > 100_000 && s.retransmits > 0, "{s:?}");
    // Everything the publisher keeps was allocated when it was built.
    assert!(
        after.saturating_sub(before) < 8 << 20,
        "RSS grew {:.1} MiB",
        mib(after - before)
    );
}
