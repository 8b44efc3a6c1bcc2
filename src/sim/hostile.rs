//! Hostile input: fuzz drivers for the frame decoder and the two state machines, with
//! checkers that they never panic and stay within their configured bounds, and a
//! structure-aware generator of mutated valid frames.
//!
//! Every test case is a byte string, so one found by any driver (the seeded [`Generator`]
//! in `cargo test`, or cargo-fuzz under `fuzz/`) is replayed by the same call and kept as a
//! regression test (`tests/fuzz_regressions.rs`):
//!
//! - [`check_decode`]: the bytes are one datagram for [`Frame::parse`].
//! - [`check_publisher`] and [`check_receiver`]: the bytes are a *script* (below) that
//!   drives a [`Publisher`] or a [`Receiver`] core in virtual time.
//!
//! A checker panics (with the violated bound in the message) on any violation; the state
//! machines themselves must never panic. Every byte string is a valid script.
//!
//! # Script format
//! Byte 0 picks a configuration preset (small limits, so bounds are reached quickly). Then
//! operations follow until the bytes run out; a field cut short by the end reads as zeros:
//!
//! | op byte & 7 | operands | effect |
//! | --- | --- | --- |
//! | 0..=3 | `src` u8, `len` u16 LE, `len` bytes | a datagram from address number `src`; bit 7 of the op byte re-computes its CRC first (so mutated bytes reach the checks behind the CRC) |
//! | 4 | `dt` u16 LE | advance the clock `dt` µs (ms if bit 7 is set) |
//! | 5 | — | run timers and drain `poll_transmit` |
//! | 6 | `len` u16 LE, `drop` u8 | publisher: offer a `len % 4096`-byte message. Receiver: an honest publisher (address 0) offers one and its frames are delivered, frame *i* dropped if bit *i* of `drop` is set |
//! | 7 | — | publisher: `close`. Receiver: `leave` |
//!
//! In the receiver script, NAKs addressed to the honest publisher are handed to it and its
//! repairs, heartbeats and UNAVAILABLE frames delivered back when timers run (op 5).

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::proto::wire::{
    self, DataFrameWriter, FLAG_RETRANSMIT, FRAG_BEGIN, FRAG_END, Frame, FrameType, MAX_RANGES,
    SeqRange,
};
use crate::proto::{
    Destination, Event, JoinPolicy, Publisher, PublisherConfig, Receiver, ReceiverConfig, SourceId,
};

/// Session id of the publisher under test in [`check_publisher`] scripts, and of the honest
/// publisher in [`check_receiver`] scripts.
pub const SESSION: u64 = 0x5E55_1011_0000_0001;

/// Upper bound on frames one `poll_transmit` drain may produce before the checker calls it
/// a livelock.
const MAX_DRAIN: usize = 1 << 16;

/// Address number `n` of a script: 10.0.x.y, a distinct address and port per number.
pub fn address(n: u8) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 0, n / 64, n % 64 + 1),
        5000 + u16::from(n),
    ))
}

/// The publisher configuration presets a script's first byte picks from.
pub fn publisher_presets() -> [PublisherConfig; 3] {
    let base = PublisherConfig::default();
    [
        PublisherConfig {
            mtu: 200,
            ring_bytes: 4096,
            ring_frames: 16,
            ring_messages: 64,
            max_queued_repairs: 8,
            max_frames_examined_per_nak: 16,
            retransmit_rate: 100_000,
            retransmit_burst: 1000,
            max_destinations: 3,
            max_message_size: 1000,
            ..base.clone()
        },
        PublisherConfig {
            stream: 7,
            ring_bytes: 64 << 10,
            ring_frames: 64,
            max_queued_repairs: 16,
            max_frames_examined_per_nak: 32,
            retransmit_rate: 1 << 20,
            retransmit_burst: 16 << 10,
            max_destinations: 4,
            linger: Duration::from_micros(100),
            ..base.clone()
        },
        PublisherConfig {
            ring_bytes: 1 << 20,
            max_destinations: 4,
            initial_seq: u64::MAX - 5000,
            ..base
        },
    ]
}

