use super::*;
use crate::proto::publisher::{Publisher, PublisherConfig};
use crate::proto::wire::{DataFrameWriter, FRAG_BEGIN, FRAG_END, emit_control, emit_ranges};
use proptest::prelude::*;
use std::time::Duration;

/// The defaults with one copy per repair: these tests count repair datagrams; the copies
/// have their own tests (`repair_copies_*` in the publisher's).
fn one_copy() -> PublisherConfig {
    PublisherConfig {
        repair_copies: 1,
        // These tests deliver what they choose; the flow reports they make are checked by
        // their own tests. (The reports handed back by `Harness::naks` still make the
        // publisher count the receiver: its later frames advertise a group of one.)
        flow_control: crate::proto::FlowControl::None,
        ..PublisherConfig::default()
    }
}

fn pub_addr() -> SocketAddr {
    "10.0.0.1:5000".parse().unwrap()
}

/// Events as owned values, for assertions.
#[derive(Debug, PartialEq)]
enum Ev {
    Joined(u64),
    Msg(u64, Vec<u8>),
    Loss(SeqRange, LossReason),
    Restarted,
    Closed,
    Inactive,
}

fn own(ev: Event<'_>) -> Ev {
    match ev {
        Event::Joined { start_seq, .. } => Ev::Joined(start_seq),
        Event::Message { seq, payload, .. } => Ev::Msg(seq, payload.to_vec()),
        Event::Loss { range, reason, .. } => Ev::Loss(range, reason),
        Event::Restarted { .. } => Ev::Restarted,
        Event::Closed { .. } => Ev::Closed,
        Event::Inactive { .. } => Ev::Inactive,
    }
}

struct Harness {
    now: Instant,
    publisher: Publisher,
    receiver: Receiver,
    events: Vec<Ev>,
    buf: Vec<u8>,
}

impl Harness {
    fn new(rcfg: ReceiverConfig) -> Self {
        Self::with(one_copy(), rcfg)
    }

    fn with(pcfg: PublisherConfig, rcfg: ReceiverConfig) -> Self {
        let now = Instant::now();
        Self {
            now,
            publisher: Publisher::new(pcfg, 0xABCD, now),
            receiver: Receiver::new(rcfg, 7),
            events: Vec::new(),
            buf: vec![0; 70_000],
        }
    }

    /// Offer one message and return the frames the publisher sends for it.
    fn publish(&mut self, msg: &[u8]) -> Vec<Vec<u8>> {
        self.publisher.offer(self.now, msg).unwrap();
        self.frames()
    }

    fn frames(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(t) = self.publisher.poll_transmit(self.now, &mut self.buf) {
            out.push(self.buf[..t.len].to_vec());
        }
        out
    }

    fn deliver(&mut self, frame: &[u8]) {
        let events = &mut self.events;
        self.receiver
            .handle_datagram(self.now, pub_addr(), frame, &mut |e| events.push(own(e)));
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let events = &mut self.events;
        self.receiver
            .handle_timeout(self.now, &mut |e| events.push(own(e)));
    }

    /// NAKs the receiver sends now, handed to the publisher (with its flow reports,
    /// which are not counted).
    fn naks(&mut self) -> usize {
        let mut n = 0;
        while let Some(t) = self.receiver.poll_transmit(self.now, &mut self.buf) {
            assert_eq!(t.destination, Destination::Unicast(pub_addr()));
            let frame = self.buf[..t.len].to_vec();
            self.publisher
                .handle_datagram(self.now, "10.0.1.1:6000".parse().unwrap(), &frame);
            if !is_status(&frame) {
                n += 1;
            }
        }
        n
    }

    fn take(&mut self) -> Vec<Ev> {
        std::mem::take(&mut self.events)
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Whether `frame` is a STATUS frame (sealed or not): in multicast mode, a flow report.
fn is_status(frame: &[u8]) -> bool {
    wire::Header::parse(frame).is_ok_and(|h| h.frame_type == FrameType::Status)
}

/// The next frame `r` sends at `now` that is not a STATUS (flow report).
fn next_non_flow(r: &mut Receiver, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
    while let Some(t) = r.poll_transmit(now, buf) {
        if !is_status(&buf[..t.len]) {
            return Some(t);
        }
    }
    None
}

#[test]
fn in_order_delivery_needs_no_nak() {
    let mut h = Harness::new(ReceiverConfig::default());
    for i in 0..5u8 {
        for f in h.publish(&[i; 3]) {
            h.deliver(&f);
        }
    }
    let ev = h.take();
    assert_eq!(ev[0], Ev::Joined(0));
    assert_eq!(ev[1..].len(), 5);
    assert_eq!(ev[5], Ev::Msg(4, vec![4; 3]));
    h.advance(ms(10));
    assert_eq!(h.naks(), 0);
    assert_eq!(h.receiver.stats().gaps, 0);
}

#[test]
fn gap_is_naked_after_backoff_and_repair_is_delivered_in_order() {
    let mut h = Harness::new(ReceiverConfig::default());
    let f0 = h.publish(b"a");
    let f1 = h.publish(b"b");
    let f2 = h.publish(b"c");
    h.deliver(&f0[0]);
    h.deliver(&f2[0]);
    assert_eq!(h.take(), [Ev::Joined(0), Ev::Msg(0, b"a".to_vec())]);
    assert_eq!(h.naks(), 0, "no NAK before the backoff");
    let deadline = h.receiver.poll_timeout().unwrap();
    assert!(deadline <= h.now + h.receiver.config().nak_backoff);
    h.advance(deadline - h.now);
    assert_eq!(h.naks(), 1);
    assert_eq!(h.publisher.stats().naks_received, 1);
    let repairs = h.frames();
    assert_eq!(repairs, {
        let mut f = f1[0].clone();
        wire::set_retransmit(&mut f);
        vec![f]
    });
    h.deliver(&repairs[0]);
    assert_eq!(
        h.take(),
        [Ev::Msg(1, b"b".to_vec()), Ev::Msg(2, b"c".to_vec())]
    );
    assert_eq!(h.receiver.stats().recovered, 1);
}

#[test]
fn a_receiver_the_publisher_says_is_alone_naks_a_gap_at_once() {
    for follow in [true, false] {
        let pcfg = PublisherConfig {
            flow_control: crate::proto::FlowControl::Max,
            ..one_copy()
        };
        let rcfg = ReceiverConfig {
            follow_group_size: follow,
            ..ReceiverConfig::default()
        };
        let mut h = Harness::with(pcfg, rcfg);
        let f0 = h.publish(b"a");
        h.deliver(&f0[0]);
        // The flow report sent at the join reaches the publisher: it hears from one
        // receiver, and its next frames say so.
        assert_eq!(h.naks(), 0);
        assert_eq!(h.publisher.flow_receivers(), 1);
        h.publish(b"b");
        let f2 = h.publish(b"c");
        let flags = wire::Header::parse(&f2[0]).unwrap().flags;
        assert_eq!(wire::group_size(flags), Some(1));
        h.deliver(&f2[0]);
        let deadline = h.receiver.poll_timeout().unwrap();
        if follow {
            assert_eq!(deadline, h.now, "nobody to wait for");
            assert_eq!(h.naks(), 1);
        } else {
            // group_size_hint (8) as before: a random delay.
            assert!(deadline > h.now, "{:?}", deadline - h.now);
            assert_eq!(h.naks(), 0);
        }
    }
}

/// A one-message DATA frame of session 1 at `seq` advertising `receivers` (0: none), a
/// repair if `repair`.
fn advertising(seq: u64, receivers: usize, repair: bool) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let mut w = DataFrameWriter::begin(&mut buf, 0, 1, seq).unwrap();
    w.set_flags(&mut buf, wire::group_flags(receivers));
    w.push(&mut buf, FRAG_BEGIN | FRAG_END, &seq.to_le_bytes())
        .unwrap();
    let n = w.finish(&mut buf);
    if repair {
        wire::set_retransmit(&mut buf[..n]);
    }
    buf.truncate(n);
    buf
}

/// A HEARTBEAT of session 1 announcing `next_seq`, advertising `receivers`.
fn beat_advertising(next_seq: u64, receivers: usize) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = emit_control(&mut buf, FrameType::Heartbeat, 0, 1, next_seq, 0).unwrap();
    wire::set_flags(&mut buf[..n], wire::group_flags(receivers));
    buf.truncate(n);
    buf
}

