use super::*;
use crate::proto::wire::{Frame, FrameType, SeqRange, emit_ranges, emit_status};
use proptest::prelude::*;

/// The defaults with one copy per repair and no flow control: these tests count repair
/// datagrams and send more than the initial flow window with no receiver reporting; the
/// copies and flow control have their own tests (`repair_copies_*`, `flow_*`).
fn one_copy() -> PublisherConfig {
    PublisherConfig {
        repair_copies: 1,
        flow_control: FlowControl::None,
        ..PublisherConfig::default()
    }
}

fn t0() -> Instant {
    Instant::now()
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

fn peer() -> SocketAddr {
    "10.0.0.9:7000".parse().unwrap()
}

fn drain(p: &mut Publisher, now: Instant) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let mut out = Vec::new();
    while let Some(t) = p.poll_transmit(now, &mut buf) {
        assert_eq!(t.destination, Destination::Group);
        out.push(buf[..t.len].to_vec());
    }
    out
}

fn nak(p: &Publisher, ranges: &[SeqRange]) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let n = emit_ranges(&mut buf, FrameType::Nak, p.stream(), p.session(), ranges).unwrap();
    buf.truncate(n);
    buf
}

fn data(frame: &[u8]) -> crate::proto::wire::DataFrame<'_> {
    match Frame::parse(frame).unwrap() {
        Frame::Data(d) => d,
        other => panic!("expected DATA, got {other:?}"),
    }
}

#[test]
fn messages_offered_between_polls_share_a_frame() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 42, now);
    for i in 0..10u8 {
        assert_eq!(p.offer(now, &[i; 20]).unwrap(), u64::from(i));
    }
    let frames = drain(&mut p, now);
    assert_eq!(frames.len(), 1);
    let d = data(&frames[0]);
    assert_eq!((d.first_seq, d.count), (0, 10));
    assert!(
        d.fragments()
            .all(|f| f.flags == FRAG_BEGIN | FRAG_END && f.payload.len() == 20)
    );
    // A lone message goes out at the next poll: no added latency.
    p.offer(now, b"x").unwrap();
    assert_eq!(drain(&mut p, now).len(), 1);
}

#[test]
fn large_messages_are_fragmented_and_frames_respect_mtu() {
    let now = t0();
    let cfg = PublisherConfig {
        mtu: 200,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 1, now);
    let msg: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
    p.offer(now, b"small").unwrap();
    let seq = p.offer(now, &msg).unwrap();
    assert_eq!(seq, 1);
    let frames = drain(&mut p, now);
    assert!(frames.iter().all(|f| f.len() <= 200));
    let frags: Vec<_> = frames
        .iter()
        .flat_map(|f| {
            data(f)
                .fragments()
                .map(|x| (x.seq, x.flags, x.payload.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(frags[0].2, b"small");
    let parts = &frags[1..];
    assert_eq!(parts[0].1, FRAG_BEGIN);
    assert_eq!(parts.last().unwrap().1, FRAG_END);
    assert!(parts[1..parts.len() - 1].iter().all(|f| f.1 == 0));
    let joined: Vec<u8> = parts.iter().flat_map(|f| f.2.clone()).collect();
    assert_eq!(joined, msg);
    assert_eq!(p.next_seq(), 1 + parts.len() as u64);
}

#[test]
fn offer_pushes_back_instead_of_buffering_without_bound() {
    let now = t0();
    let cfg = PublisherConfig {
        ring_bytes: 64 << 10,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 1, now);
    let msg = [7u8; 1000];
    let mut accepted = 0;
    while p.offer(now, &msg).is_ok() {
        accepted += 1;
        assert!(accepted < 1000, "never pushed back");
    }
    assert_eq!(p.offer(now, &msg), Err(OfferError::BackPressure));
    assert_eq!(drain(&mut p, now).len(), accepted);
    assert!(p.offer(now, &msg).is_ok(), "sending frees the allowance");
    let too_big = vec![0u8; p.config().max_message_size + 1];
    assert_eq!(p.offer(now, &too_big), Err(OfferError::MessageTooLarge));
}

#[test]
fn send_rate_limit_reports_when_to_retry() {
    let now = t0();
    let cfg = PublisherConfig {
        send_rate: Some(1000),
        send_burst: 100,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 1, now);
    assert!(p.offer(now, &[0; 100]).is_ok());
    match p.offer(now, &[0; 50]) {
        Err(OfferError::RateLimited(at)) => assert_eq!(at, now + Duration::from_millis(50)),
        other => panic!("{other:?}"),
    }
    assert!(p.offer(now + Duration::from_millis(50), &[0; 50]).is_ok());
}

#[test]
fn nak_is_repaired_once_per_linger_and_evicted_data_is_unavailable() {
    let now = t0();
    let cfg = PublisherConfig {
        ring_frames: 16,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg.clone(), 9, now);
    for i in 0..20u8 {
        p.offer(now, &[i; 10]).unwrap();
        drain(&mut p, now);
    }
    assert_eq!(p.oldest_retained(), 4);
    let n = nak(&p, &[SeqRange::new(10, 12)]);
    p.handle_datagram(now, peer(), &n);
    let out = drain(&mut p, now);
    // Two consecutive small frames: one repair datagram carries both.
    assert_eq!(out.len(), 1);
    let d = data(&out[0]);
    assert!(d.is_retransmit());
    assert_eq!((d.first_seq, d.count), (10, 2));
    assert_eq!(p.stats().repairs_coalesced, 1);
    // Many receivers NAK the same loss within the linger: no second repair.
    for _ in 0..50 {
        p.handle_datagram(now + us(10), peer(), &n);
    }
    assert!(drain(&mut p, now + us(10)).is_empty());
    assert_eq!(p.stats().repairs_suppressed, 100);
    // After the linger a NAK (a lost repair) is served again.
    let later = now + cfg.repair_linger + us(1);
    p.handle_datagram(later, peer(), &n);
    assert_eq!(drain(&mut p, later).len(), 1);
    // Evicted data: UNAVAILABLE from the requested start up to the oldest retained.
    p.handle_datagram(later, peer(), &nak(&p, &[SeqRange::new(1, 5)]));
    let out = drain(&mut p, later);
    assert_eq!(out.len(), 2, "UNAVAILABLE [1,4) and a repair of 4");
    match Frame::parse(&out[0]).unwrap() {
        Frame::Unavailable(l) => assert_eq!(l.iter().collect::<Vec<_>>(), [SeqRange::new(1, 4)]),
        other => panic!("{other:?}"),
    }
    assert_eq!(data(&out[1]).first_seq, 4);
}

#[test]
fn foreign_and_garbled_naks_are_counted_and_ignored() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 9, now);
    p.offer(now, b"a").unwrap();
    drain(&mut p, now);
    let mut buf = [0u8; 256];
    let n = emit_ranges(&mut buf, FrameType::Nak, 0, 10, &[SeqRange::new(0, 1)]).unwrap();
    p.handle_datagram(now, peer(), &buf[..n]);
    p.handle_datagram(now, peer(), b"garbage");
    assert!(drain(&mut p, now).is_empty());
    assert_eq!(p.stats().ignored_frames, 1);
    assert_eq!(p.stats().decode_errors, 1);
}

#[test]
fn nak_flood_cannot_exceed_the_retransmit_cap() {
    let now = t0();
    let cfg = PublisherConfig {
        retransmit_rate: 1 << 20,
        retransmit_burst: 64 << 10,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 3, now);
    for _ in 0..5000 {
        p.offer(now, &[1; 1000]).unwrap();
        drain(&mut p, now);
    }
    let flood = nak(&p, &[SeqRange::new(0, 5000)]);
    let mut t = now;
    let mut bytes = 0usize;
    // A NAK for the whole ring every 10 us for one second of virtual time.
    for _ in 0..100_000 {
        t += us(10);
        p.handle_datagram(t, peer(), &flood);
        let frames = drain(&mut p, t);
        bytes += frames
            .iter()
            .filter(|f| f.len() > 100)
            .map(|f| {
                assert!(data(f).is_retransmit());
                f.len()
            })
            .sum::<usize>();
        assert!(p.repairs.len() <= p.cfg.max_queued_repairs);
    }
    let cap = (1 << 20) + (64 << 10);
    assert!(bytes <= cap, "{bytes} > {cap}");
    assert!(bytes > cap / 2, "repairs still flow: {bytes}");
}

/// One NAK naming everything (64 ranges of 2^32 from 0) causes at most
/// `max_frames_examined_per_nak` repairs, each frame at most once, however long the
/// publisher then runs; a copy of it within the repair linger causes none.
#[test]
fn one_nak_causes_bounded_retransmission() {
    for (examined, queued) in [(1024, 1024), (10, 1024), (1024, 50)] {
        let now = t0();
        let cfg = PublisherConfig {
            max_frames_examined_per_nak: examined,
            max_queued_repairs: queued,
            ..one_copy()
        };
        let mut p = Publisher::new(cfg, 3, now);
        for _ in 0..5000 {
            p.offer(now, &[1; 1000]).unwrap();
            drain(&mut p, now);
        }
        let ranges: Vec<SeqRange> = (0..MAX_RANGES_ALL)
            .map(|i| SeqRange::new(i * wire::MAX_RANGE_SPAN, (i + 1) * wire::MAX_RANGE_SPAN))
            .collect();
        let everything = nak(&p, &ranges);
        p.handle_datagram(now, peer(), &everything);
        let bound = examined.min(queued);
        assert_eq!(p.queued_repairs(), bound);
        // The copy arrives while those repairs are queued: nothing more.
        p.handle_datagram(now + us(1), peer(), &everything);
        let mut seqs = Vec::new();
        let mut t = now;
        for _ in 0..2000 {
            t += us(100);
            for f in drain(&mut p, t) {
                if f.len() > 100 {
                    let d = data(&f);
                    assert!(d.is_retransmit());
                    seqs.push(d.first_seq);
                }
            }
        }
        let mut unique = seqs.clone();
        unique.dedup();
        assert_eq!(unique.len(), seqs.len(), "a frame repaired twice");
        assert_eq!(seqs.len(), bound, "examined {examined}, queue {queued}");
        assert_eq!(p.stats().retransmits, bound as u64);
        assert!(p.stats().retransmit_bytes <= (bound * p.config().mtu) as u64);
    }
}

const MAX_RANGES_ALL: u64 = wire::MAX_RANGES as u64;

/// Found by cargo-fuzz: with `initial_seq` near the end of the sequence space, offering
/// past it overflowed `next_seq` (and in release builds broke the ring's "unsent frames are
/// never evicted" invariant, a panic). Now the offer is refused and nothing is queued.
#[test]
fn offers_past_the_end_of_the_sequence_space_are_refused() {
    let now = t0();
    let cfg = PublisherConfig {
        initial_seq: u64::MAX - 3,
        mtu: 200,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 1, now);
    assert_eq!(p.offer(now, b"a"), Ok(u64::MAX - 3));
    assert_eq!(p.offer(now, b"b"), Ok(u64::MAX - 2));
    // Three fragments would need sequence numbers up to u64::MAX: refused.
    assert_eq!(
        p.offer(now, &[0; 400]),
        Err(OfferError::SequenceSpaceExhausted)
    );
    assert_eq!(p.offer(now, b"c"), Ok(u64::MAX - 1));
    assert_eq!(p.offer(now, b"d"), Err(OfferError::SequenceSpaceExhausted));
    let frames = drain(&mut p, now);
    let d = data(&frames[0]);
    assert_eq!((d.first_seq, d.end_seq()), (u64::MAX - 3, u64::MAX));
    assert_eq!(p.next_seq(), u64::MAX);
}

#[test]
fn heartbeats_back_off_while_idle_and_close_repeats() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 5, now);
    p.offer(now, b"x").unwrap();
    assert_eq!(drain(&mut p, now).len(), 1);
    let mut sent_at = Vec::new();
    let mut t = now;
    while t < now + Duration::from_millis(500) {
        t = p.poll_timeout();
        for f in drain(&mut p, t) {
            match Frame::parse(&f).unwrap() {
                Frame::Heartbeat {
                    next_seq,
                    oldest_seq,
                    ..
                } => {
                    assert_eq!((next_seq, oldest_seq), (1, 0));
                    sent_at.push((t - now).as_millis());
                }
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(&sent_at[..8], &[1, 3, 7, 15, 31, 63, 127, 227]);
    p.close(t);
    assert_eq!(p.offer(t, b"y"), Err(OfferError::Closed));
    let out = drain(&mut p, t);
    assert!(matches!(
        Frame::parse(&out[0]).unwrap(),
        Frame::Close { next_seq: 1, .. }
    ));
    let t2 = p.poll_timeout();
    assert_eq!(t2, t + Duration::from_millis(1));
    assert!(matches!(
        Frame::parse(&drain(&mut p, t2)[0]).unwrap(),
        Frame::Close { .. }
    ));
}

fn status(stream: u32, session: u64, leaving: bool) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let n = emit_status(&mut buf, stream, session, leaving, None).unwrap();
    buf[..n].to_vec()
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 9000 + (i >> 16) as u16))
}