/// The receiver configuration presets a script's first byte picks from.
pub fn receiver_presets() -> [ReceiverConfig; 3] {
    let base = ReceiverConfig::default();
    [
        ReceiverConfig {
            max_sources: 4,
            reorder_window: 16,
            reorder_bytes: 4096,
            max_message_size: 2048,
            ..base.clone()
        },
        ReceiverConfig {
            stream: Some(0),
            join: JoinPolicy::FromOldest,
            max_sources: 8,
            reorder_window: 64,
            reorder_bytes: 16 << 10,
            max_message_size: 8192,
            max_nak_tries: 3,
            inactivity_timeout: Duration::from_millis(50),
            status_to: vec![address(0)],
            ..base.clone()
        },
        ReceiverConfig {
            max_sources: 4,
            reorder_window: 1024,
            ..base
        },
    ]
}

/// Decode one datagram; if it decodes, check the view is consistent and survives a
/// re-encode. Panics on a violation.
pub fn check_decode(bytes: &[u8]) {
    let Ok(frame) = Frame::parse(bytes) else {
        return;
    };
    let header = frame.header();
    let mut buf = vec![0u8; wire::MAX_FRAME_LEN];
    match frame {
        Frame::Data(d) => {
            let mut w =
                DataFrameWriter::begin(&mut buf, header.stream, header.session, d.first_seq)
                    .expect("buffer holds a frame");
            let mut n = 0u64;
            for (i, f) in d.fragments().enumerate() {
                assert_eq!(f.seq, d.first_seq + i as u64, "fragment sequence");
                w.push(&mut buf, f.flags, f.payload)
                    .expect("a decoded fragment re-encodes");
                n += 1;
            }
            assert_eq!(n, u64::from(d.count), "fragment count");
            let len = w.finish(&mut buf);
            assert_eq!(len, bytes.len(), "re-encoded DATA length");
            assert!(d.end_seq() > d.first_seq);
        }
        Frame::Heartbeat {
            next_seq,
            oldest_seq,
            ..
        }
        | Frame::Close {
            next_seq,
            oldest_seq,
            ..
        } => {
            assert!(oldest_seq <= next_seq, "window");
            assert_eq!(bytes.len(), wire::HEADER_LEN + wire::CONTROL_BODY_LEN);
        }
        Frame::Nak(list) | Frame::Unavailable(list) => {
            let ranges: Vec<SeqRange> = list.iter().collect();
            assert!(!ranges.is_empty() && ranges.len() <= MAX_RANGES);
            assert_eq!(ranges.len(), list.len());
            for r in &ranges {
                assert!(r.start < r.end && r.len() <= wire::MAX_RANGE_SPAN, "{r}");
            }
            let len = wire::emit_ranges(
                &mut buf,
                header.frame_type,
                header.stream,
                header.session,
                &ranges,
            )
            .expect("decoded ranges re-encode");
            assert_eq!(len, bytes.len(), "re-encoded range list length");
        }
        Frame::Status { .. } => {
            assert_eq!(bytes.len(), wire::HEADER_LEN + wire::STATUS_BODY_LEN);
        }
    }
}

/// Reads a script's operands; past the end, zeros.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn done(&self) -> bool {
        self.at >= self.bytes.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.at.min(self.bytes.len());
        let end = start.saturating_add(n).min(self.bytes.len());
        self.at = end;
        &self.bytes[start..end]
    }

    /// A datagram operand: `src`, `len`, bytes (CRC refreshed if asked).
    fn datagram(&mut self, op: u8, scratch: &mut Vec<u8>) -> SocketAddr {
        let from = address(self.u8());
        let len = usize::from(self.u16());
        scratch.clear();
        scratch.extend_from_slice(self.take(len));
        if op & 0x80 != 0 && scratch.len() >= 4 {
            wire::finish_frame(scratch);
        }
        from
    }

    fn advance(&mut self, op: u8) -> Duration {
        let dt = u64::from(self.u16());
        if op & 0x80 != 0 {
            Duration::from_millis(dt)
        } else {
            Duration::from_micros(dt)
        }
    }
}

/// What [`check_publisher`] and [`check_receiver`] report about one script.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptReport {
    /// Datagrams handed to the state machine under test.
    pub datagrams: u64,
    /// Frames the state machine produced.
    pub transmits: u64,
    /// The most gaps one source held at any point (receiver only).
    pub max_gaps: usize,
}

/// A message's bytes: derived from its length, so nothing needs remembering.
fn message(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ len as u8)
        .collect()
}