/// How long after `frames` (all received at one instant) the first NAK of the gap they
/// reveal is due, with `cfg` (flow reports sent first: they are due at once).
fn first_nak_delay(cfg: ReceiverConfig, frames: &[Vec<u8>]) -> Duration {
    let mut r = Receiver::new(cfg, 7);
    let now = Instant::now();
    for f in frames {
        r.handle_datagram(now, pub_addr(), f, &mut |_| {});
    }
    let mut buf = [0u8; 2048];
    while let Some(t) = r.poll_flow_report(now, &mut buf) {
        assert!(is_status(&buf[..t.len]), "only flow reports");
    }
    assert_eq!(r.stats().gaps, 1);
    r.poll_timeout().unwrap() - now
}

#[test]
fn the_backoff_follows_the_group_the_latest_new_frame_advertises() {
    let adv = advertising;
    let d = ReceiverConfig::default;
    let at_once = Duration::ZERO;
    for (case, cfg, frames, want) in [
        // The in-order fast path takes frame 1: its class counts, not the repair's.
        (
            "fast path",
            d(),
            vec![adv(0, 4, false), adv(1, 1, false), adv(3, 4, true)],
            Some(at_once),
        ),
        (
            "repairs are ignored",
            d(),
            vec![adv(0, 1, false), adv(2, 4, true)],
            Some(at_once),
        ),
        (
            "heartbeat",
            d(),
            vec![adv(0, 4, false), beat_advertising(3, 1)],
            Some(at_once),
        ),
        (
            "nothing advertised",
            d(),
            vec![adv(0, 0, false), adv(2, 0, false)],
            None,
        ),
        (
            "not followed",
            ReceiverConfig {
                follow_group_size: false,
                ..d()
            },
            vec![adv(0, 1, false), adv(2, 1, false)],
            None,
        ),
        (
            // Not counted by the publisher: one more than it says.
            "no flow reports",
            ReceiverConfig {
                flow_window: 0,
                ..d()
            },
            vec![adv(0, 1, false), adv(2, 1, false)],
            None,
        ),
        (
            "a floor",
            ReceiverConfig {
                nak_delay_min: Duration::from_micros(3),
                ..d()
            },
            vec![adv(0, 1, false), adv(2, 1, false)],
            Some(Duration::from_micros(3)),
        ),
    ] {
        let backoff = cfg.nak_backoff;
        let got = first_nak_delay(cfg, &frames);
        match want {
            Some(w) => assert_eq!(got, w, "{case}"),
            // A random backoff: more than nothing, within the window.
            None => assert!(got > at_once && got <= backoff, "{case}: {got:?}"),
        }
    }
}

#[test]
fn a_lone_receiver_with_a_floor_takes_a_reordered_datagram_without_a_nak() {
    let cfg = ReceiverConfig {
        nak_delay_min: Duration::from_micros(5),
        ..ReceiverConfig::default()
    };
    let mut r = Receiver::new(cfg, 7);
    let now = Instant::now();
    let mut delivered = Vec::new();
    let mut on = |e: Event<'_>| {
        if let Event::Message { seq, .. } = e {
            delivered.push(seq);
        }
    };
    r.handle_datagram(now, pub_addr(), &advertising(0, 1, false), &mut on);
    r.handle_datagram(now, pub_addr(), &advertising(2, 1, false), &mut on);
    let mut buf = [0u8; 2048];
    assert!(next_non_flow(&mut r, now, &mut buf).is_none(), "not yet");
    let later = now + Duration::from_micros(4);
    r.handle_datagram(later, pub_addr(), &advertising(1, 1, false), &mut on);
    r.handle_timeout(now + ms(1), &mut on);
    assert!(next_non_flow(&mut r, now + ms(1), &mut buf).is_none());
    assert_eq!(delivered, [0, 1, 2]);
    assert_eq!((r.stats().reordered, r.stats().naks_sent), (1, 0));
}

#[test]
fn reordered_data_arriving_before_the_timer_costs_no_nak() {
    let mut h = Harness::new(ReceiverConfig::default());
    let f0 = h.publish(b"a");
    let f1 = h.publish(b"b");
    let f2 = h.publish(b"c");
    h.deliver(&f0[0]);
    h.deliver(&f2[0]);
    h.deliver(&f1[0]);
    h.advance(ms(10));
    assert_eq!(h.naks(), 0);
    assert_eq!(h.receiver.stats().reordered, 1);
    assert_eq!(h.take().len(), 4);
}