fn dests(p: &Publisher) -> Vec<SocketAddr> {
    let mut v: Vec<_> = p.destinations().collect();
    v.sort();
    v
}

#[test]
fn status_adds_refreshes_expires_and_leaving_removes_a_destination() {
    let now = t0();
    let cfg = PublisherConfig {
        stream: 4,
        ..one_copy()
    };
    let timeout = cfg.destination_timeout;
    let mut p = Publisher::new(cfg, 77, now);
    assert_eq!(p.destinations().count(), 0);
    // A joiner does not know the session: 0 (or anything) is accepted; another stream is not.
    p.handle_datagram(now, addr(1), &status(4, 0, false));
    p.handle_datagram(now, addr(2), &status(4, 12345, false));
    p.handle_datagram(now, addr(3), &status(5, 77, false));
    assert_eq!(dests(&p), [addr(1), addr(2)]);
    assert_eq!(p.stats().destinations_added, 2);
    assert_eq!(p.stats().status_received, 2);
    assert_eq!(p.stats().ignored_frames, 1);

    // Refresh addr(1) halfway; addr(2) stays silent and expires at the timeout.
    let half = now + timeout / 2;
    p.handle_datagram(half, addr(1), &status(4, 77, false));
    assert_eq!(p.stats().destinations_added, 2, "a refresh is not an add");
    assert_eq!(
        p.next_expiry,
        Some(now + timeout),
        "a lower bound of the expiries"
    );
    drain(&mut p, now + timeout - us(1));
    assert_eq!(dests(&p), [addr(1), addr(2)]);
    drain(&mut p, now + timeout);
    assert_eq!(dests(&p), [addr(1)]);
    assert_eq!(p.stats().destinations_expired, 1);
    drain(&mut p, half + timeout);
    assert!(
        dests(&p).is_empty(),
        "refreshed one expires a timeout after its refresh"
    );
    assert_eq!(p.stats().destinations_expired, 2);

    // LEAVING removes at once; LEAVING from an unknown address is harmless.
    let t = half + timeout;
    p.handle_datagram(t, addr(5), &status(4, 77, false));
    p.handle_datagram(t, addr(5), &status(4, 77, true));
    p.handle_datagram(t, addr(6), &status(4, 77, true));
    assert!(dests(&p).is_empty());
    assert_eq!(p.stats().destinations_left, 1);
    assert_eq!(p.stats().destinations_expired, 2);
}

#[test]
fn static_destinations_never_expire_and_do_not_count_against_the_limit() {
    let now = t0();
    let cfg = PublisherConfig {
        max_destinations: 2,
        ..one_copy()
    };
    let timeout = cfg.destination_timeout;
    let mut p = Publisher::new(cfg, 1, now);
    p.add_destination(addr(100));
    p.add_destination(addr(100));
    for i in 0..3 {
        p.handle_datagram(now, addr(i), &status(0, 0, false));
    }
    assert_eq!(dests(&p), [addr(0), addr(1), addr(100)]);
    assert_eq!(p.stats().destinations_refused, 1);
    // STATUS and LEAVING from a static destination change nothing.
    p.handle_datagram(now, addr(100), &status(0, 0, true));
    drain(&mut p, now + timeout * 10);
    assert_eq!(dests(&p), [addr(100)]);
    // A dynamic destination made static stays; remove_destination removes either kind.
    p.handle_datagram(now + timeout * 10, addr(7), &status(0, 0, false));
    p.add_destination(addr(7));
    drain(&mut p, now + timeout * 20);
    assert_eq!(dests(&p), [addr(7), addr(100)]);
    assert!(p.remove_destination(addr(7)));
    assert!(!p.remove_destination(addr(7)));
    assert_eq!(dests(&p), [addr(100)]);
}

#[test]
fn destinations_beyond_the_limit_are_refused_until_one_expires() {
    let now = t0();
    let cfg = PublisherConfig {
        max_destinations: 3,
        ..one_copy()
    };
    let timeout = cfg.destination_timeout;
    let mut p = Publisher::new(cfg, 1, now);
    for i in 0..3 {
        p.handle_datagram(now + us(u64::from(i)), addr(i), &status(0, 0, false));
    }
    p.handle_datagram(now, addr(9), &status(0, 0, false));
    assert_eq!(p.stats().destinations_refused, 1);
    assert_eq!(dests(&p), [addr(0), addr(1), addr(2)]);
    // Once the oldest is stale, a newcomer takes its slot, even before any poll_transmit.
    p.handle_datagram(now + timeout, addr(9), &status(0, 0, false));
    assert_eq!(dests(&p), [addr(1), addr(2), addr(9)]);
    assert_eq!(p.stats().destinations_expired, 1);
    assert_eq!(p.stats().destinations_refused, 1);
}