/// Run a publisher script, checking after every step that the publisher stays within its
/// configured bounds:
///
/// - queued repairs <= `max_queued_repairs`, and one NAK queues at most
///   `max_frames_examined_per_nak` of them;
/// - dynamic destinations <= `max_destinations`;
/// - every frame it sends decodes, fits the `mtu`, and carries its stream and session;
/// - a repair carries, byte for byte, the fragments first sent with its sequence numbers,
///   under the header of the frame it starts with (but for its flags, count and CRC);
/// - UNAVAILABLE names only sequence numbers below the oldest retained;
/// - repair and UNAVAILABLE bytes since the start stay within `retransmit_burst +
///   retransmit_rate x elapsed` (the bandwidth cap, exactly).
pub fn check_publisher(script: &[u8]) -> ScriptReport {
    let mut r = Reader {
        bytes: script,
        at: 0,
    };
    let presets = publisher_presets();
    let cfg = presets[usize::from(r.u8()) % presets.len()].clone();
    let t0 = Instant::now();
    let mut now = t0;
    let mut p = Publisher::new(cfg, SESSION, now);
    let cfg = p.config().clone();
    let mut sent: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut retransmitted: u128 = 0;
    let mut report = ScriptReport::default();
    let mut scratch = Vec::new();
    let mut out = vec![0u8; cfg.mtu];
    while !r.done() {
        let op = r.u8();
        match op & 7 {
            0..=3 => {
                let from = r.datagram(op, &mut scratch);
                let before = p.queued_repairs();
                p.handle_datagram(now, from, &scratch);
                report.datagrams += 1;
                let queued = p.queued_repairs().saturating_sub(before);
                assert!(
                    queued <= cfg.max_frames_examined_per_nak,
                    "one NAK queued {queued} repairs"
                );
            }
            4 => now += r.advance(op),
            5 => {}
            6 => {
                let len = usize::from(r.u16()) % 4096;
                let _ = p.offer(now, &message(len));
            }
            _ => p.close(now),
        }
        assert!(p.queued_repairs() <= cfg.max_queued_repairs);
        assert!(p.dynamic_destinations() <= cfg.max_destinations);
        assert!(p.destinations().count() <= cfg.max_destinations);
        let _ = p.poll_timeout();
        if op & 7 != 5 {
            continue;
        }
        let mut n = 0;
        while let Some(t) = p.poll_transmit(now, &mut out) {
            n += 1;
            assert!(n < MAX_DRAIN, "poll_transmit never returns None");
            assert_eq!(t.destination, Destination::Group);
            assert!(t.len <= cfg.mtu, "frame of {} > mtu {}", t.len, cfg.mtu);
            let frame = &out[..t.len];
            let parsed = Frame::parse(frame).expect("the publisher sends valid frames");
            let h = parsed.header();
            assert_eq!((h.stream, h.session), (cfg.stream, SESSION));
            match parsed {
                Frame::Data(d) if d.is_retransmit() => {
                    retransmitted += t.len as u128;
                    let original = sent
                        .get(&d.first_seq)
                        .expect("a repair starts with a frame that was sent");
                    assert_eq!(original[4..6], frame[4..6]);
                    assert_eq!(original[8..32], frame[8..32], "repair header");
                    // Every fragment is the one first sent with its sequence number (a
                    // repair may pack the frames that followed the first).
                    for f in d.fragments() {
                        let (_, o) = sent
                            .range(..=f.seq)
                            .next_back()
                            .expect("a repaired fragment was sent");
                        let Ok(Frame::Data(o)) = Frame::parse(o) else {
                            unreachable!("stored as sent")
                        };
                        let same = o.fragments().find(|x| x.seq == f.seq);
                        assert_eq!(same, Some(f), "repaired fragment {}", f.seq);
                    }
                }
                Frame::Data(d) => {
                    sent.insert(d.first_seq, frame.to_vec());
                }
                Frame::Unavailable(list) => {
                    retransmitted += t.len as u128;
                    for range in list.iter() {
                        assert!(range.end <= p.oldest_retained(), "UNAVAILABLE {range}");
                    }
                }
                Frame::Heartbeat {
                    next_seq,
                    oldest_seq,
                    ..
                }
                | Frame::Close {
                    next_seq,
                    oldest_seq,
                    ..
                } => {
                    // Only what was sent is announced (flow control may hold frames).
                    assert_eq!(next_seq, p.sent_seq());
                    assert!(next_seq <= p.next_seq());
                    assert!(oldest_seq <= next_seq);
                }
                Frame::Nak(_) | Frame::Status { .. } => panic!("a publisher sent {parsed:?}"),
            }
            let elapsed = now.duration_since(t0).as_nanos();
            let cap = u128::from(cfg.retransmit_burst) * 1_000_000_000
                + u128::from(cfg.retransmit_rate) * elapsed;
            assert!(
                retransmitted * 1_000_000_000 <= cap,
                "{retransmitted} retransmitted bytes in {elapsed} ns"
            );
        }
        report.transmits += n as u64;
        // Forget frames that left the ring: a repair can no longer name them.
        let oldest = p.oldest_retained();
        if sent.len() > 4 * cfg.ring_frames {
            sent.retain(|&seq, _| seq >= oldest.saturating_sub(1 << 20));
        }
    }
    report
}