#[test]
fn unavailable_becomes_an_immediate_loss() {
    let pcfg = PublisherConfig {
        ring_frames: 8,
        ..one_copy()
    };
    let mut h = Harness::with(pcfg, ReceiverConfig::default());
    let first = h.publish(b"0");
    h.deliver(&first[0]);
    for i in 1..20u8 {
        let f = h.publish(&[i]);
        if i >= 18 {
            h.deliver(&f[0]);
        }
    }
    h.take();
    h.advance(ms(1));
    assert_eq!(h.naks(), 1);
    let answer = h.frames();
    // UNAVAILABLE for what left the ring, then repairs of what is still there.
    assert!(matches!(
        Frame::parse(&answer[0]).unwrap(),
        Frame::Unavailable(_)
    ));
    for f in &answer {
        h.deliver(f);
    }
    let oldest = h.publisher.oldest_retained();
    let ev = h.take();
    assert_eq!(
        ev[0],
        Ev::Loss(SeqRange::new(1, oldest), LossReason::Unavailable)
    );
    let delivered: Vec<u64> = ev[1..]
        .iter()
        .map(|e| match e {
            Ev::Msg(s, _) => *s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(delivered, (oldest..20).collect::<Vec<_>>());
}

#[test]
fn heartbeat_reveals_tail_loss_and_close_ends_the_session() {
    let mut h = Harness::new(ReceiverConfig::default());
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    let _lost = h.publish(b"tail");
    h.advance(ms(1));
    let hb = h.frames();
    assert_eq!(hb.len(), 1);
    h.deliver(&hb[0]);
    h.advance(ms(1));
    assert_eq!(h.naks(), 1);
    for f in h.frames() {
        h.deliver(&f);
    }
    h.publisher.close(h.now);
    for f in h.frames() {
        h.deliver(&f);
    }
    assert_eq!(
        h.take(),
        [
            Ev::Joined(0),
            Ev::Msg(0, b"a".to_vec()),
            Ev::Msg(1, b"tail".to_vec()),
            Ev::Closed
        ]
    );
    // Stray repairs after the close do not resurrect the session.
    h.deliver(&f0[0]);
    assert!(h.take().is_empty());
}

#[test]
fn fragments_are_reassembled_and_a_partly_lost_message_is_not_delivered() {
    let pcfg = PublisherConfig {
        mtu: 100,
        ..one_copy()
    };
    let mut h = Harness::with(pcfg, ReceiverConfig::default());
    let big: Vec<u8> = (0..250u8).collect();
    let frames = h.publish(&big);
    assert!(frames.len() >= 3);
    for f in &frames {
        h.deliver(f);
    }
    let ev = h.take();
    assert_eq!(ev[1], Ev::Msg(0, big.clone()));
    // Lose the middle fragment of the next message for good (it leaves the ring).
    let frames = h.publish(&big);
    let next = frames.len() as u64 * 2;
    h.deliver(&frames[0]);
    h.deliver(&frames[2]);
    for _ in 0..10 {
        h.publish(b"x");
    }
    let mut buf = [0u8; 64];
    let n = emit_control(
        &mut buf,
        FrameType::Heartbeat,
        0,
        0xABCD,
        next + 10,
        next + 5,
    )
    .unwrap();
    h.deliver(&buf[..n]);
    let ev = h.take();
    assert_eq!(
        ev[0],
        Ev::Loss(
            SeqRange::new(frames.len() as u64 + 1, frames.len() as u64 + 2),
            LossReason::Unavailable
        )
    );
    assert!(ev.iter().all(|e| !matches!(e, Ev::Msg(..))), "{ev:?}");
    assert!(h.receiver.stats().discarded_fragments >= 1);
}

#[test]
fn from_oldest_join_waits_for_a_heartbeat_and_recovers_the_backlog() {
    // A reorder window of 16 (the smallest): the session (21 messages) is no longer young
    // when the receiver first hears it, so only a heartbeat tells it the oldest retained.
    let rcfg = ReceiverConfig {
        join: JoinPolicy::FromOldest,
        reorder_window: 16,
        ..ReceiverConfig::default()
    };
    let mut h = Harness::new(rcfg);
    for i in 0..20u8 {
        h.publish(&[i]);
    }
    let late = h.publish(b"late");
    h.deliver(&late[0]);
    assert!(h.take().is_empty(), "no join before a heartbeat");
    h.advance(ms(1));
    for f in h.frames() {
        h.deliver(&f);
    }
    assert_eq!(h.take(), [Ev::Joined(0)]);
    let mut ev = Vec::new();
    for _ in 0..10 {
        h.advance(ms(1));
        h.naks();
        for f in h.frames() {
            h.deliver(&f);
        }
        ev.extend(h.take());
        if ev.len() == 21 {
            break;
        }
    }
    assert_eq!(ev.len(), 21, "{ev:?}");
    assert_eq!(ev[0], Ev::Msg(0, vec![0]));
    assert_eq!(ev[20], Ev::Msg(20, b"late".to_vec()));
}

/// A session younger than the reorder window is joined at its start at the first frame
/// heard, by `FromOldest` as by `FirstSeen`: its oldest retained is its start, so there is
/// no heartbeat to wait for (up to `heartbeat_max` into a continuous stream).
#[test]
fn from_oldest_joins_a_young_session_at_its_start_at_once() {
    let rcfg = ReceiverConfig {
        join: JoinPolicy::FromOldest,
        ..ReceiverConfig::default()
    };
    let mut h = Harness::new(rcfg);
    for i in 0..5u8 {
        h.publish(&[i]);
    }
    let late = h.publish(b"late");
    h.deliver(&late[0]);
    assert_eq!(h.take(), [Ev::Joined(0)], "joined at the session's start");
    h.advance(ms(1));
    assert_eq!(h.naks(), 1);
    for f in h.frames() {
        h.deliver(&f);
    }
    let ev = h.take();
    assert_eq!(ev.len(), 6);
    assert_eq!(ev[0], Ev::Msg(0, vec![0]));
    assert_eq!(ev[5], Ev::Msg(5, b"late".to_vec()));
}

#[test]
fn restart_reports_the_old_sessions_loss_then_the_new_session() {
    let mut h = Harness::new(ReceiverConfig::default());
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    h.publish(b"never seen");
    let f2 = h.publish(b"c");
    h.deliver(&f2[0]);
    let mut new_pub = Publisher::new(one_copy(), 0x9999, h.now);
    new_pub.offer(h.now, b"new").unwrap();
    let n = new_pub.poll_transmit(h.now, &mut h.buf).unwrap().len;
    let frame = h.buf[..n].to_vec();
    h.deliver(&frame);
    assert_eq!(
        h.take(),
        [
            Ev::Joined(0),
            Ev::Msg(0, b"a".to_vec()),
            Ev::Loss(SeqRange::new(1, 2), LossReason::PublisherRestarted),
            Ev::Msg(2, b"c".to_vec()),
            Ev::Restarted,
            Ev::Joined(0),
            Ev::Msg(0, b"new".to_vec()),
        ]
    );
    // Late frames of the old session are stale, not another restart.
    h.deliver(&f2[0]);
    assert!(h.take().is_empty());
    assert_eq!(h.receiver.stats().stale_session, 1);
}

#[test]
fn silent_publisher_is_reported_inactive_with_its_gaps_lost() {
    let rcfg = ReceiverConfig {
        inactivity_timeout: ms(100),
        ..ReceiverConfig::default()
    };
    let mut h = Harness::new(rcfg);
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    h.publish(b"b");
    let f2 = h.publish(b"c");
    h.deliver(&f2[0]);
    h.take();
    for _ in 0..200 {
        let next = h.receiver.poll_timeout().unwrap();
        h.advance(next - h.now);
        h.naks();
        if h.receiver.source_count() == 0 {
            break;
        }
    }
    assert_eq!(
        h.take(),
        [
            Ev::Loss(SeqRange::new(1, 2), LossReason::PublisherInactive),
            Ev::Msg(2, b"c".to_vec()),
            Ev::Inactive
        ]
    );
    assert!(h.receiver.poll_timeout().is_none());
}

#[test]
fn gap_is_given_up_after_max_tries() {
    let rcfg = ReceiverConfig {
        max_nak_tries: 3,
        ..ReceiverConfig::default()
    };
    let mut h = Harness::new(rcfg);
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    h.publish(b"b");
    let f2 = h.publish(b"c");
    h.deliver(&f2[0]);
    h.take();
    let mut naks = 0;
    while h.take().is_empty() {
        let next = h.receiver.poll_timeout().unwrap();
        h.advance(next - h.now);
        // NAKs go nowhere: the publisher never answers.
        while next_non_flow(&mut h.receiver, h.now, &mut h.buf).is_some() {
            naks += 1;
        }
        if h.receiver.stats().loss_events > 0 {
            break;
        }
    }
    assert_eq!(naks, 3);
    assert_eq!(h.receiver.stats().lost_fragments, 1);
}

#[test]
fn hostile_sessions_cannot_grow_tracked_state() {
    let rcfg = ReceiverConfig {
        max_sources: 16,
        ..ReceiverConfig::default()
    };
    let mut r = Receiver::new(rcfg, 1);
    let now = Instant::now();
    let mut buf = [0u8; 256];
    let mut x = 0x1234_5678_9abc_def0u64;
    for i in 0..100_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let from: SocketAddr = SocketAddr::from((
            [10, (x >> 8) as u8, (x >> 16) as u8, x as u8],
            (x >> 24) as u16,
        ));
        let mut w = DataFrameWriter::begin(&mut buf, (x >> 40) as u32 % 4, x, x >> 3).unwrap();
        w.push(&mut buf, FRAG_BEGIN | FRAG_END, &x.to_le_bytes())
            .unwrap();
        let n = w.finish(&mut buf);
        let now = now + Duration::from_micros(i);
        r.handle_datagram(now, from, &buf[..n], &mut |_| {});
        // Also a heartbeat from the same forged source announcing a huge window.
        let n = emit_control(&mut buf, FrameType::Heartbeat, 0, x, u64::MAX, 0).unwrap();
        r.handle_datagram(now, from, &buf[..n], &mut |_| {});
        while r.poll_transmit(now, &mut [0u8; 2048]).is_some() {}
        assert!(r.source_count() <= 16);
    }
    assert!(r.stats().sources_rejected > 99_000);
    // Forged UNAVAILABLE and NAK frames are ignored.
    let n = emit_ranges(
        &mut buf,
        FrameType::Unavailable,
        0,
        1,
        &[SeqRange::new(0, 10)],
    )
    .unwrap();
    r.handle_datagram(now, pub_addr(), &buf[..n], &mut |_| panic!("no event"));
    for s in &r.sources {
        assert!(s.gap_count() <= r.cfg.reorder_window + 2);
    }
}

/// STATUS frames `r` sends at `now`: (destination, session, leaving), in order.
fn statuses(r: &mut Receiver, now: Instant) -> Vec<(SocketAddr, u64, bool)> {
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit(now, &mut buf) {
        let Destination::Unicast(to) = t.destination else {
            panic!("receiver sent to the group")
        };
        match Frame::parse(&buf[..t.len]).unwrap() {
            // Flow reports (to publishers followed) have their own tests.
            Frame::Status { flow: Some(_), .. } => {}
            Frame::Status {
                header, leaving, ..
            } => {
                assert_eq!(header.stream, 3);
                out.push((to, header.session, leaving));
            }
            other => panic!("{other:?}"),
        }
    }
    out
}

#[test]
fn status_goes_to_each_publisher_at_the_interval_with_the_session_once_known() {
    let (a, b): (SocketAddr, SocketAddr) = (
        "10.0.0.1:5000".parse().unwrap(),
        "10.0.0.2:5000".parse().unwrap(),
    );
    let rcfg = ReceiverConfig {
        stream: Some(3),
        status_to: vec![a, b, a],
        status_interval: ms(100),
        ..ReceiverConfig::default()
    };
    let mut r = Receiver::new(rcfg, 1);
    assert_eq!(r.config().status_to, [a, b], "duplicates removed");
    let now = Instant::now();
    // First poll: one STATUS to each, session unknown.
    assert_eq!(statuses(&mut r, now), [(a, 0, false), (b, 0, false)]);
    assert_eq!(r.poll_timeout(), Some(now + ms(100)));
    assert!(statuses(&mut r, now + ms(99)).is_empty());
    // A heartbeat from `a` for stream 3 makes its session known; `b` stays unknown.
    let mut buf = [0u8; 64];
    let n = emit_control(&mut buf, FrameType::Heartbeat, 3, 0x5E55, 10, 10).unwrap();
    r.handle_datagram(now + ms(50), a, &buf[..n], &mut |_| {});
    assert_eq!(
        statuses(&mut r, now + ms(100)),
        [(a, 0x5E55, false), (b, 0, false)]
    );
    // Polled late: the next one is an interval after it was sent, with no catch-up burst.
    assert_eq!(statuses(&mut r, now + ms(350)).len(), 2);
    assert!(statuses(&mut r, now + ms(449)).is_empty());
    assert_eq!(statuses(&mut r, now + ms(450)).len(), 2);
    // STATUS frames arriving at a receiver are ignored and counted.
    let n = wire::emit_status(&mut buf, 3, 0, false, None).unwrap();
    let before = r.stats().ignored_frames;
    r.handle_datagram(now, b, &buf[..n], &mut |_| panic!("no event"));
    assert_eq!(r.stats().ignored_frames, before + 1);
    assert_eq!(r.stats().status_sent, 8);
}

#[test]
fn leave_sends_leaving_once_then_status_stops() {
    let a: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    let rcfg = ReceiverConfig {
        stream: Some(3),
        status_to: vec![a, b],
        ..ReceiverConfig::default()
    };
    let mut r = Receiver::new(rcfg, 1);
    let now = Instant::now();
    assert_eq!(statuses(&mut r, now).len(), 2);
    r.leave();
    r.leave();
    assert!(r.is_leaving());
    assert_eq!(r.poll_timeout(), Some(now), "LEAVING is due at once");
    assert_eq!(statuses(&mut r, now), [(a, 0, true), (b, 0, true)]);
    assert_eq!(r.poll_timeout(), None);
    assert!(statuses(&mut r, now + Duration::from_secs(10)).is_empty());
}

#[test]
fn multicast_mode_sends_no_status() {
    let mut r = Receiver::new(ReceiverConfig::default(), 1);
    let now = Instant::now();
    assert!(r.poll_transmit(now, &mut [0u8; 2048]).is_none());
    r.leave();
    assert!(r.poll_transmit(now, &mut [0u8; 2048]).is_none());
    assert_eq!(r.poll_timeout(), None);
}

#[test]
fn unicast_fan_out_end_to_end_with_a_repaired_loss() {
    // The test plays the transport: Group frames go to every publisher destination.
    let pub_at: SocketAddr = "10.0.0.1:5000".parse().unwrap();
    let rx_at: [SocketAddr; 2] = [
        "10.0.2.1:6000".parse().unwrap(),
        "10.0.2.2:6000".parse().unwrap(),
    ];
    let mut now = Instant::now();
    let pcfg = PublisherConfig {
        stream: 3,
        ..one_copy()
    };
    let mut publisher = Publisher::new(pcfg, 0xFEED, now);
    let rcfg = ReceiverConfig {
        stream: Some(3),
        join: JoinPolicy::FromOldest,
        status_to: vec![pub_at],
        ..ReceiverConfig::default()
    };
    let mut rx: Vec<Receiver> = (0..2).map(|i| Receiver::new(rcfg.clone(), i)).collect();
    let mut events: Vec<Vec<Ev>> = vec![Vec::new(), Vec::new()];
    let mut buf = vec![0u8; 70_000];
    // Published before anyone listens: FromOldest joiners recover it.
    publisher.offer(now, b"early").unwrap();
    assert!(publisher.destinations().next().is_none());

    // One round of the loop: receivers -> publisher, then publisher -> destinations,
    // dropping the DATA frame carrying `drop_seq` to receiver 0 once.
    let mut drop_seq = Some(2u64);
    let mut step = |now: Instant,
                    publisher: &mut Publisher,
                    rx: &mut Vec<Receiver>,
                    events: &mut Vec<Vec<Ev>>,
                    drop_seq: &mut Option<u64>| {
        for (i, r) in rx.iter_mut().enumerate() {
            r.handle_timeout(now, &mut |e| events[i].push(own(e)));
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                assert_eq!(t.destination, Destination::Unicast(pub_at));
                publisher.handle_datagram(now, rx_at[i], &buf[..t.len]);
            }
        }
        while let Some(t) = publisher.poll_transmit(now, &mut buf) {
            assert_eq!(t.destination, Destination::Group);
            let frame = &buf[..t.len];
            let lost = match Frame::parse(frame).unwrap() {
                Frame::Data(d) => {
                    !d.is_retransmit()
                        && drop_seq.is_some_and(|s| s >= d.first_seq && s < d.end_seq())
                }
                _ => false,
            };
            let dests: Vec<SocketAddr> = publisher.destinations().collect();
            for to in dests {
                let i = rx_at.iter().position(|&a| a == to).expect("known receiver");
                if lost && i == 0 {
                    *drop_seq = None;
                    continue;
                }
                rx[i].handle_datagram(now, pub_at, frame, &mut |e| events[i].push(own(e)));
            }
        }
    };

    step(now, &mut publisher, &mut rx, &mut events, &mut drop_seq);
    let mut dests: Vec<_> = publisher.destinations().collect();
    dests.sort();
    assert_eq!(dests, rx_at, "both receivers joined by STATUS");
    for m in [b"one".as_slice(), b"two", b"three"] {
        now += ms(1);
        publisher.offer(now, m).unwrap();
        step(now, &mut publisher, &mut rx, &mut events, &mut drop_seq);
    }
    assert!(drop_seq.is_none(), "the DATA frame of seq 2 was dropped");
    for _ in 0..100 {
        now += ms(1);
        step(now, &mut publisher, &mut rx, &mut events, &mut drop_seq);
    }
    let want = [
        Ev::Joined(0),
        Ev::Msg(0, b"early".to_vec()),
        Ev::Msg(1, b"one".to_vec()),
        Ev::Msg(2, b"two".to_vec()),
        Ev::Msg(3, b"three".to_vec()),
    ];
    assert_eq!(events[0], want);
    assert_eq!(events[1], want);
    assert!(rx[0].stats().naks_sent >= 1);
    assert!(rx[0].stats().recovered >= 1, "seq 2 came back as a repair");
    assert!(publisher.stats().retransmits >= 1);
    assert_eq!(publisher.stats().destinations_added, 2);

    // Receiver 1 leaves: the publisher stops sending to it, receiver 0 still gets data.
    rx[1].leave();
    now += ms(1);
    publisher.offer(now, b"four").unwrap();
    step(now, &mut publisher, &mut rx, &mut events, &mut drop_seq);
    assert_eq!(publisher.destinations().collect::<Vec<_>>(), [rx_at[0]]);
    assert_eq!(events[0].last(), Some(&Ev::Msg(4, b"four".to_vec())));
    assert_eq!(events[1].len(), want.len());
}