#[test]
fn status_flood_from_random_addresses_stays_bounded_without_allocating() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 1, now);
    let max = p.config().max_destinations;
    let cap = p.destinations.capacity();
    assert!(cap >= max);
    let frame = status(0, 0, false);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 2048];
    for i in 0..100_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from = SocketAddr::from((
            [(x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8, x as u8],
            (x >> 32) as u16,
        ));
        let t = now + us(i * 10);
        p.handle_datagram(t, from, &frame);
        while p.poll_transmit(t, &mut buf).is_some() {}
        assert!(p.destinations().count() <= max);
    }
    assert_eq!(
        p.destinations.capacity(),
        cap,
        "the destination table never grew"
    );
    // 1 s of virtual time, below the 5 s timeout: the first 64 stay, the rest are refused,
    // or shed unread past the control rate (100,000/s here, twice the default limit).
    let s = p.stats();
    assert_eq!(s.destinations_added, max as u64);
    assert!(s.control_shed > 0);
    assert_eq!(
        s.destinations_refused + s.control_shed,
        100_000 - max as u64
    );
}

#[test]
fn a_new_destination_gets_a_heartbeat_promptly() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 5, now);
    p.offer(now, b"x").unwrap();
    drain(&mut p, now);
    // Idle long enough for the heartbeat interval to reach heartbeat_max.
    let mut t = now;
    while t < now + Duration::from_millis(500) {
        t = p.poll_timeout();
        drain(&mut p, t);
    }
    let later = t + Duration::from_millis(10);
    assert!(drain(&mut p, later).is_empty(), "not due yet");
    p.handle_datagram(later, addr(1), &status(0, 0, false));
    assert_eq!(p.poll_timeout(), later);
    let out = drain(&mut p, later);
    assert_eq!(out.len(), 1);
    assert!(matches!(
        Frame::parse(&out[0]).unwrap(),
        Frame::Heartbeat {
            next_seq: 1,
            oldest_seq: 0,
            ..
        }
    ));
    // A refresh does not trigger another.
    p.handle_datagram(later, addr(1), &status(0, 0, false));
    assert!(drain(&mut p, later).is_empty());
}

#[test]
fn poll_timeout_does_not_report_a_heartbeat_blocked_by_a_lingering_frame() {
    let now = t0();
    let cfg = PublisherConfig {
        linger: Duration::from_millis(10),
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 5, now);
    // Heartbeat due at now + 1 ms, but a frame opened at now + 0.5 ms lingers until 10.5.
    let t = now + us(500);
    p.offer(t, b"x").unwrap();
    assert!(drain(&mut p, now + Duration::from_millis(2)).is_empty());
    assert_eq!(p.poll_timeout(), t + Duration::from_millis(10));
    // A joiner's prompt heartbeat also waits for the seal.
    p.handle_datagram(
        now + Duration::from_millis(2),
        addr(1),
        &status(0, 0, false),
    );
    assert_eq!(p.poll_timeout(), t + Duration::from_millis(10));
    let out = drain(&mut p, t + Duration::from_millis(10));
    assert_eq!(out.len(), 2, "the data, then the heartbeat");
    assert!(matches!(
        Frame::parse(&out[1]).unwrap(),
        Frame::Heartbeat { .. }
    ));
    // Huge timeouts from a config file are clamped instead of overflowing an Instant.
    let cfg = PublisherConfig {
        destination_timeout: Duration::MAX,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 5, now);
    p.handle_datagram(now, addr(1), &status(0, 0, false));
    assert_eq!(p.destinations().count(), 1);
}

proptest! {
    /// Arbitrary datagrams never panic the publisher or make it send anything unasked.
    #[test]
    fn arbitrary_datagrams_never_panic(dgrams in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..200), 1..20)) {
        let now = t0();
        let mut p = Publisher::new(one_copy(), 1, now);
        for d in &dgrams {
            p.handle_datagram(now, peer(), d);
        }
        prop_assert!(drain(&mut p, now).is_empty());
    }

    /// NAKs with arbitrary ranges (valid CRC, right session) never panic and stay bounded.
    #[test]
    fn arbitrary_naks_stay_bounded(ranges in proptest::collection::vec((any::<u64>(), 1u64..1_000_000), 1..64),
                                   offers in 0usize..300) {
        let now = t0();
        let mut p = Publisher::new(PublisherConfig { ring_frames: 64, ..one_copy() }, 1, now);
        for _ in 0..offers {
            p.offer(now, &[3; 100]).unwrap();
            drain(&mut p, now);
        }
        let ranges: Vec<SeqRange> = ranges.iter().map(|&(s, l)| SeqRange::new(s.min(u64::MAX - l), s.min(u64::MAX - l) + l)).collect();
        p.handle_datagram(now, peer(), &nak(&p, &ranges));
        let out = drain(&mut p, now);
        prop_assert!(out.len() <= p.cfg.max_queued_repairs + 1);
    }
}

#[test]
fn close_goes_out_right_after_the_remaining_data() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 5, now);
    p.offer(now, b"last").unwrap();
    p.close(now);
    let out = drain(&mut p, now);
    assert_eq!(out.len(), 2);
    assert!(matches!(
        Frame::parse(&out[1]).unwrap(),
        Frame::Close { next_seq: 1, .. }
    ));
}