/// Per (source, session) delivery position, to check event order.
#[derive(Default)]
struct Positions {
    /// Next sequence a Message or Loss may start at; `None` once Closed.
    next: HashMap<(SourceId, u64), Option<u64>>,
}

impl Positions {
    fn on(&mut self, e: &Event<'_>, cfg: &ReceiverConfig) {
        match *e {
            Event::Joined {
                source,
                session,
                start_seq,
            } => {
                self.next.insert((source, session), Some(start_seq));
            }
            Event::Message {
                source,
                session,
                seq,
                payload,
            } => {
                assert!(payload.len() <= cfg.max_message_size, "oversized message");
                let next = self.position(source, session);
                assert!(seq >= next, "message {seq} before {next}");
                self.next.insert((source, session), Some(seq + 1));
            }
            Event::Loss {
                source,
                session,
                range,
                ..
            } => {
                assert!(range.start < range.end, "empty loss {range}");
                let next = self.position(source, session);
                assert!(range.start >= next, "loss {range} before {next}");
                self.next.insert((source, session), Some(range.end));
            }
            Event::Restarted {
                source,
                old_session,
                new_session,
            } => {
                assert_ne!(old_session, new_session);
                self.next.remove(&(source, old_session));
            }
            Event::Closed { source, session } => {
                self.position(source, session);
                self.next.insert((source, session), None);
            }
            Event::Inactive { source, session } => {
                self.next.remove(&(source, session));
            }
        }
    }

    fn position(&self, source: SourceId, session: u64) -> u64 {
        match self.next.get(&(source, session)) {
            Some(Some(n)) => *n,
            Some(None) => panic!("event for {source} session {session} after Closed"),
            None => panic!("event for {source} session {session} before Joined"),
        }
    }
}