/// Feed `frames` (kind, session, a, b, flags, len: as in the proptests below) to a
/// receiver with the in-order fast path and to one without, stepping time, timers and
/// NAKs alike; returns whether events, counters and NAKs stayed identical.
fn fast_and_general_paths_agree(frames: &[(u8, u64, u64, u64, u8, usize)]) -> Result<(), String> {
    let cfg = ReceiverConfig {
        reorder_window: 16,
        flow_window: 4096,
        ..ReceiverConfig::default()
    };
    let mut fast = Receiver::new(cfg.clone(), 3);
    let mut general = Receiver::new(cfg, 3);
    general.general_path_only = true;
    let mut now = Instant::now();
    let mut buf = vec![0u8; 4096];
    let (mut out_f, mut out_g) = (vec![0u8; 4096], vec![0u8; 4096]);
    let mut next = 0;
    for &(kind, session, a, b, flags, len) in frames {
        // Mostly one session; kinds 5 and 6 continue an in-order stream (6 as repairs).
        // The publisher advertises 0 to 3 receivers (the backoff depends on it).
        let group = wire::group_flags((session >> 8) as usize % 4);
        let session = u64::from(session % 8 == 0);
        let a = if kind >= 5 {
            next += 1;
            next - 1
        } else {
            a
        };
        let n = match kind {
            0 | 4 | 5 | 6 => {
                // Mostly whole messages, one per frame (the fast path's case).
                let mut w = DataFrameWriter::begin(&mut buf, 0, session, a).unwrap();
                let (count, flags) = if kind == 0 {
                    (b % 4 + 1, flags)
                } else {
                    (1, FRAG_BEGIN | FRAG_END)
                };
                w.set_flags(&mut buf, group);
                for k in 0..count {
                    w.push(&mut buf, (flags >> k) & 3, &vec![a as u8; len])
                        .unwrap();
                }
                let n = w.finish(&mut buf);
                if kind == 6 {
                    wire::set_retransmit(&mut buf[..n]);
                }
                n
            }
            1 | 2 => {
                let t = [FrameType::Heartbeat, FrameType::Close][usize::from(kind) - 1];
                let n = emit_control(&mut buf, t, 0, session, a.max(b), a.min(b)).unwrap();
                wire::set_flags(&mut buf[..n], group);
                n
            }
            _ => emit_ranges(
                &mut buf,
                FrameType::Unavailable,
                0,
                session,
                &[SeqRange::new(a.min(b), a.max(b) + 1)],
            )
            .unwrap(),
        };
        let (mut ev_f, mut ev_g) = (Vec::new(), Vec::new());
        fast.handle_datagram(now, pub_addr(), &buf[..n], &mut |e| ev_f.push(own(e)));
        general.handle_datagram(now, pub_addr(), &buf[..n], &mut |e| ev_g.push(own(e)));
        now += Duration::from_micros(300);
        fast.handle_timeout(now, &mut |e| ev_f.push(own(e)));
        general.handle_timeout(now, &mut |e| ev_g.push(own(e)));
        if ev_f != ev_g {
            return Err(format!("events differ: fast {ev_f:?}, general {ev_g:?}"));
        }
        if fast.stats() != general.stats() || fast.poll_timeout() != general.poll_timeout() {
            return Err(format!(
                "state differs: fast {:?}, general {:?}",
                fast.stats(),
                general.stats()
            ));
        }
        loop {
            let (f, g) = (
                fast.poll_transmit(now, &mut out_f),
                general.poll_transmit(now, &mut out_g),
            );
            match (f, g) {
                (None, None) => break,
                (Some(f), Some(g))
                    if f.destination == g.destination && out_f[..f.len] == out_g[..g.len] => {}
                (f, g) => return Err(format!("transmits differ: {f:?} vs {g:?}")),
            }
        }
    }
    Ok(())
}