#[test]
fn unavailable_never_exceeds_the_wire_span() {
    let now = t0();
    let cfg = PublisherConfig {
        initial_seq: 1 << 40,
        ring_frames: 8,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 5, now);
    for _ in 0..20 {
        p.offer(now, b"x").unwrap();
        drain(&mut p, now);
    }
    p.handle_datagram(now, peer(), &nak(&p, &[SeqRange::new(0, 1)]));
    let out = drain(&mut p, now);
    match Frame::parse(&out[0]).unwrap() {
        Frame::Unavailable(l) => {
            let r = l.iter().next().unwrap();
            assert_eq!(r.end, p.oldest_retained());
            assert_eq!(r.len(), crate::proto::wire::MAX_RANGE_SPAN);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn zero_rates_and_huge_durations_are_sanitized() {
    let cfg = PublisherConfig {
        retransmit_rate: 0,
        send_rate: Some(0),
        repair_linger: Duration::MAX,
        heartbeat_max: Duration::MAX,
        linger: Duration::MAX,
        mtu: 1,
        ..one_copy()
    }
    .sanitized();
    assert!(cfg.retransmit_rate > 0 && cfg.send_rate > Some(0));
    assert!(cfg.mtu >= 48);
    let now = t0();
    let mut p = Publisher::new(cfg, 1, now);
    p.offer(now, b"x").unwrap();
    let _ = p.poll_timeout();
    drain(&mut p, now + Duration::from_secs(1));
}

#[test]
fn poll_transmit_full_sends_only_full_frames_and_keeps_the_open_one_filling() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 1, now);
    let mut buf = vec![0u8; 2048];
    let mut full = Vec::new();
    for i in 0..100u32 {
        p.offer(now, &i.to_le_bytes().repeat(8)).unwrap();
        while let Some(t) = p.poll_transmit_full(now, &mut buf) {
            full.push(buf[..t.len].to_vec());
        }
    }
    assert!(!full.is_empty(), "100 x 32 B fill at least one frame");
    assert!(p.has_open_frame());
    let mut next = 0;
    for f in &full {
        let d = data(f);
        assert_eq!(d.first_seq, next);
        next += u64::from(d.count);
        // Full: another 32-byte message would not have fit.
        assert!(f.len() + 36 > p.config().mtu, "{} bytes", f.len());
    }
    // The partial frame goes at the next ordinary poll_transmit.
    let rest = drain(&mut p, now);
    assert_eq!(rest.len(), 1);
    let d = data(&rest[0]);
    assert_eq!((d.first_seq, d.first_seq + u64::from(d.count)), (next, 100));
    assert!(!p.has_open_frame() && p.full_frames() == 0);
}

// ---- Authenticated frames ----

mod auth {
    use super::*;
    use crate::proto::auth::{AUTH_TRAILER_LEN, AuthConfig, AuthKey, Keyring};
    use crate::proto::wire::FLAG_AUTH;

    const SECRET: [u8; 32] = [0x42; 32];

    fn sealed_publisher(mtu: usize, now: Instant) -> Publisher {
        let cfg = PublisherConfig {
            mtu,
            auth: AuthConfig::with_key(3, SECRET),
            ..one_copy()
        };
        Publisher::new(cfg, 77, now)
    }

    fn keys() -> Keyring {
        Keyring::new(&AuthConfig::with_key(3, SECRET))
    }

    /// A NAK for `p`'s session sealed by `auth` (unsealed if off).
    fn sealed_nak(p: &Publisher, auth: &AuthConfig, ranges: &[SeqRange]) -> Vec<u8> {
        let mut buf = nak(p, ranges);
        let len = buf.len();
        buf.resize(len + AUTH_TRAILER_LEN, 0);
        let len = Keyring::new(auth).seal(&mut buf, len).unwrap();
        buf.truncate(len);
        buf
    }

    /// Sealed frames carry a trailer the ring does not store: the lone-message path
    /// declines and `poll_transmit` seals them.
    #[test]
    fn the_lone_message_path_leaves_sealed_frames_to_poll_transmit() {
        let now = t0();
        let mut p = sealed_publisher(1500, now);
        assert!(p.offer_lone(now, b"x").is_none());
        assert_eq!(p.stats().messages, 0);
    }

    #[test]
    fn every_frame_is_sealed_within_the_mtu() {
        let now = t0();
        let mut p = sealed_publisher(200, now);
        let msg: Vec<u8> = (0..1000u32).map(|i| (i * 7) as u8).collect();
        p.offer(now, b"small").unwrap();
        p.offer(now, &msg).unwrap();
        let mut frames = drain(&mut p, now);
        frames.extend(drain(&mut p, now + Duration::from_millis(5))); // heartbeat
        p.close(now + Duration::from_millis(5));
        frames.extend(drain(&mut p, now + Duration::from_millis(6))); // CLOSE
        let k = keys();
        let mut payload = Vec::new();
        let mut types = Vec::new();
        for f in &frames {
            assert!(f.len() <= 200, "{} bytes", f.len());
            let frame = k.open(f).expect("sealed and authentic");
            assert_ne!(frame.header().flags & FLAG_AUTH, 0);
            types.push(frame.header().frame_type);
            if let Frame::Data(d) = frame {
                for frag in d.fragments().filter(|x| x.seq >= 1) {
                    payload.extend_from_slice(frag.payload);
                }
            }
        }
        assert_eq!(payload, msg, "fragments carry the message exactly");
        assert!(types.contains(&FrameType::Heartbeat) && types.contains(&FrameType::Close));
        // Frames use the room left by the trailer, not less: the first fragment's frame
        // is exactly mtu bytes once sealed.
        assert!(frames.iter().any(|f| f.len() == 200));
        assert_eq!(p.stats().auth_failures, 0);
    }

    #[test]
    fn only_authentic_naks_are_served_and_repairs_are_sealed() {
        let now = t0();
        let mut p = sealed_publisher(1472, now);
        p.offer(now, b"x").unwrap();
        let first = drain(&mut p, now);
        let range = [SeqRange::new(0, 1)];
        let t = now + us(10);
        // Unsealed; sealed with a wrong secret under the right id; an unknown key id.
        p.handle_datagram(t, peer(), &nak(&p, &range));
        let forged = AuthConfig::with_key(3, [0x43; 32]);
        p.handle_datagram(t, peer(), &sealed_nak(&p, &forged, &range));
        let unknown = AuthConfig::with_key(4, SECRET);
        p.handle_datagram(t, peer(), &sealed_nak(&p, &unknown, &range));
        assert_eq!(p.stats().auth_failures, 3);
        assert_eq!(p.stats().naks_received, 0);
        assert!(drain(&mut p, t).is_empty(), "no repair for a forged NAK");

        let good = AuthConfig::with_key(3, SECRET);
        p.handle_datagram(t, peer(), &sealed_nak(&p, &good, &range));
        assert_eq!(p.stats().naks_received, 1);
        let repairs = drain(&mut p, t);
        assert_eq!(repairs.len(), 1);
        let Frame::Data(d) = keys().open(&repairs[0]).unwrap() else {
            panic!("not DATA")
        };
        assert!(d.is_retransmit());
        assert_eq!(d.fragments().next().unwrap().payload, b"x");
        // Same frame as first sent, bar the flag, the MAC and the CRC.
        assert_eq!(repairs[0].len(), first[0].len());
        assert_eq!(p.stats().retransmit_bytes, repairs[0].len() as u64);
    }

    #[test]
    fn an_accepted_old_key_still_opens_naks_during_rotation() {
        let now = t0();
        let cfg = PublisherConfig {
            auth: AuthConfig {
                key: Some(AuthKey::new(2, [0x99; 32])),
                accept: vec![AuthKey::new(3, SECRET)],
                accept_unauthenticated: false,
            },
            ..one_copy()
        };
        let mut p = Publisher::new(cfg, 5, now);
        p.offer(now, b"x").unwrap();
        drain(&mut p, now);
        let old = AuthConfig::with_key(3, SECRET);
        p.handle_datagram(now, peer(), &sealed_nak(&p, &old, &[SeqRange::new(0, 1)]));
        assert_eq!(p.stats().naks_received, 1);
        assert_eq!(drain(&mut p, now).len(), 1);
    }

    #[test]
    fn unauthenticated_status_cannot_add_a_destination() {
        let now = t0();
        let mut p = sealed_publisher(1472, now);
        let mut buf = vec![0u8; 128];
        let n = emit_status(&mut buf, p.stream(), 0, false, None).unwrap();
        p.handle_datagram(now, peer(), &buf[..n]);
        assert_eq!(p.destinations().count(), 0);
        assert_eq!(p.stats().auth_failures, 1);
        let n = keys().seal(&mut buf, n).unwrap();
        p.handle_datagram(now, peer(), &buf[..n]);
        assert_eq!(p.destinations().collect::<Vec<_>>(), [peer()]);
    }

    #[test]
    fn sanitized_mtu_leaves_room_for_the_trailer() {
        let cfg = PublisherConfig {
            mtu: 1,
            auth: AuthConfig::with_key(1, SECRET),
            ..one_copy()
        }
        .sanitized();
        let now = t0();
        let mut p = Publisher::new(cfg.clone(), 1, now);
        p.offer(now, &[1, 2, 3]).unwrap();
        // Old data evicted: a NAK below the ring gets a sealed UNAVAILABLE within mtu.
        let frames = drain(&mut p, now);
        assert!(frames.iter().all(|f| f.len() <= cfg.mtu));
        assert!(cfg.frame_limit() + AUTH_TRAILER_LEN == cfg.mtu);
        let mut big = Publisher::new(
            PublisherConfig {
                initial_seq: 100,
                ..cfg.clone()
            },
            1,
            now,
        );
        let good = AuthConfig::with_key(1, SECRET);
        let n = sealed_nak(&big, &good, &[SeqRange::new(0, 50)]);
        big.handle_datagram(now, peer(), &n);
        let out = drain(&mut big, now);
        assert!(!out.is_empty() && out.iter().all(|f| f.len() <= cfg.mtu));
        assert!(matches!(
            Keyring::new(&good).open(&out[0]).unwrap(),
            Frame::Unavailable(_)
        ));
    }
}

/// A publisher (session 3) taking 1000 control datagrams/s with a burst of `burst`, which
/// has sent message 0.
fn intake_limited(burst: u64, flow_control: FlowControl, now: Instant) -> Publisher {
    let cfg = PublisherConfig {
        max_control_rate: 1000,
        control_burst: burst,
        flow_control,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 3, now);
    p.offer(now, b"x").unwrap();
    drain(&mut p, now);
    p
}

/// Datagrams beyond `max_control_rate` (plus `control_burst`) are shed before they are
/// decoded, and `control_allowance` tells the I/O layer how many it may read.
#[test]
fn control_datagrams_beyond_the_rate_are_shed_unread() {
    let now = t0();
    let mut p = intake_limited(10, FlowControl::None, now);
    let request = nak(&p, &[SeqRange::new(0, 1)]);
    assert_eq!(p.control_allowance(now, 64), 10);
    assert_eq!(p.control_allowance(now, 3), 3, "at most what is asked");
    for _ in 0..100 {
        p.handle_datagram(now, peer(), &request);
    }
    assert_eq!(p.stats().naks_received, 10);
    assert_eq!(p.stats().control_shed, 90);
    assert_eq!(p.control_allowance(now, 64), 0);
    // Garbage counts against the same allowance, and is shed undecoded past it.
    p.handle_datagram(now, peer(), b"garbage");
    assert_eq!((p.stats().decode_errors, p.stats().control_shed), (0, 91));
    // 1000/s refills one per millisecond, up to the burst.
    assert_eq!(p.control_allowance(now + Duration::from_millis(4), 64), 4);
    assert_eq!(p.control_allowance(now + Duration::from_secs(5), 64), 10);
    p.handle_datagram(now + Duration::from_millis(4), peer(), b"garbage");
    assert_eq!(p.stats().decode_errors, 1);
}

/// A flow report that refreshes a receiver already tracked costs a quarter of a datagram
/// of the intake limit: a group's steady reports leave room for its NAKs.
#[test]
fn flow_reports_of_tracked_receivers_take_a_quarter_of_the_intake() {
    let now = t0();
    let mut p = intake_limited(100, FlowControl::Max, now);
    let report = flow_report(3, 0, 1 << 20, false);
    // The first report adds the receiver (a whole token), 300 more refresh it.
    for _ in 0..301 {
        p.handle_datagram(now, peer(), &report);
    }
    let s = *p.stats();
    assert_eq!((s.flow_added, s.flow_reports, s.control_shed), (1, 301, 0));
    // 100 - 1 - 300/4 = 24 tokens left: a NAK still gets in.
    assert_eq!(p.control_allowance(now, 64), 24);
    p.handle_datagram(now, peer(), &nak(&p, &[SeqRange::new(0, 1)]));
    assert_eq!(p.stats().naks_received, 1);
    // Reports from addresses not tracked yet (each adds one, up to the table's size) pay in
    // full, as does anything else.
    for i in 0..23 {
        p.handle_datagram(now, addr(i), &report);
    }
    assert_eq!(p.control_allowance(now, 64), 0);
    p.handle_datagram(now, peer(), &report);
    assert_eq!(p.stats().control_shed, 1);
}

/// Once the repair backlog is more than the retransmit cap sends within a repair linger,
/// further NAKs are shed at the cost of their header: no walk of the ring (which
/// `repairs_suppressed` would count) and nothing more queued, while the backlog drains at
/// the cap and NAKs are served again once it has.
#[test]
fn naks_beyond_the_repair_backlog_are_shed_without_walking_the_ring() {
    let now = t0();
    let cfg = PublisherConfig {
        retransmit_rate: 100_000,
        retransmit_burst: 10_000,
        max_control_rate: 1 << 30,
        control_burst: 1 << 30,
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 3, now);
    for _ in 0..2000 {
        p.offer(now, &[1; 1000]).unwrap();
        drain(&mut p, now);
    }
    let everything = nak(&p, &[SeqRange::new(0, 2000)]);
    p.handle_datagram(now, peer(), &everything);
    let queued = p.queued_repairs();
    assert_eq!(queued, 1024, "the first NAK is served (queue-limited)");
    assert_eq!(p.stats().naks_shed, 0);
    // Ten bursts' worth sent at once; the rest waits for tokens.
    let sent = drain(&mut p, now).len();
    assert!((8..=10).contains(&sent), "{sent}");
    let before = *p.stats();
    for i in 0..1000 {
        p.handle_datagram(now + us(i), peer(), &everything);
    }
    let after = *p.stats();
    assert_eq!(after.naks_shed - before.naks_shed, 1000);
    assert_eq!(
        after.repairs_suppressed, before.repairs_suppressed,
        "no walk"
    );
    assert_eq!(p.queued_repairs(), queued - sent);
    // At 100 kB/s the backlog of ~1 MB takes about ten seconds; then NAKs queue again.
    let mut t = now;
    while p.queued_repairs() > 0 {
        t += Duration::from_millis(10);
        drain(&mut p, t);
        assert!(
            t < now + Duration::from_secs(12),
            "backlog drains at the cap"
        );
    }
    p.handle_datagram(t, peer(), &everything);
    assert!(p.queued_repairs() > 0);
    assert_eq!(p.stats().naks_shed, after.naks_shed);
}

/// Repairs of consecutive stored frames share datagrams up to the `mtu`; a gap in the
/// queue (a frame not asked for) or the `mtu` starts a new one, and every fragment asked
/// for goes out exactly once, in order.
/// A publisher with `mtu` 500 and `repair_copies`, 40 frames of one 60-byte message each
/// sent (message `i` filled with byte `i`), then NAKed for `[2, 14)` and `[20, 22)`.
fn forty_small_frames_naked(now: Instant, repair_copies: u32) -> Publisher {
    let cfg = PublisherConfig {
        mtu: 500,
        repair_copies,
        ..PublisherConfig::default()
    };
    let mut p = Publisher::new(cfg, 5, now);
    for i in 0..40u8 {
        p.offer(now, &[i; 60]).unwrap();
        drain(&mut p, now);
    }
    let ranges = [SeqRange::new(2, 14), SeqRange::new(20, 22)];
    p.handle_datagram(now, peer(), &nak(&p, &ranges));
    p
}

#[test]
fn repairs_of_consecutive_frames_share_datagrams_up_to_the_mtu() {
    let now = t0();
    // A stored frame is 36 + 4 + 60 = 100 B; each one appended adds its 64 B of fragment,
    // so a 500 B datagram holds the first and six more.
    let mut p = forty_small_frames_naked(now, 1);
    let out = drain(&mut p, now);
    let got: Vec<(u64, u16)> = out
        .iter()
        .map(|f| {
            assert!(f.len() <= 500);
            let d = data(f);
            assert!(d.is_retransmit());
            for (k, frag) in d.fragments().enumerate() {
                assert_eq!(frag.seq, d.first_seq + k as u64);
                assert_eq!(frag.payload, &[frag.seq as u8; 60][..]);
            }
            (d.first_seq, d.count)
        })
        .collect();
    assert_eq!(got, [(2, 7), (9, 5), (20, 2)]);
    assert_eq!(p.stats().retransmits, 3);
    assert_eq!(p.stats().repairs_coalesced, 14 - 3);
}

/// Each repair datagram, packed or not, goes out `repair_copies` times, byte for byte,
/// the copies right after it; only the first counts in `retransmits`.
#[test]
fn repair_copies_resend_each_repair_datagram_right_after_it() {
    for copies in [1u32, 2, 3] {
        let now = t0();
        let mut p = forty_small_frames_naked(now, copies);
        // Offered after the NAK: new data waits for the repairs and their copies.
        p.offer(now, b"new").unwrap();
        let out = drain(&mut p, now);
        let c = copies as usize;
        assert_eq!(out.len(), 3 * c + 1, "copies {copies}");
        for (k, want) in [(2u64, 7u16), (9, 5), (20, 2)].into_iter().enumerate() {
            for f in &out[k * c..(k + 1) * c] {
                assert_eq!(f, &out[k * c], "a copy differs from its repair");
                let d = data(f);
                assert!(d.is_retransmit());
                assert_eq!((d.first_seq, d.count), want);
            }
        }
        assert!(!data(&out[3 * c]).is_retransmit());
        let s = p.stats();
        assert_eq!(s.retransmits, 3);
        assert_eq!(s.repair_copies, 3 * (copies as u64 - 1));
        assert_eq!(s.repair_copies_skipped, 0);
        let bytes: usize = out[..3 * c].iter().map(Vec::len).sum();
        assert_eq!(s.retransmit_bytes, bytes as u64);
    }
}

/// A copy never waits for tokens: with the cap's tokens spent on first repairs the copy
/// is skipped and counted, and the queued first repairs are not delayed by it. (Also the
/// regression test for packing under a tight cap: a frame refused its tokens used to leave
/// its fragment count in the datagram, which then failed to parse.)
#[test]
fn repair_copies_are_skipped_when_the_cap_has_no_tokens_to_spare() {
    let now = t0();
    let cfg = PublisherConfig {
        repair_copies: 2,
        retransmit_rate: 1000,
        retransmit_burst: 1000,
        ..PublisherConfig::default()
    };
    let mut p = Publisher::new(cfg, 5, now);
    for i in 0..4u8 {
        p.offer(now, &[i; 600]).unwrap();
        drain(&mut p, now);
    }
    // Two 600 B frames NAKed: the burst pays for the first repair only.
    p.handle_datagram(now, peer(), &nak(&p, &[SeqRange::new(1, 3)]));
    let out = drain(&mut p, now);
    assert_eq!(out.len(), 1);
    assert_eq!(data(&out[0]).first_seq, 1);
    assert_eq!(p.stats().repair_copies_skipped, 1);
    // Once tokens for the next repair accrue, it goes out and its copy waits no more.
    let later = now + Duration::from_millis(700);
    let repairs = |out: Vec<Vec<u8>>| -> Vec<Vec<u8>> {
        // Heartbeats are due by then too.
        out.into_iter()
            .filter(|f| matches!(Frame::parse(f), Ok(Frame::Data(_))))
            .collect()
    };
    let out = repairs(drain(&mut p, later));
    assert_eq!(out.len(), 1, "the second repair, its copy skipped");
    assert_eq!(data(&out[0]).first_seq, 2);
    assert_eq!(p.stats().repair_copies_skipped, 2);
    assert_eq!(p.stats().repair_copies, 0);
    // Even with a full bucket, a copy needs tokens left after its repair.
    let much_later = later + Duration::from_secs(5);
    p.handle_datagram(much_later, peer(), &nak(&p, &[SeqRange::new(3, 4)]));
    let out = repairs(drain(&mut p, much_later));
    assert_eq!(out.len(), 1, "burst 1000 B: no room for a copy");
    assert_eq!(p.stats().repair_copies_skipped, 3);
}

/// Copies only take tokens the queued first repairs do not need: with a burst that pays
/// for the three first repairs and no more, all three go out at once and every copy is
/// skipped; with room for everything, each repair is followed by its copy.
#[test]
fn repair_copies_never_delay_queued_first_repairs() {
    for (burst, want_copies) in [(2000u64, 0u64), (4000, 3)] {
        let now = t0();
        let cfg = PublisherConfig {
            repair_copies: 2,
            retransmit_rate: 1000,
            retransmit_burst: burst,
            ..PublisherConfig::default()
        };
        let mut p = Publisher::new(cfg, 5, now);
        for i in 0..8u8 {
            p.offer(now, &[i; 600]).unwrap();
            drain(&mut p, now);
        }
        // Three frames that do not continue each other: three repair datagrams of 640 B.
        let ranges = [
            SeqRange::new(1, 2),
            SeqRange::new(3, 4),
            SeqRange::new(5, 6),
        ];
        p.handle_datagram(now, peer(), &nak(&p, &ranges));
        let firsts: Vec<u64> = drain(&mut p, now)
            .iter()
            .map(|f| data(f).first_seq)
            .collect();
        let s = p.stats();
        assert_eq!(
            s.retransmits, 3,
            "burst {burst}: every first repair at once"
        );
        assert_eq!(s.repair_copies, want_copies, "burst {burst}");
        assert_eq!(
            s.repair_copies + s.repair_copies_skipped,
            3,
            "burst {burst}"
        );
        let want: &[u64] = if want_copies == 0 {
            &[1, 3, 5]
        } else {
            &[1, 1, 3, 3, 5, 5]
        };
        assert_eq!(firsts, want, "burst {burst}");
    }
}

/// A NAK flagged as a repeat is suppressed only within `repeat_linger` of the last repair
/// of its frames; an unflagged one within `repair_linger`.
#[test]
fn repeated_naks_get_the_short_linger() {
    let now = t0();
    let cfg = one_copy();
    assert!(cfg.repeat_linger < cfg.repair_linger);
    let mut p = Publisher::new(cfg.clone(), 9, now);
    p.offer(now, b"x").unwrap();
    drain(&mut p, now);
    let first = nak(&p, &[SeqRange::new(0, 1)]);
    let mut repeat = first.clone();
    wire::set_flags(&mut repeat, wire::FLAG_REPEAT);
    p.handle_datagram(now, peer(), &first);
    assert_eq!(drain(&mut p, now).len(), 1);
    // Inside the short linger: even a repeat is absorbed.
    let t = now + cfg.repeat_linger / 2;
    p.handle_datagram(t, peer(), &repeat);
    assert!(drain(&mut p, t).is_empty());
    // Past it, inside the long one: the plain NAK is absorbed, the repeat is served.
    let t = now + cfg.repeat_linger + us(1);
    p.handle_datagram(t, peer(), &first);
    assert!(drain(&mut p, t).is_empty());
    p.handle_datagram(t, peer(), &repeat);
    assert_eq!(drain(&mut p, t).len(), 1);
    assert_eq!(p.stats().naks_repeated, 2);
    assert_eq!(p.stats().retransmits, 2);
}

/// `handle_timeout` seals a lingering frame once its linger has passed and expires silent
/// destinations, without sending anything itself.
#[test]
fn handle_timeout_seals_a_lingering_frame_and_expires_destinations() {
    let now = t0();
    let cfg = PublisherConfig {
        linger: Duration::from_millis(1),
        destination_timeout: Duration::from_millis(5),
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 4, now);
    p.handle_datagram(now, addr(1), &status(0, 0, false));
    p.offer(now, b"x").unwrap();
    p.handle_timeout(now + us(500));
    assert!(
        p.has_open_frame() && p.full_frames() == 0,
        "still lingering"
    );
    p.handle_timeout(now + Duration::from_millis(1));
    assert!(!p.has_open_frame() && p.full_frames() == 1, "sealed");
    assert_eq!(dests(&p).len(), 1);
    p.handle_timeout(now + Duration::from_millis(6));
    assert!(dests(&p).is_empty(), "expired");
    assert_eq!(p.stats().destinations_expired, 1);
    assert_eq!(p.stats().data_frames, 0, "nothing was sent");
}

/// `unsent_data` exposes sealed frames for sending straight from the ring only when
/// nothing must go first and no trailer is needed; `data_sent` then does what
/// `poll_transmit` would have done for them.
#[test]
fn unsent_data_gathers_from_the_ring_only_when_nothing_goes_first() {
    let now = t0();
    let mut p = Publisher::new(one_copy(), 6, now);
    let mut q = Publisher::new(one_copy(), 6, now);
    for i in 0..100u32 {
        for x in [&mut p, &mut q] {
            x.offer(now, &[i as u8; 1000]).unwrap();
        }
    }
    p.flush();
    q.flush();
    let gathered: Vec<Vec<u8>> = p.unsent_data().map(|f| f.to_vec()).collect();
    assert_eq!(gathered.len(), 100);
    p.data_sent(now, 40);
    assert_eq!(p.unsent_data().len(), 60);
    p.data_sent(now, 60);
    assert_eq!(p.unsent_data().len(), 0);
    // The same frames, and the same counters, as poll_transmit.
    assert_eq!(drain(&mut q, now), gathered);
    assert_eq!(p.stats().data_frames, q.stats().data_frames);
    assert_eq!(p.stats().data_bytes, q.stats().data_bytes);
    assert!(drain(&mut p, now).is_empty(), "nothing left to send");
    // A queued repair goes first: nothing is gathered until it has gone.
    p.offer(now, b"more").unwrap();
    p.flush();
    p.handle_datagram(now, peer(), &nak(&p, &[SeqRange::new(0, 1)]));
    assert_eq!(p.unsent_data().len(), 0);
    let out = drain(&mut p, now);
    assert!(data(&out[0]).is_retransmit());
    assert_eq!(out.len(), 2);
    // With authentication every frame needs a trailer: never gathered.
    let cfg = PublisherConfig {
        auth: crate::proto::AuthConfig::with_key(1, [7; 32]),
        ..one_copy()
    };
    let mut a = Publisher::new(cfg, 6, now);
    a.offer(now, b"sealed").unwrap();
    a.flush();
    assert_eq!(a.unsent_data().len(), 0);
    assert_eq!(drain(&mut a, now).len(), 1);
}

/// `seal_lingered` seals the open frame only once its linger has run out, as
/// `poll_transmit` would, so the frames it adds to `unsent_data` are those `poll_transmit`
/// would have sent.
#[test]
fn seal_lingered_follows_the_linger() {
    let now = t0();
    let cfg = PublisherConfig {
        linger: us(100),
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 3, now);
    assert!(!p.seal_lingered(now), "nothing open");
    p.offer(now, b"a").unwrap();
    assert!(!p.seal_lingered(now + us(99)));
    assert_eq!((p.full_frames(), p.unsent_data().len()), (0, 0));
    assert!(p.seal_lingered(now + us(100)));
    assert!(!p.has_open_frame());
    assert_eq!(p.unsent_data().len(), 1);
    p.data_sent(now + us(100), 1);
    assert_eq!(p.stats().data_frames, 1);
    assert!(p.is_flushed());
}

/// `sent_at` re-dates the last data sent (the heartbeat schedule counts from it) when the
/// frame was built with an older time, and never moves time back.
#[test]
fn sent_at_redates_the_heartbeat_schedule_forward_only() {
    let t = t0();
    let cfg = PublisherConfig {
        heartbeat_min: Duration::from_millis(1),
        ..one_copy()
    };
    let mut p = Publisher::new(cfg, 3, t);
    // Built and sent at `t`, really sent 10 ms later.
    p.offer(t, b"x").unwrap();
    assert_eq!(drain(&mut p, t).len(), 1);
    let real = t + Duration::from_millis(10);
    p.sent_at(real);
    assert_eq!(p.poll_timeout(), real + Duration::from_millis(1));
    assert!(
        drain(&mut p, real + us(999)).is_empty(),
        "no heartbeat before heartbeat_min"
    );
    // An older time changes nothing.
    p.sent_at(t);
    assert_eq!(p.poll_timeout(), real + Duration::from_millis(1));
    assert_eq!(
        drain(&mut p, real + Duration::from_millis(1)).len(),
        1,
        "the heartbeat"
    );
}

/// A flow report from a receiver following `session`.
fn flow_report(session: u64, position: u64, window: u32, leaving: bool) -> Vec<u8> {
    let mut buf = [0u8; 64];
    let report = wire::FlowReport { position, window };
    let n = emit_status(&mut buf, 0, session, leaving, Some(report)).unwrap();
    buf[..n].to_vec()
}

/// What one frame of [`forty_frames_flow`] counts for in flow control: its 440 bytes and
/// the per-datagram cost.
const F: u64 = 440 + crate::proto::ring::DATAGRAM_COST;

/// A window of `frames` frames of [`forty_frames_flow`] and a little more.
fn frames(frames: u64) -> u32 {
    (frames * F + 100) as u32
}

/// A flow-controlled publisher (`mode`) with `mtu` 500 and an initial window of four
/// frames, holding 40 offered frames of 440 bytes each (one 400-byte message each), none
/// sent yet.
fn forty_frames_flow(now: Instant, mode: FlowControl) -> Publisher {
    let cfg = PublisherConfig {
        mtu: 500,
        flow_control: mode,
        initial_flow_window: frames(4) as usize,
        ..PublisherConfig::default()
    };
    let mut p = Publisher::new(cfg, 5, now);
    for i in 0..40u8 {
        p.offer(now, &[i; 400]).unwrap();
    }
    p.flush();
    assert_eq!(p.full_frames(), 40);
    p
}

/// The `(next_seq, is_close)` of a HEARTBEAT or CLOSE frame.
fn announced(frame: &[u8]) -> (u64, bool) {
    match Frame::parse(frame).unwrap() {
        Frame::Heartbeat { next_seq, .. } => (next_seq, false),
        Frame::Close { next_seq, .. } => (next_seq, true),
        other => panic!("{other:?}"),
    }
}

#[test]
fn flow_holds_new_data_at_the_reported_window() {
    let now = t0();
    let mut p = forty_frames_flow(now, FlowControl::Max);
    // The initial window lets the first four frames go.
    assert_eq!(p.unsent_data().len(), 4, "the gather path is held back too");
    assert_eq!(drain(&mut p, now).len(), 4);
    assert!(p.flow_blocked());
    assert_eq!(p.stats().flow_blocked, 1);
    // Held frames do not make the publisher due at once: the heartbeat is next.
    assert_eq!(p.poll_timeout(), now + p.config().heartbeat_min);
    // Heartbeats announce only what was sent, so no receiver NAKs held-back frames.
    let later = now + p.config().heartbeat_min;
    let hb = drain(&mut p, later);
    assert_eq!(hb.len(), 1);
    assert_eq!(announced(&hb[0]), (4, false));
    // A receiver that delivered 0 and 1 and takes two frames beyond: the frame holding
    // seq 2 starts at 2F, so frames up to 4F + 100 may go: none new.
    p.handle_datagram(later, addr(1), &flow_report(5, 2, frames(2), false));
    assert_eq!((p.stats().flow_added, p.flow_receivers()), (1, 1));
    assert!(drain(&mut p, later).is_empty());
    // It delivered everything sent (4F): two more frames may go.
    p.handle_datagram(later, addr(1), &flow_report(5, 4, frames(2), false));
    assert_eq!(drain(&mut p, later).len(), 2);
    // A report for another session, or from a receiver claiming more than was sent,
    // cannot reach past what was sent plus its window.
    p.handle_datagram(later, addr(2), &flow_report(6, 40, 1 << 30, false));
    assert_eq!(p.stats().ignored_frames, 1);
    p.handle_datagram(later, addr(2), &flow_report(5, 1000, frames(1), false));
    assert_eq!(drain(&mut p, later).len(), 1, "what was sent and one frame");
    // A window below one frame still lets one frame at a time go.
    p.handle_datagram(later, addr(2), &flow_report(5, 7, 1, false));
    assert_eq!(drain(&mut p, later).len(), 1);
    assert_eq!(p.stats().flow_reports, 4, "the other session's is not one");
}

#[test]
fn flow_min_waits_for_the_slowest_max_for_the_fastest() {
    let now = t0();
    for (mode, want) in [(FlowControl::Min, 2), (FlowControl::Max, 5)] {
        let mut p = forty_frames_flow(now, mode);
        assert_eq!(drain(&mut p, now).len(), 4);
        // Receiver 1 took everything sent (4F) and takes five frames more; receiver 2 is
        // at seq 0 and takes one.
        p.handle_datagram(now, addr(1), &flow_report(5, 4, frames(5), false));
        p.handle_datagram(now, addr(2), &flow_report(5, 0, frames(1), false));
        // Min: one frame from 0 (nothing new); Max: five frames from 4F.
        let sent = drain(&mut p, now).len();
        assert_eq!(
            sent,
            if mode == FlowControl::Min { 0 } else { 5 },
            "{mode:?}"
        );
        // Receiver 2 catches up to seq 4 (4F) and takes two frames: Min two more frames;
        // Max unchanged.
        p.handle_datagram(now, addr(2), &flow_report(5, 4, frames(2), false));
        assert_eq!(
            drain(&mut p, now).len(),
            want - if sent > 0 { 5 } else { 0 }
        );
        // Both leave: nobody reports, nothing is held back.
        p.handle_datagram(now, addr(1), &flow_report(5, 4, 0, true));
        p.handle_datagram(now, addr(2), &flow_report(5, 4, 0, true));
        assert_eq!((p.stats().flow_left, p.flow_receivers()), (2, 0));
        let rest = 40 - 4 - want.max(sent);
        assert_eq!(drain(&mut p, now).len(), rest, "{mode:?}");
    }
}

#[test]
fn flow_start_up_wait_and_silent_receivers_end_after_flow_timeout() {
    let now = t0();
    let mut p = forty_frames_flow(now, FlowControl::Max);
    assert_eq!(drain(&mut p, now).len(), 4);
    let timeout = p.config().flow_timeout;
    let wait = p.config().flow_start_wait;
    // Nobody reports: heartbeats ask for reports, and after the start-up wait everything
    // goes.
    let hb = p.config().heartbeat_min;
    let beat = drain(&mut p, now + hb);
    assert_eq!(beat.len(), 1);
    let flags = wire::Header::parse(&beat[0]).unwrap().flags;
    assert_ne!(
        flags & wire::FLAG_FLOW_HELD,
        0,
        "held: the heartbeat asks for reports"
    );
    assert!(p.flow_blocked());
    let data = |frames: Vec<Vec<u8>>| {
        frames
            .iter()
            .filter(|f| wire::Header::parse(f).unwrap().frame_type == FrameType::Data)
            .count()
    };
    assert_eq!(data(drain(&mut p, now + wait - us(1))), 0);
    assert_eq!(data(drain(&mut p, now + wait)), 36);
    // Nothing held: the next heartbeat does not ask.
    let later = now + wait + hb * 4;
    let beat = drain(&mut p, later);
    assert_eq!(
        wire::Header::parse(&beat[0]).unwrap().flags & wire::FLAG_FLOW_HELD,
        0
    );

    // A receiver reports, then falls silent: it holds the publisher until it expires.
    let mut p = forty_frames_flow(now, FlowControl::Min);
    p.handle_datagram(now, addr(1), &flow_report(5, 0, frames(2), false));
    assert_eq!(drain(&mut p, now).len(), 2);
    assert_eq!(p.poll_timeout(), now + hb, "the heartbeat first");
    assert_eq!(data(drain(&mut p, now + timeout - us(1))), 0);
    assert_eq!(p.poll_timeout(), now + timeout, "then the expiry");
    assert_eq!(data(drain(&mut p, now + timeout)), 38);
    assert_eq!((p.stats().flow_expired, p.flow_receivers()), (1, 0));
}

#[test]
fn flow_close_waits_for_held_data_then_announces_the_end() {
    let now = t0();
    let mut p = forty_frames_flow(now, FlowControl::Max);
    p.close(now);
    let out = drain(&mut p, now);
    // Four data frames, then a heartbeat (not a CLOSE: 36 frames still wait).
    assert_eq!(out.len(), 5);
    assert_eq!(announced(&out[4]), (4, false));
    assert_eq!(p.stats().closes, 0);
    p.handle_datagram(now, addr(1), &flow_report(5, 4, 1 << 20, false));
    assert_eq!(drain(&mut p, now).len(), 36);
    let later = now + p.config().heartbeat_min;
    let out = drain(&mut p, later);
    assert_eq!(out.len(), 1);
    assert_eq!(announced(&out[0]), (40, true));
}

#[test]
fn released_flow_sends_everything_held() {
    let now = t0();
    let mut p = forty_frames_flow(now, FlowControl::Min);
    p.handle_datagram(now, addr(1), &flow_report(5, 0, frames(2), false));
    p.close(now);
    assert_eq!(drain(&mut p, now).len(), 3, "two frames and a heartbeat");
    assert_eq!(p.unsent_data().len(), 0);
    p.release_flow();
    assert_eq!(p.unsent_data().len(), 38, "the gather path too");
    let out = drain(&mut p, now);
    assert_eq!(out.len(), 38);
    assert!(!p.flow_blocked() && p.is_flushed());
    let later = now + p.config().heartbeat_min;
    let out = drain(&mut p, later);
    assert_eq!(
        announced(&out[0]),
        (40, true),
        "then CLOSE announces everything"
    );
}

/// The lone-message path stores exactly the frame `offer` and a seal store (same bytes,
/// same sequence numbers, same counters), and hands it out as `unsent_data` would.
#[test]
fn offer_lone_stores_what_offer_and_a_seal_store() {
    let now = t0();
    let mut lone = Publisher::new(one_copy(), 42, now);
    let mut general = Publisher::new(one_copy(), 42, now);
    let room = lone.fragment_room();
    for (i, len) in [0, 1, 32, 1000, room].into_iter().enumerate() {
        let msg = vec![i as u8; len];
        let (seq, frame) = lone.offer_lone(now, &msg).expect("nothing waits");
        let frame = frame.to_vec();
        assert_eq!(general.offer(now, &msg).unwrap(), seq);
        general.flush();
        let want: Vec<Vec<u8>> = general.unsent_data().map(<[u8]>::to_vec).collect();
        assert_eq!(want, [frame]);
        let got: Vec<Vec<u8>> = lone.unsent_data().map(<[u8]>::to_vec).collect();
        assert_eq!(got, want);
        lone.data_sent(now, 1);
        general.data_sent(now, 1);
        assert_eq!(lone.stats(), general.stats());
        assert_eq!(lone.poll_timeout(), general.poll_timeout());
    }
    // A message that needs two fragments takes the general path.
    assert!(lone.offer_lone(now, &vec![0; room + 1]).is_none());
    assert_eq!(lone.stats(), general.stats());
}

/// Whenever batching, pacing, repairs, authentication or flow control have a say, the
/// lone-message path declines and changes nothing.
#[test]
fn offer_lone_declines_when_the_general_path_is_needed() {
    let now = t0();
    let declines = |p: &mut Publisher| declines_at(p, now);
    // A frame open (offered, not sealed), then one sealed and unsent.
    let mut p = Publisher::new(one_copy(), 1, now);
    p.offer(now, b"a").unwrap();
    declines(&mut p);
    p.flush();
    declines(&mut p);
    // A linger, a send-rate limit, a closed session.
    let linger = PublisherConfig {
        linger: us(10),
        ..one_copy()
    };
    declines(&mut Publisher::new(linger, 1, now));
    let paced = PublisherConfig {
        send_rate: Some(1_000_000),
        ..one_copy()
    };
    declines(&mut Publisher::new(paced, 1, now));
    let mut closed = Publisher::new(one_copy(), 1, now);
    closed.close(now);
    declines(&mut closed);
    // A repair queued by a NAK.
    let mut p = Publisher::new(one_copy(), 7, now);
    let (_, _) = p.offer_lone(now, b"first").unwrap();
    p.data_sent(now, 1);
    p.handle_datagram(now, peer(), &nak(&p, &[SeqRange::new(0, 1)]));
    declines(&mut p);
    // Flow control: the start-up window runs out, then the frame waits for a report.
    let flow = PublisherConfig {
        flow_control: FlowControl::Max,
        ..one_copy()
    };
    let mut p = Publisher::new(flow, 1, now);
    let mut sent = 0;
    while p.offer_lone(now, &[0; 1000]).is_some() {
        p.data_sent(now, 1);
        sent += 1;
        assert!(sent < 1000, "the start-up window must end");
    }
    assert!(sent > 0);
    assert!(p.ring.end_pos() <= p.cfg.initial_flow_window as u64);
    p.offer(now, &[0; 1000]).unwrap();
    p.flush();
    assert_eq!(p.unsent_data().len(), 0, "held by flow control");
    // A reporting receiver whose report has timed out: its expiry comes first.
    let flow = PublisherConfig {
        flow_control: FlowControl::Max,
        ..one_copy()
    };
    let mut p = Publisher::new(flow, 5, now);
    p.handle_datagram(now, peer(), &flow_report(5, 0, 1 << 20, false));
    assert!(p.offer_lone(now, b"x").is_some());
    p.data_sent(now, 1);
    let later = now + p.cfg.flow_timeout;
    declines_at(&mut p, later);
}

fn declines_at(p: &mut Publisher, now: Instant) {
    let (stats, next) = (*p.stats(), p.next_seq);
    assert!(p.offer_lone(now, b"x").is_none());
    assert_eq!((*p.stats(), p.next_seq), (stats, next));
}

#[test]
fn data_and_heartbeats_advertise_the_receivers_that_report() {
    // In every flow-control mode: with `None` the reports hold nothing back but still
    // count the receivers.
    for mode in [FlowControl::Max, FlowControl::None] {
        let mut at = t0();
        let cfg = PublisherConfig {
            flow_control: mode,
            ..PublisherConfig::default()
        };
        let mut p = Publisher::new(cfg, 5, at);
        let group = |frame: &[u8]| wire::group_size(wire::Header::parse(frame).unwrap().flags);
        let hb = p.config().heartbeat_min;
        // Flow reports (receiver, leaving) arrive, then a DATA frame by the general path,
        // one by the lone-message path and a heartbeat must all carry the receivers heard
        // from.
        for (reports, want) in [
            (&[][..], None),
            (&[(1, false)][..], Some(1)),
            (&[(2, false), (3, false)][..], Some(4)),
            (&[(3, true)][..], Some(2)),
        ] {
            for &(i, leaving) in reports {
                let window = if leaving { 0 } else { 1 << 20 };
                p.handle_datagram(at, addr(i), &flow_report(5, 0, window, leaving));
            }
            p.offer(at, b"general").unwrap();
            let data = drain(&mut p, at);
            assert_eq!(data.len(), 1);
            let (_, lone) = p.offer_lone(at, b"lone").unwrap();
            let lone = lone.to_vec();
            p.data_sent(at, 1);
            at += hb * 4;
            let beat = drain(&mut p, at);
            let header = wire::Header::parse(&beat[0]).unwrap();
            assert_eq!(header.frame_type, FrameType::Heartbeat);
            let got = [group(&data[0]), group(&lone), group(&beat[0])];
            assert_eq!(got, [want; 3], "{mode:?}");
        }
        // And the CLOSE.
        p.close(at);
        let close = drain(&mut p, at);
        let header = wire::Header::parse(&close[0]).unwrap();
        assert_eq!(header.frame_type, FrameType::Close);
        assert_eq!(group(&close[0]), Some(2), "{mode:?}");
    }
}

#[test]
fn a_full_flow_table_advertises_more_receivers_than_it_counts() {
    let mut at = t0();
    let cfg = PublisherConfig {
        max_flow_receivers: 1,
        ..PublisherConfig::default()
    };
    let mut p = Publisher::new(cfg, 5, at);
    let timeout = p.config().flow_timeout;
    let advertised = |p: &mut Publisher, at: Instant| {
        let (_, frame) = p.offer_lone(at, b"m").unwrap();
        let flags = wire::Header::parse(frame).unwrap().flags;
        p.data_sent(at, 1);
        wire::group_size(flags)
    };
    p.handle_datagram(at, addr(1), &flow_report(5, 0, 1 << 20, false));
    assert_eq!(advertised(&mut p, at), Some(1));
    // Two more receivers report; the table holds one: the group is "many" until the
    // refused reports are a flow timeout old.
    p.handle_datagram(at, addr(2), &flow_report(5, 0, 1 << 20, false));
    p.handle_datagram(at, addr(3), &flow_report(5, 0, 1 << 20, false));
    assert_eq!(p.stats().flow_refused, 2);
    assert_eq!(advertised(&mut p, at), Some(1 << 14));
    at += timeout;
    p.handle_datagram(at, addr(1), &flow_report(5, 0, 1 << 20, false));
    p.poll_transmit(at, &mut [0u8; 2048]);
    assert_eq!(advertised(&mut p, at), Some(1));
}