/// Run a receiver script, checking after every step that the receiver stays within its
/// configured bounds:
///
/// - tracked sources <= `max_sources`;
/// - gaps per source <= `2 x reorder_window + 4`;
/// - out-of-order bytes held per source <= `reorder_bytes`, and payload buffers per source
///   <= `2 x reorder_bytes + 2 x max_message_size + 128 KiB`;
/// - events per (source, session) come in sequence order: Joined first, then Messages and
///   Losses that never go backwards or overlap, nothing after Closed;
/// - messages are no longer than `max_message_size`;
/// - every NAK decodes, goes to a tracked source, and lists ascending disjoint ranges.
pub fn check_receiver(script: &[u8]) -> ScriptReport {
    let mut r = Reader {
        bytes: script,
        at: 0,
    };
    let presets = receiver_presets();
    let cfg = presets[usize::from(r.u8()) % presets.len()].clone();
    let mut now = Instant::now();
    let mut rx = Receiver::new(cfg, 7);
    let cfg = rx.config().clone();
    let honest = address(0);
    let mut publisher = Publisher::new(
        PublisherConfig {
            mtu: 300,
            ring_bytes: 64 << 10,
            max_message_size: 8192,
            ..PublisherConfig::default()
        },
        SESSION,
        now,
    );
    let mut positions = Positions::default();
    let mut report = ScriptReport::default();
    let mut scratch = Vec::new();
    let mut out = vec![0u8; 2048];
    let gap_bound = 2 * cfg.reorder_window + 4;
    let buffer_bound = 2 * cfg.reorder_bytes + 2 * cfg.max_message_size + (128 << 10);
    while !r.done() {
        let op = r.u8();
        let mut on_event = |e: Event<'_>| positions.on(&e, &cfg);
        match op & 7 {
            0..=3 => {
                let from = r.datagram(op, &mut scratch);
                rx.handle_datagram(now, from, &scratch, &mut on_event);
                report.datagrams += 1;
            }
            4 => now += r.advance(op),
            5 => {
                rx.handle_timeout(now, &mut on_event);
                let mut n = 0;
                while let Some(t) = rx.poll_transmit(now, &mut out) {
                    n += 1;
                    assert!(n < MAX_DRAIN, "poll_transmit never returns None");
                    let Destination::Unicast(to) = t.destination else {
                        panic!("a receiver sent to the group");
                    };
                    match Frame::parse(&out[..t.len]).expect("the receiver sends valid frames") {
                        Frame::Nak(list) => {
                            let mut last_end = 0;
                            for (i, range) in list.iter().enumerate() {
                                assert!(i == 0 || range.start >= last_end, "NAK ranges {range}");
                                last_end = range.end;
                            }
                        }
                        Frame::Status { flow, .. } => {
                            // Flow reports go to the publishers followed; registrations
                            // only to the configured addresses.
                            assert!(
                                flow.is_some() || cfg.status_to.contains(&to),
                                "STATUS to {to}"
                            );
                        }
                        other => panic!("a receiver sent {other:?}"),
                    }
                    if to == honest {
                        publisher.handle_datagram(now, to, &out[..t.len]);
                    }
                }
                report.transmits += n as u64;
                let mut n = 0;
                while let Some(t) = publisher.poll_transmit(now, &mut out) {
                    n += 1;
                    assert!(n < MAX_DRAIN, "honest publisher livelock");
                    rx.handle_datagram(now, honest, &out[..t.len], &mut on_event);
                }
            }
            6 => {
                let len = usize::from(r.u16()) % 4096;
                let drop = r.u8();
                let _ = publisher.offer(now, &message(len));
                publisher.flush();
                let mut i = 0;
                while let Some(t) = publisher.poll_transmit(now, &mut out) {
                    if i >= 8 || drop & (1 << i) == 0 {
                        rx.handle_datagram(now, honest, &out[..t.len], &mut on_event);
                    }
                    i += 1;
                    assert!(i < MAX_DRAIN, "honest publisher livelock");
                }
            }
            _ => rx.leave(),
        }
        let _ = rx.poll_timeout();
        let f = rx.footprint();
        report.max_gaps = report.max_gaps.max(f.max_gaps);
        assert!(f.sources <= cfg.max_sources, "{} sources", f.sources);
        assert!(f.max_gaps <= gap_bound, "{} gaps in one source", f.max_gaps);
        assert!(f.max_held_bytes <= cfg.reorder_bytes, "{f:?}");
        assert!(f.max_buffer_bytes <= buffer_bound, "{f:?}");
    }
    report
}

/// Which driver a generated script is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// [`check_decode`]: one datagram.
    Decode,
    /// [`check_publisher`]: a publisher script.
    Publisher,
    /// [`check_receiver`]: a receiver script.
    Receiver,
}

/// A structure-aware generator of hostile inputs: valid frames of every type with random
/// or plausible fields (sessions, streams and sequence numbers from small pools so they
/// hit live state, or extremes), then mutated: bit flips, truncation, extension,
/// corrupted count and length fields, a changed type or version byte, or two frames
/// spliced; the CRC is usually re-computed so that the mutation reaches the checks behind
/// it. Seeded: a seed reproduces its inputs exactly.
#[derive(Debug)]
pub struct Generator {
    rng: SmallRng,
    /// Plausible sequence numbers: around where the state under test is.
    frontier: u64,
}