#[test]
fn fast_path_agrees_with_the_general_path_on_an_in_order_stream_with_a_gap() {
    // 0..5 in order, 6 before 5, a heartbeat, then in order again.
    let mut frames: Vec<_> = (0..5).map(|s| (4, 0, s, 0, 3, 8)).collect();
    frames.extend([
        (4, 0, 6, 0, 3, 8),
        (4, 0, 5, 0, 3, 8),
        (1, 0, 7, 0, 0, 0),
        (4, 0, 7, 0, 3, 8),
    ]);
    frames.extend((8..12).map(|s| (4, 0, s, 0, 3, 8)));
    fast_and_general_paths_agree(&frames).unwrap();
}

proptest! {
    /// The in-order fast path changes nothing observable: any sequence of valid frames
    /// (mostly whole single-message frames on nearby sequence numbers, with others mixed
    /// in) gives the same events, counters, deadlines and NAKs with and without it.
    #[test]
    fn fast_path_agrees_with_the_general_path(frames in proptest::collection::vec(
        (0u8..7, any::<u64>(), 0u64..40, 0u64..40, any::<u8>(), 0usize..20), 1..80)) {
        if let Err(e) = fast_and_general_paths_agree(&frames) {
            prop_assert!(false, "{}", e);
        }
    }

    /// Arbitrary datagrams never panic the receiver.
    #[test]
    fn arbitrary_datagrams_never_panic(dgrams in proptest::collection::vec(
        proptest::collection::vec(any::<u8>(), 0..300), 1..30)) {
        let mut r = Receiver::new(ReceiverConfig::default(), 3);
        let now = Instant::now();
        for d in &dgrams {
            r.handle_datagram(now, pub_addr(), d, &mut |_| {});
        }
        r.handle_timeout(now + ms(1), &mut |_| {});
        while r.poll_transmit(now + ms(1), &mut [0u8; 2048]).is_some() {}
    }

    /// Valid frames with arbitrary fields, in any order, never panic the receiver, and
    /// every NAK it sends is well formed.
    #[test]
    fn arbitrary_valid_frames_never_panic(frames in proptest::collection::vec(
        (0u8..4, any::<u64>(), 0u64..64, 0u64..64, any::<u8>(), 0usize..50), 1..60)) {
        let mut r = Receiver::new(ReceiverConfig { reorder_window: 16, ..ReceiverConfig::default() }, 3);
        let mut now = Instant::now();
        let mut buf = vec![0u8; 4096];
        for (kind, session, a, b, flags, len) in frames {
            let session = session % 3;
            let n = match kind {
                0 => {
                    let mut w = DataFrameWriter::begin(&mut buf, 0, session, a).unwrap();
                    for k in 0..(b % 4 + 1) {
                        w.push(&mut buf, (flags >> k) & 3, &vec![1u8; len]).unwrap();
                    }
                    w.finish(&mut buf)
                }
                1 => emit_control(&mut buf, FrameType::Heartbeat, 0, session, a.max(b), a.min(b)).unwrap(),
                2 => emit_control(&mut buf, FrameType::Close, 0, session, a.max(b), a.min(b)).unwrap(),
                _ => emit_ranges(&mut buf, FrameType::Unavailable, 0, session, &[SeqRange::new(a.min(b), a.max(b) + 1)]).unwrap(),
            };
            r.handle_datagram(now, pub_addr(), &buf[..n], &mut |_| {});
            now += Duration::from_micros(300);
            r.handle_timeout(now, &mut |_| {});
            while let Some(t) = r.poll_transmit(now, &mut buf) {
                prop_assert!(Frame::parse(&buf[..t.len]).is_ok());
            }
        }
    }
}

#[test]
fn heartbeats_at_the_end_of_the_sequence_space_do_not_overflow() {
    let mut r = Receiver::new(ReceiverConfig::default(), 1);
    let now = Instant::now();
    let mut buf = [0u8; 2048];
    for next in [u64::MAX - 10, u64::MAX] {
        let n = emit_control(&mut buf, FrameType::Heartbeat, 0, 5, next, 0).unwrap();
        r.handle_datagram(now, pub_addr(), &buf[..n], &mut |_| {});
    }
    let later = now + ms(1);
    r.handle_timeout(later, &mut |_| {});
    let t = next_non_flow(&mut r, later, &mut buf).expect("the gap is NAKed");
    assert!(matches!(
        Frame::parse(&buf[..t.len]).unwrap(),
        Frame::Nak(_)
    ));
}

#[test]
fn a_buffer_too_small_for_a_nak_leaves_the_timers_alone() {
    let mut h = Harness::new(ReceiverConfig::default());
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    h.publish(b"b");
    let f2 = h.publish(b"c");
    h.deliver(&f2[0]);
    assert_eq!(h.naks(), 0, "only the flow report at join");
    h.advance(ms(1));
    assert!(h.receiver.poll_transmit(h.now, &mut [0u8; 100]).is_none());
    assert_eq!(h.receiver.stats().naks_sent, 0);
    assert_eq!(h.naks(), 1, "the NAK is still due");
}

#[test]
fn an_oversized_message_is_reported_lost_not_dropped_silently() {
    let pcfg = PublisherConfig {
        mtu: 100,
        ..one_copy()
    };
    let rcfg = ReceiverConfig {
        max_message_size: 150,
        ..ReceiverConfig::default()
    };
    let mut h = Harness::with(pcfg, rcfg);
    for f in h.publish(&[1u8; 400]) {
        h.deliver(&f);
    }
    for f in h.publish(b"next") {
        h.deliver(&f);
    }
    let ev = h.take();
    let frags = h.publisher.next_seq() - 1;
    assert_eq!(
        ev,
        [
            Ev::Joined(0),
            Ev::Loss(SeqRange::new(0, frags), LossReason::MessageTooLarge),
            Ev::Msg(frags, b"next".to_vec())
        ]
    );
    assert_eq!(h.receiver.stats().discarded_fragments, frags);
}

#[test]
fn a_wide_gap_repaired_in_slices_never_runs_out_of_tries() {
    // The publisher repairs at most 4 frames per NAK; the receiver may NAK only 3 times
    // without an answer. A 200-message gap needs ~50 NAKs, each answered in part.
    let pcfg = PublisherConfig {
        max_queued_repairs: 4,
        ..one_copy()
    };
    let rcfg = ReceiverConfig {
        max_nak_tries: 3,
        ..ReceiverConfig::default()
    };
    let mut h = Harness::with(pcfg, rcfg);
    let f0 = h.publish(b"first");
    h.deliver(&f0[0]);
    for i in 0..200u32 {
        h.publish(&i.to_le_bytes());
    }
    let last = h.publish(b"last");
    h.deliver(&last[0]);
    for _ in 0..500 {
        let Some(next) = h.receiver.poll_timeout() else {
            break;
        };
        h.advance(next.saturating_duration_since(h.now));
        h.naks();
        for f in h.frames() {
            h.deliver(&f);
        }
        if h.receiver.stats().messages == 202 {
            break;
        }
    }
    assert_eq!(h.receiver.stats().messages, 202);
    assert_eq!(h.receiver.stats().loss_events, 0);
    assert!(h.receiver.stats().naks_sent > 10);
}

#[test]
fn a_listening_receiver_recovers_a_young_sessions_lost_first_frames() {
    // Lost first DATA frame, then more data: joined at the session's start.
    let mut h = Harness::new(ReceiverConfig::default());
    let _lost = h.publish(b"zero");
    let f1 = h.publish(b"one");
    h.deliver(&f1[0]);
    h.advance(ms(1));
    h.naks();
    for f in h.frames() {
        h.deliver(&f);
    }
    let ev = h.take();
    assert_eq!(
        ev[..3],
        [
            Ev::Joined(0),
            Ev::Msg(0, b"zero".to_vec()),
            Ev::Msg(1, b"one".to_vec())
        ]
    );

    // Lost first DATA frame, then a heartbeat first: the same.
    let mut h = Harness::new(ReceiverConfig::default());
    let _lost = h.publish(b"zero");
    h.advance(ms(1));
    let hb = h.frames();
    h.deliver(&hb[0]);
    h.advance(ms(1));
    h.naks();
    for f in h.frames() {
        h.deliver(&f);
    }
    assert_eq!(h.take()[..2], [Ev::Joined(0), Ev::Msg(0, b"zero".to_vec())]);
}

#[test]
fn repair_latency_runs_from_gap_detection_to_in_order_delivery() {
    let mut h = Harness::new(ReceiverConfig::default());
    let f0 = h.publish(b"a");
    let lost1 = h.publish(b"b");
    let lost2 = h.publish(b"c");
    let f3 = h.publish(b"d");
    let f4 = h.publish(b"e");
    h.deliver(&f0[0]);
    // Reordering alone is not a repair: seq 4 arrives before 3, before any NAK.
    h.deliver(&f4[0]);
    h.deliver(&f3[0]);
    assert_eq!(h.receiver.repair_latency().count(), 0);
    // Gap [1, 3) detected at t0; NAKed later; repairs arrive 7 ms after detection, the
    // higher one first (held in the window until the lower one fills the gap).
    let detected = h.now;
    let mut repaired = Vec::new();
    while repaired.is_empty() {
        h.advance(ms(1));
        if h.naks() > 0 {
            repaired = h.frames();
            // Only the repairs (a heartbeat may be due too).
            repaired.retain(|f| matches!(Frame::parse(f), Ok(Frame::Data(_))));
        }
    }
    h.now = detected + ms(7);
    assert_eq!(
        repaired.len(),
        1,
        "one repair datagram for both lost frames"
    );
    match Frame::parse(&repaired[0]) {
        Ok(Frame::Data(d)) => assert!(d.is_retransmit() && d.count == 2),
        other => panic!("{other:?}"),
    }
    // Deliver them as two repairs instead, the higher one first.
    let repaired: Vec<Vec<u8>> = [&lost1[0], &lost2[0]]
        .into_iter()
        .map(|f| {
            let mut f = f.clone();
            crate::proto::wire::set_retransmit(&mut f);
            f
        })
        .collect();
    h.deliver(&repaired[1]);
    assert_eq!(
        h.receiver.repair_latency().count(),
        0,
        "held, not delivered"
    );
    h.now = detected + ms(9);
    h.deliver(&repaired[0]);
    let r = h.receiver.repair_latency();
    assert_eq!(r.count(), 2);
    // Both were delivered at 9 ms: the held one waited for the gap below it.
    let p = r.quantile(0.0).unwrap();
    assert!(p >= ms(9) - Duration::from_micros(100) && r.max().unwrap() <= ms(9) + ms(1) / 10);
    let msgs = h
        .take()
        .into_iter()
        .filter(|e| matches!(e, Ev::Msg(..)))
        .count();
    assert_eq!(msgs, 5);
}

// ---- Authenticated frames ----

const SECRET: [u8; 32] = [0x5A; 32];

fn authed(id: u32, secret: [u8; 32]) -> crate::proto::auth::AuthConfig {
    crate::proto::auth::AuthConfig::with_key(id, secret)
}

fn auth_harness() -> Harness {
    Harness::with(
        PublisherConfig {
            auth: authed(1, SECRET),
            ..one_copy()
        },
        ReceiverConfig {
            auth: authed(1, SECRET),
            ..ReceiverConfig::default()
        },
    )
}

/// A frame of another publisher sharing `h`'s source address, sealed with `auth`.
fn frame_from(session: u64, auth: crate::proto::auth::AuthConfig, msg: &[u8]) -> Vec<u8> {
    let now = Instant::now();
    let mut p = Publisher::new(PublisherConfig { auth, ..one_copy() }, session, now);
    p.offer(now, msg).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = p.poll_transmit(now, &mut buf).unwrap().len;
    buf.truncate(n);
    buf
}

#[test]
fn authenticated_stream_is_delivered_and_repaired_with_sealed_naks() {
    let mut h = auth_harness();
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    h.publish(b"lost");
    let f2 = h.publish(b"c");
    h.deliver(&f2[0]);
    h.advance(ms(1));
    assert_eq!(h.naks(), 1);
    assert_eq!(
        h.publisher.stats().naks_received,
        1,
        "the sealed NAK was accepted"
    );
    assert_eq!(h.publisher.stats().auth_failures, 0);
    for f in h.frames() {
        h.deliver(&f);
    }
    assert_eq!(
        h.take(),
        [
            Ev::Joined(0),
            Ev::Msg(0, b"a".to_vec()),
            Ev::Msg(1, b"lost".to_vec()),
            Ev::Msg(2, b"c".to_vec()),
        ]
    );
    assert_eq!(h.receiver.stats().recovered, 1);
    assert_eq!(h.receiver.stats().auth_failures, 0);
}

#[test]
fn forged_modified_unknown_key_and_unauthenticated_frames_are_dropped_and_counted() {
    let mut h = auth_harness();
    let genuine = h.publish(b"real");
    // Same key id, another secret: a forger who guessed the id.
    h.deliver(&frame_from(0xABCD, authed(1, [0x66; 32]), b"forged"));
    // A key id this receiver does not hold.
    h.deliver(&frame_from(0xABCD, authed(2, SECRET), b"unknown key"));
    // No trailer at all, while authentication is required.
    h.deliver(&frame_from(0xABCD, Default::default(), b"plain"));
    // The genuine frame with one payload byte changed and the CRC fixed up.
    let mut modified = genuine[0].clone();
    modified[40] ^= 0x20;
    wire::finish_frame(&mut modified);
    h.deliver(&modified);
    assert!(
        h.take().is_empty(),
        "nothing forged reaches the application"
    );
    assert_eq!(h.receiver.stats().auth_failures, 4);
    assert_eq!(
        h.receiver.source_count(),
        0,
        "forged frames create no state"
    );
    h.deliver(&genuine[0]);
    assert_eq!(h.take(), [Ev::Joined(0), Ev::Msg(0, b"real".to_vec())]);
}