impl Generator {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            frontier: 0,
        }
    }

    fn seq(&mut self) -> u64 {
        match self.rng.random_range(0..10) {
            0 => self.rng.random(),
            1 => u64::MAX - self.rng.random_range(0..70_000),
            2 => self.rng.random_range(0..70_000),
            _ => {
                let d = self.rng.random_range(0..200u64);
                if self.rng.random_bool(0.8) {
                    self.frontier.saturating_add(d)
                } else {
                    self.frontier.saturating_sub(d)
                }
            }
        }
    }

    fn session(&mut self) -> u64 {
        match self.rng.random_range(0..8) {
            0..=3 => SESSION,
            4 => 1,
            5 => 2,
            _ => self.rng.random(),
        }
    }

    fn stream(&mut self) -> u32 {
        match self.rng.random_range(0..8) {
            0..=3 => 0,
            4 | 5 => 7,
            _ => self.rng.random(),
        }
    }

    fn range(&mut self) -> SeqRange {
        let start = self.seq().min(u64::MAX - 1);
        let span = match self.rng.random_range(0..4) {
            0 => 1,
            1 => self.rng.random_range(1..100),
            2 => wire::MAX_RANGE_SPAN,
            _ => self.rng.random_range(1..=wire::MAX_RANGE_SPAN),
        };
        SeqRange::new(start, start.saturating_add(span))
    }

    /// A valid frame of a random type with random or plausible fields.
    pub fn valid_frame(&mut self) -> Vec<u8> {
        let mut buf = vec![0u8; 70_000];
        let stream = self.stream();
        let session = self.session();
        let len = match self.rng.random_range(0..6) {
            0 | 1 => {
                let first = self.seq().min(u64::MAX - 64);
                let mut w = DataFrameWriter::begin(&mut buf, stream, session, first)
                    .expect("buffer holds a frame");
                w.set_session_offset(&mut buf, self.rng.random_range(0..40_000));
                let count = self.rng.random_range(1..=8);
                for _ in 0..count {
                    let len = match self.rng.random_range(0..10) {
                        0 => self.rng.random_range(0..20_000),
                        1 => 0,
                        _ => self.rng.random_range(0..300),
                    };
                    let flags = self.rng.random_range(0..4u8);
                    let payload = vec![self.rng.random::<u8>(); len];
                    if w.push(&mut buf, flags, &payload).is_err() {
                        break;
                    }
                }
                if w.is_empty() {
                    w.push(&mut buf, FRAG_BEGIN | FRAG_END, b"x")
                        .expect("room for one byte");
                }
                let len = w.finish(&mut buf);
                if self.rng.random_bool(0.2) {
                    wire::set_retransmit(&mut buf[..len]);
                }
                len
            }
            2 => {
                let (a, b) = (self.seq(), self.seq());
                let ty = if self.rng.random_bool(0.8) {
                    FrameType::Heartbeat
                } else {
                    FrameType::Close
                };
                let len = wire::emit_control(&mut buf, ty, stream, session, a.max(b), a.min(b))
                    .expect("buffer holds a frame");
                wire::set_session_offset(&mut buf[..len], self.rng.random_range(0..40_000));
                len
            }
            3 | 4 => {
                let n = match self.rng.random_range(0..3) {
                    0 => MAX_RANGES,
                    _ => self.rng.random_range(1..=4),
                };
                let ranges: Vec<SeqRange> = (0..n).map(|_| self.range()).collect();
                let ty = if self.rng.random_bool(0.7) {
                    FrameType::Nak
                } else {
                    FrameType::Unavailable
                };
                wire::emit_ranges(&mut buf, ty, stream, session, &ranges)
                    .expect("valid ranges encode")
            }
            _ => {
                // Flow reports anywhere in the sequence space, with any window.
                let flow = self.rng.random_bool(0.5).then(|| wire::FlowReport {
                    position: self.rng.random(),
                    window: self.rng.random(),
                });
                wire::emit_status(&mut buf, stream, session, self.rng.random_bool(0.3), flow)
                    .expect("buffer holds a frame")
            }
        };
        buf.truncate(len);
        buf
    }

    /// A valid frame, mutated (or not, a quarter of the time).
    pub fn hostile_frame(&mut self) -> Vec<u8> {
        let mut f = self.valid_frame();
        if self.rng.random_bool(0.25) {
            return f;
        }
        let rounds = self.rng.random_range(1..=3);
        for _ in 0..rounds {
            self.mutate(&mut f);
        }
        if f.len() >= 4 && self.rng.random_bool(0.85) {
            wire::finish_frame(&mut f);
        }
        f
    }

    fn mutate(&mut self, f: &mut Vec<u8>) {
        let len = f.len();
        if len == 0 {
            f.push(self.rng.random());
            return;
        }
        match self.rng.random_range(0..9) {
            0 => {
                for _ in 0..self.rng.random_range(1..=8) {
                    let bit = self.rng.random_range(0..len * 8);
                    f[bit / 8] ^= 1 << (bit % 8);
                }
            }
            1 => f.truncate(self.rng.random_range(0..len)),
            2 => {
                let n = self.rng.random_range(1..64);
                f.extend((0..n).map(|_| self.rng.random::<u8>()));
            }
            3 => {
                // The DATA fragment count or the range count (bytes 24..26 / 32..34).
                let at = if self.rng.random_bool(0.5) { 32 } else { 24 };
                let v: u16 = match self.rng.random_range(0..4) {
                    0 => 0,
                    1 => u16::MAX,
                    2 => 65,
                    _ => self.rng.random(),
                };
                if len >= at + 2 {
                    f[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            4 => {
                // The first fragment's length (bytes 36..38) or a later one's, roughly.
                let at = if self.rng.random_bool(0.5) {
                    36
                } else {
                    self.rng.random_range(36..len.max(37))
                };
                if len >= at + 2 {
                    let v: u16 = self.rng.random();
                    f[at..at + 2].copy_from_slice(&v.to_le_bytes());
                }
            }
            5 => {
                if len > 5 {
                    f[5] = self.rng.random_range(0..9);
                }
                if len > 4 && self.rng.random_bool(0.1) {
                    f[4] = self.rng.random();
                }
            }
            6 => {
                let other = self.valid_frame();
                let cut = self.rng.random_range(0..=len);
                let from = self.rng.random_range(0..=other.len());
                f.truncate(cut);
                f.extend_from_slice(&other[from..]);
            }
            7 => {
                // A sequence, next/oldest or range field set to an extreme.
                let at = self.rng.random_range(16..len.max(17));
                if len >= at + 8 {
                    let v = match self.rng.random_range(0..4) {
                        0 => 0,
                        1 => u64::MAX,
                        2 => u64::MAX - 1,
                        _ => self.rng.random(),
                    };
                    f[at..at + 8].copy_from_slice(&u64::to_le_bytes(v));
                }
            }
            _ => {
                // Flags: RETRANSMIT and unknown bits.
                if len > 7 {
                    f[6] ^= (FLAG_RETRANSMIT as u8) | self.rng.random::<u8>();
                }
            }
        }
    }

    /// One generated input for `target`: a datagram for [`Target::Decode`], a script of
    /// up to `ops` operations otherwise.
    pub fn input(&mut self, target: Target, ops: usize) -> Vec<u8> {
        if target == Target::Decode {
            return match self.rng.random_range(0..20) {
                0 => (0..self.rng.random_range(0..100))
                    .map(|_| self.rng.random())
                    .collect(),
                _ => self.hostile_frame(),
            };
        }
        self.frontier = match self.rng.random_range(0..3) {
            0 => 0,
            1 => u64::MAX - 5000,
            _ => self.rng.random_range(0..1000),
        };
        let mut s = vec![self.rng.random()];
        for _ in 0..self.rng.random_range(1..=ops) {
            match self.rng.random_range(0..20) {
                0..=9 => {
                    let f = self.hostile_frame();
                    s.push(self.rng.random_range(0..4));
                    // Mostly a handful of sources (0 is the honest publisher), else any.
                    s.push(if self.rng.random_bool(0.7) {
                        self.rng.random_range(0..6)
                    } else {
                        self.rng.random()
                    });
                    let len = f.len().min(usize::from(u16::MAX));
                    s.extend_from_slice(&(len as u16).to_le_bytes());
                    s.extend_from_slice(&f[..len]);
                    self.frontier = self.frontier.saturating_add(self.rng.random_range(0..3));
                }
                10..=12 => {
                    s.push(if self.rng.random_bool(0.05) { 0x84 } else { 4 });
                    s.extend_from_slice(&self.rng.random_range(0..2000u16).to_le_bytes());
                }
                13..=15 => s.push(5),
                16..=18 => {
                    s.push(6);
                    let len: u16 = if self.rng.random_bool(0.8) {
                        self.rng.random_range(0..200)
                    } else {
                        self.rng.random_range(0..4096)
                    };
                    s.extend_from_slice(&len.to_le_bytes());
                    s.push(if self.rng.random_bool(0.7) {
                        0
                    } else {
                        self.rng.random()
                    });
                    self.frontier = self.frontier.saturating_add(1);
                }
                _ => {
                    if self.rng.random_bool(0.1) {
                        s.push(7);
                    } else {
                        s.push(5);
                    }
                }
            }
        }
        s
    }
}

/// Totals of a [`fuzz`] run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuzzReport {
    /// Inputs generated and checked (datagrams for the decoder, scripts otherwise).
    pub inputs: u64,
    /// Datagrams handed to the decoder or a state machine, in total.
    pub datagrams: u64,
    /// Frames the state machines produced (each one decoded and checked).
    pub transmits: u64,
    /// The most gaps one receiver source held (receiver target).
    pub max_gaps: usize,
}

/// Generate and check `inputs` inputs for `target` from `seed`. A failing input panics
/// with the input's index; `Generator::new(seed)` regenerates it (call [`Generator::input`]
/// that many times) so it can be saved as a regression test.
pub fn fuzz(target: Target, seed: u64, inputs: u64, ops: usize) -> FuzzReport {
    let mut g = Generator::new(seed);
    let mut total = FuzzReport::default();
    for i in 0..inputs {
        let input = g.input(target, ops);
        total.inputs += 1;
        let run = std::panic::catch_unwind(|| check(target, &input));
        let r = match run {
            Ok(r) => r,
            Err(panic) => {
                let hook = std::panic::take_hook();
                std::panic::set_hook(Box::new(|_| {}));
                let small = minimize(target, &input);
                std::panic::set_hook(hook);
                eprintln!(
                    "{target:?} input {i} of seed {seed} failed; minimized, as a regression \
                     test:\n{}",
                    to_rust_literal(&small)
                );
                std::panic::resume_unwind(panic);
            }
        };
        total.datagrams += r.datagrams;
        total.transmits += r.transmits;
        total.max_gaps = total.max_gaps.max(r.max_gaps);
    }
    total
}

/// Check one input for `target` (see [`check_decode`], [`check_publisher`],
/// [`check_receiver`]); panics on a violation.
pub fn check(target: Target, input: &[u8]) -> ScriptReport {
    match target {
        Target::Decode => {
            check_decode(input);
            ScriptReport {
                datagrams: 1,
                ..ScriptReport::default()
            }
        }
        Target::Publisher => check_publisher(input),
        Target::Receiver => check_receiver(input),
    }
}

/// The panic message of checking `input` for `target`, if it fails.
pub fn failure(target: Target, input: &[u8]) -> Option<String> {
    let panic = std::panic::catch_unwind(|| check(target, input)).err()?;
    Some(
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
    )
}

/// Shrink a failing `input` to a shorter one that fails with the same panic message, by
/// removing ever smaller chunks of bytes (any byte string is a valid script). Silence the
/// panic hook first (`std::panic::set_hook(Box::new(|_| {}))`) to keep the output short.
pub fn minimize(target: Target, input: &[u8]) -> Vec<u8> {
    let Some(want) = failure(target, input) else {
        return input.to_vec();
    };
    let mut best = input.to_vec();
    let mut chunk = best.len().div_ceil(2).max(1);
    loop {
        let mut at = 0;
        while at < best.len() {
            let mut shorter = best[..at].to_vec();
            shorter.extend_from_slice(&best[(at + chunk).min(best.len())..]);
            if failure(target, &shorter).as_ref() == Some(&want) {
                best = shorter;
            } else {
                at += chunk;
            }
        }
        if chunk == 1 {
            return best;
        }
        chunk = chunk.div_ceil(2);
    }
}

/// Write `input` as a Rust byte-array literal (for a regression test).
pub fn to_rust_literal(input: &[u8]) -> String {
    let mut s = String::from("&[");
    for (i, b) in input.iter().enumerate() {
        if i % 16 == 0 {
            s.push_str("\n    ");
        }
        s.push_str(&format!("0x{b:02x}, "));
    }
    s.push_str("\n]");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_byte_string_is_a_script() {
        for bytes in [
            &[][..],
            &[0],
            &[1, 0, 9, 255, 255],
            &[2, 0x85, 6, 6, 7, 5, 4],
        ] {
            check_publisher(bytes);
            check_receiver(bytes);
            check_decode(bytes);
        }
    }

    #[test]
    fn generated_scripts_reach_the_state_machines() {
        let r = fuzz(Target::Receiver, 1, 200, 80);
        assert!(r.datagrams > 1000 && r.transmits > 0, "{r:?}");
        let p = fuzz(Target::Publisher, 1, 200, 80);
        assert!(p.datagrams > 1000 && p.transmits > 0, "{p:?}");
    }

    #[test]
    #[should_panic(expected = "message 5 before 9")]
    fn the_order_checker_catches_a_message_behind_the_cursor() {
        let cfg = ReceiverConfig::default();
        let source = SourceId {
            addr: address(1),
            stream: 0,
        };
        let mut p = Positions::default();
        p.on(
            &Event::Joined {
                source,
                session: 1,
                start_seq: 9,
            },
            &cfg,
        );
        p.on(
            &Event::Message {
                source,
                session: 1,
                seq: 5,
                payload: b"",
            },
            &cfg,
        );
    }
}