#[test]
fn a_keyless_receiver_refuses_sealed_frames_and_a_rollout_receiver_takes_both() {
    let sealed = frame_from(1, authed(1, SECRET), b"sealed");
    let plain = frame_from(2, Default::default(), b"plain");
    let mut off = Receiver::new(ReceiverConfig::default(), 1);
    off.handle_datagram(Instant::now(), pub_addr(), &sealed, &mut |_| {});
    assert_eq!(off.stats().auth_failures, 1);
    assert_eq!(off.stats().messages, 0);

    let mut rollout = Receiver::new(
        ReceiverConfig {
            auth: crate::proto::auth::AuthConfig {
                accept_unauthenticated: true,
                ..authed(1, SECRET)
            },
            ..ReceiverConfig::default()
        },
        1,
    );
    let now = Instant::now();
    rollout.handle_datagram(now, pub_addr(), &sealed, &mut |_| {});
    let other: SocketAddr = "10.0.0.2:5000".parse().unwrap();
    rollout.handle_datagram(now, other, &plain, &mut |_| {});
    assert_eq!(rollout.stats().messages, 2);
    assert_eq!(rollout.stats().auth_failures, 0);
}

#[test]
fn rotation_accepts_the_old_key_while_naks_use_the_new_one() {
    let old = authed(1, SECRET);
    let new = authed(2, [0x77; 32]);
    let mut h = Harness::with(
        PublisherConfig {
            auth: crate::proto::auth::AuthConfig {
                accept: vec![new.key.clone().unwrap()],
                ..old.clone()
            },
            ..one_copy()
        },
        ReceiverConfig {
            auth: crate::proto::auth::AuthConfig {
                accept: vec![old.key.clone().unwrap()],
                ..new
            },
            ..ReceiverConfig::default()
        },
    );
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    h.publish(b"lost");
    h.advance(ms(2));
    for f in h.frames() {
        h.deliver(&f); // heartbeat reveals the tail loss
    }
    h.advance(ms(1));
    assert_eq!(h.naks(), 1);
    let repairs = h.frames();
    assert_eq!(repairs.len(), 1, "NAK sealed with the new key was served");
    h.deliver(&repairs[0]);
    assert_eq!(
        h.take(),
        [
            Ev::Joined(0),
            Ev::Msg(0, b"a".to_vec()),
            Ev::Msg(1, b"lost".to_vec())
        ]
    );
    assert_eq!(h.receiver.stats().auth_failures, 0);
    assert_eq!(h.publisher.stats().auth_failures, 0);
}

/// A recorded frame stays authentic. A receiver that follows a session must never be
/// moved back to an older one by a replay — not even one older than its retired list
/// remembers.
#[test]
fn replayed_older_sessions_cannot_take_over_an_authenticated_source() {
    let run = |auth: crate::proto::auth::AuthConfig| {
        let mut r = Receiver::new(
            ReceiverConfig {
                auth: auth.clone(),
                ..ReceiverConfig::default()
            },
            1,
        );
        let now = Instant::now();
        // Sessions 10, 20, ..., 70: six restarts, more than the 4 retired ids kept.
        let recorded: Vec<Vec<u8>> = (1..=7)
            .map(|k| frame_from(k * 10, auth.clone(), b"m"))
            .collect();
        let mut events = Vec::new();
        for f in &recorded {
            r.handle_datagram(now, pub_addr(), f, &mut |e| events.push(own(e)));
        }
        assert_eq!(r.stats().restarts, 6);
        events.clear();
        // The attacker replays the first session's frame.
        r.handle_datagram(now, pub_addr(), &recorded[0], &mut |e| events.push(own(e)));
        (events, *r.stats())
    };
    let (events, stats) = run(authed(1, SECRET));
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(stats.restarts, 6);
    assert_eq!(stats.stale_session, 1);
    // Without authentication (anything can be forged anyway) the same replay is taken as
    // a restart: the check above is what stops it.
    let (events, stats) = run(Default::default());
    assert!(events.contains(&Ev::Restarted), "{events:?}");
    assert_eq!(stats.restarts, 7);
}

#[test]
fn replays_within_the_session_are_duplicates() {
    let mut h = auth_harness();
    let f0 = h.publish(b"a");
    let f1 = h.publish(b"b");
    h.deliver(&f0[0]);
    h.deliver(&f1[0]);
    h.take();
    h.deliver(&f0[0]);
    h.deliver(&f1[0]);
    assert!(h.take().is_empty());
    assert_eq!(h.receiver.stats().duplicates, 2);
}

#[test]
fn sealed_naks_fit_nak_max_len() {
    let mut r = Receiver::new(
        ReceiverConfig {
            auth: authed(1, SECRET),
            ..ReceiverConfig::default()
        },
        3,
    );
    let now = Instant::now();
    let sealed = |seq: u64| {
        let mut buf = vec![0u8; 128];
        let mut w = DataFrameWriter::begin(&mut buf, 0, 5, seq).unwrap();
        w.push(&mut buf, FRAG_BEGIN | FRAG_END, b"x").unwrap();
        let n = w.finish(&mut buf);
        let k = crate::proto::auth::Keyring::new(&authed(1, SECRET));
        let n = k.seal(&mut buf, n).unwrap();
        buf.truncate(n);
        buf
    };
    // Every other sequence number missing: 64 ranges in one NAK.
    for seq in (0..200).step_by(2) {
        r.handle_datagram(now, pub_addr(), &sealed(seq), &mut |_| {});
    }
    r.handle_timeout(now + ms(1), &mut |_| {});
    let mut buf = vec![0u8; NAK_MAX_LEN];
    let t = next_non_flow(&mut r, now + ms(1), &mut buf).expect("a full NAK");
    assert_eq!(t.len, NAK_MAX_LEN);
    let k = crate::proto::auth::Keyring::new(&authed(1, SECRET));
    let Ok(Frame::Nak(list)) = k.open(&buf[..t.len]) else {
        panic!("not a sealed NAK")
    };
    assert_eq!(list.len(), MAX_RANGES);
}

#[test]
fn authentic_frames_replayed_from_another_address_are_dropped() {
    let mut h = auth_harness();
    let f0 = h.publish(b"a");
    h.deliver(&f0[0]);
    h.take();
    let elsewhere: SocketAddr = "10.0.0.66:5000".parse().unwrap();
    let events = &mut h.events;
    h.receiver
        .handle_datagram(h.now, elsewhere, &f0[0], &mut |e| events.push(own(e)));
    assert!(h.take().is_empty(), "the replay is not another publisher");
    assert_eq!(h.receiver.stats().duplicate_sessions, 1);
    assert_eq!(h.receiver.source_count(), 1);
    // Without authentication, another address is another publisher.
    let mut r = Receiver::new(ReceiverConfig::default(), 1);
    r.handle_datagram(
        h.now,
        pub_addr(),
        &frame_from(5, Default::default(), b"x"),
        &mut |_| {},
    );
    r.handle_datagram(
        h.now,
        elsewhere,
        &frame_from(5, Default::default(), b"x"),
        &mut |_| {},
    );
    assert_eq!(r.source_count(), 2);
}

/// A NAK asking again for what a first NAK asked for carries FLAG_REPEAT, and the
/// publisher re-sends a lost repair after `repeat_linger`, well inside `repair_linger`:
/// the lost repair costs about one retry interval, not the long linger.
#[test]
fn a_repeated_nak_is_flagged_and_its_lost_repair_is_resent_promptly() {
    let cfg = ReceiverConfig {
        initial_rtt: Duration::from_micros(5),
        nak_backoff: Duration::from_micros(20),
        nak_retry_min: Duration::from_micros(50),
        ..ReceiverConfig::default()
    };
    let mut h = Harness::new(cfg);
    let f0 = h.publish(b"a");
    let _lost = h.publish(b"b");
    let f2 = h.publish(b"c");
    h.deliver(&f0[0]);
    h.deliver(&f2[0]);
    let detected = h.now;
    let mut naks: Vec<(Duration, bool)> = Vec::new();
    let mut repairs = 0;
    while naks.len() < 2 {
        h.now += Duration::from_micros(5);
        assert!(h.now < detected + ms(1), "{naks:?}");
        let events = &mut h.events;
        h.receiver
            .handle_timeout(h.now, &mut |e| events.push(own(e)));
        while let Some(t) = h.receiver.poll_transmit(h.now, &mut h.buf) {
            let frame = h.buf[..t.len].to_vec();
            let Ok(Frame::Nak(list)) = Frame::parse(&frame) else {
                continue;
            };
            let repeat = list.header.flags & wire::FLAG_REPEAT != 0;
            naks.push((h.now - detected, repeat));
            h.publisher
                .handle_datagram(h.now, "10.0.1.1:6000".parse().unwrap(), &frame);
        }
        // Every repair is lost.
        repairs += h
            .frames()
            .iter()
            .filter(|f| matches!(Frame::parse(f), Ok(Frame::Data(d)) if d.is_retransmit()))
            .count();
    }
    assert_eq!(naks.iter().map(|n| n.1).collect::<Vec<_>>(), [false, true]);
    let gap = naks[1].0 - naks[0].0;
    let linger = h.publisher.config().repair_linger;
    assert!(gap < linger, "the repeat came {gap:?} after the first NAK");
    assert_eq!(repairs, 2, "the repeat was served inside repair_linger");
    assert_eq!(h.receiver.stats().naks_repeated, 1);
    assert_eq!(h.publisher.stats().naks_repeated, 1);
}

/// Flow reports `r` sends at `now`: (destination, session, leaving, report), in order.
fn flow_reports(r: &mut Receiver, now: Instant) -> Vec<(SocketAddr, u64, bool, wire::FlowReport)> {
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Some(t) = r.poll_transmit(now, &mut buf) {
        let Destination::Unicast(to) = t.destination else {
            panic!("receiver sent to the group")
        };
        if let Frame::Status {
            header,
            leaving,
            flow: Some(report),
        } = Frame::parse(&buf[..t.len]).unwrap()
        {
            out.push((to, header.session, leaving, report));
        }
    }
    out
}

#[test]
fn flow_reports_at_join_per_quarter_window_on_heartbeats_and_when_leaving() {
    // Each 140-byte frame counts 140 + DATAGRAM_COST (908 bytes): a quarter of this window
    // is crossed by the eighth frame after a report.
    assert_eq!(140 + crate::proto::ring::DATAGRAM_COST, 908);
    let rcfg = ReceiverConfig {
        flow_window: 4 * (7 * 908 + 100),
        ..ReceiverConfig::default()
    };
    let mut h = Harness::new(rcfg);
    let report = |position| wire::FlowReport {
        position,
        window: 4 * (7 * 908 + 100),
    };
    // Joining reports at once (the publisher may be waiting for a first report).
    let f = h.publish(&[1; 100]);
    h.deliver(&f[0]);
    assert_eq!(
        flow_reports(&mut h.receiver, h.now),
        [(pub_addr(), 0xABCD, false, report(1))]
    );
    assert!(h.receiver.poll_timeout().is_none_or(|t| t > h.now));
    // The eighth frame after a report crosses a quarter window.
    for _ in 0..7 {
        let f = h.publish(&[2; 100]);
        h.deliver(&f[0]);
    }
    assert!(flow_reports(&mut h.receiver, h.now).is_empty());
    let f = h.publish(&[3; 100]);
    h.deliver(&f[0]);
    assert_eq!(h.receiver.poll_timeout(), Some(h.now), "due at once");
    assert_eq!(flow_reports(&mut h.receiver, h.now)[0].3, report(9));
    // A gap holds the position at the first missing message, whatever arrives after it.
    h.publish(&[4; 100]);
    for _ in 0..8 {
        let f = h.publish(&[5; 100]);
        h.deliver(&f[0]);
    }
    assert_eq!(flow_reports(&mut h.receiver, h.now)[0].3, report(9));
    // A heartbeat is answered at once when the publisher says it is held back (a lost
    // report is replaced within one heartbeat interval), otherwise only once the last
    // report is `flow_keepalive` old.
    let mut buf = [0u8; 64];
    let n = emit_control(&mut buf, FrameType::Heartbeat, 0, 0xABCD, 18, 0).unwrap();
    h.deliver(&buf[..n]);
    assert!(
        flow_reports(&mut h.receiver, h.now).is_empty(),
        "reported just now"
    );
    let mut held = buf;
    wire::set_flags(&mut held[..n], wire::FLAG_FLOW_HELD);
    h.deliver(&held[..n]);
    assert_eq!(flow_reports(&mut h.receiver, h.now).len(), 1);
    h.now += h.receiver.config().flow_keepalive - Duration::from_nanos(1);
    h.deliver(&buf[..n]);
    assert!(flow_reports(&mut h.receiver, h.now).is_empty());
    h.now += Duration::from_nanos(1);
    h.deliver(&buf[..n]);
    assert_eq!(flow_reports(&mut h.receiver, h.now).len(), 1, "keep-alive");
    assert_eq!(h.receiver.stats().flow_reports, 5);
    // Leaving: one last report with the LEAVING flag, then none.
    h.receiver.leave();
    assert_eq!(
        flow_reports(&mut h.receiver, h.now),
        [(pub_addr(), 0xABCD, true, report(9))]
    );
    h.deliver(&held[..n]);
    assert!(flow_reports(&mut h.receiver, h.now).is_empty());
}

#[test]
fn no_flow_reports_with_a_zero_window() {
    let mut h = Harness::new(ReceiverConfig {
        flow_window: 0,
        ..ReceiverConfig::default()
    });
    let f = h.publish(&[1; 100]);
    h.deliver(&f[0]);
    let mut buf = [0u8; 64];
    let n = emit_control(&mut buf, FrameType::Heartbeat, 0, 0xABCD, 1, 0).unwrap();
    h.deliver(&buf[..n]);
    h.receiver.leave();
    assert!(flow_reports(&mut h.receiver, h.now).is_empty());
    assert_eq!(h.receiver.stats().flow_reports, 0);
}

/// A DATA frame of whole messages `seqs.start..seqs.end` (session 5, stream 0).
fn whole_messages(seqs: std::ops::Range<u64>) -> Vec<u8> {
    let mut buf = vec![0u8; 512];
    let mut w = DataFrameWriter::begin(&mut buf, 0, 5, seqs.start).unwrap();
    for seq in seqs {
        w.push(&mut buf, FRAG_BEGIN | FRAG_END, &[seq as u8; 4])
            .unwrap();
    }
    let n = w.finish(&mut buf);
    buf.truncate(n);
    buf
}

fn close_at(next_seq: u64) -> Vec<u8> {
    let mut buf = vec![0u8; 64];
    let n = emit_control(&mut buf, FrameType::Close, 0, 5, next_seq, 0).unwrap();
    buf.truncate(n);
    buf
}

/// Nothing of a session is delivered after `Closed`, whatever the frames say: the rest
/// of a frame that straddles the announced end, and fragments held past it, are dropped
/// (found by the receiver fuzzer, seed 7: `tests/fuzz_regressions/`).
#[test]
fn nothing_is_delivered_past_the_end_a_close_announced() {
    let cases = [
        // The rest of a frame that straddles the end: 2 and 3 lie past it.
        (
            vec![whole_messages(0..1), close_at(2), whole_messages(1..4)],
            2,
        ),
        // Held out of order past the end (1 is missing), then the gap filled.
        (
            vec![
                whole_messages(0..1),
                whole_messages(2..4),
                close_at(2),
                whole_messages(1..2),
            ],
            0,
        ),
    ];
    for (frames, beyond_close) in cases {
        let mut h = Harness::new(ReceiverConfig::default());
        for f in &frames {
            h.deliver(f);
        }
        assert_eq!(
            h.take(),
            [
                Ev::Joined(0),
                Ev::Msg(0, vec![0; 4]),
                Ev::Msg(1, vec![1; 4]),
                Ev::Closed
            ]
        );
        let s = h.receiver.stats();
        assert_eq!((s.beyond_close, s.closes), (beyond_close, 1));
    }
}
