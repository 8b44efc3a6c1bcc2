//! The receiver state machine: per-publisher streams, gap detection, NAKs with randomized
//! backoff, loss reporting, reordering and reassembly.
//!
//! # Call order (the sans-IO contract)
//! 1. [`Receiver::handle_datagram`] for every datagram received on the group (and on the
//!    unicast port): messages and other [`Event`]s are handed to the callback at once, in
//!    sequence order per publisher, with payloads borrowed from the datagram or the reorder
//!    window (no copy on the in-order path).
//! 2. [`Receiver::poll_transmit`] until `None`, sending each NAK (and, in unicast mode,
//!    each STATUS) to its [`Destination::Unicast`] address (for a NAK, the publisher's
//!    source address).
//! 3. At [`Receiver::poll_timeout`], call [`Receiver::handle_timeout`], then 2 again.
//!
//! # Unicast mode (networks without multicast)
//! With [`ReceiverConfig::status_to`] set, `poll_transmit` also sends a STATUS frame to
//! each of those publishers every `status_interval`, the first at the first call: that
//! makes the publisher send the stream to this receiver by unicast. Call `poll_transmit`
//! once right after construction so the first STATUS goes out (before any entry point has
//! been given a `now`, `poll_timeout` cannot report it). To go away, call
//! [`Receiver::leave`], then step 2: each publisher gets one STATUS with the LEAVING flag,
//! and periodic STATUS stop. Delivery and recovery are the same as with multicast.

mod config;
mod gaps;
mod repair;
mod source;
mod window;

pub use config::{JoinPolicy, ReceiverConfig};
pub use gaps::{Gap, GapList};
pub use repair::RepairLatency;
pub use window::ReorderWindow;

use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::proto::auth::{AUTH_TRAILER_LEN, Keyring, OpenError};
use crate::proto::transmit::{Destination, Transmit};
use crate::proto::wire::{self, DecodeError, Frame, FrameType, MAX_RANGES, SeqRange};
use source::{Announce, Ctx, FlowNote, Phase, Source};

/// Bytes of the largest NAK a receiver sends, authentication trailer included:
/// `poll_transmit` needs a buffer this large.
pub const NAK_MAX_LEN: usize =
    wire::HEADER_LEN + wire::RANGES_PREFIX_LEN + MAX_RANGES * wire::RANGE_LEN + AUTH_TRAILER_LEN;

/// Identifies a publisher as the receiver sees it: its source address and stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceId {
    /// The publisher's data socket address (where NAKs go).
    pub addr: SocketAddr,
    /// The stream id.
    pub stream: u32,
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.stream)
    }
}

/// Why a range of sequence numbers was reported lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossReason {
    /// The publisher no longer retains the data (UNAVAILABLE, or below the oldest retained
    /// sequence its heartbeats announce).
    Unavailable,
    /// NAK tries or the loss deadline ran out.
    Timeout,
    /// The publisher went silent past the inactivity timeout.
    PublisherInactive,
    /// The publisher restarted (new session from the same source) before repairing.
    PublisherRestarted,
    /// A message longer than this receiver's `max_message_size` (the whole message).
    MessageTooLarge,
}

/// What a receiver reports, in order per publisher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A new publisher (or a restarted one's new session): delivery starts at `start_seq`.
    Joined {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
        /// First sequence number that will be delivered or reported lost.
        start_seq: u64,
    },
    /// A complete message.
    Message {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
        /// Sequence number of the message's first fragment.
        seq: u64,
        /// The message bytes, valid during the callback.
        payload: &'a [u8],
    },
    /// Sequence numbers that will never be delivered. Any message with a fragment in the
    /// range is not delivered.
    Loss {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
        /// The lost sequence numbers.
        range: SeqRange,
        /// Why.
        reason: LossReason,
    },
    /// The same source started a new session; the old one's losses were reported first.
    Restarted {
        /// The publisher.
        source: SourceId,
        /// The session that ended.
        old_session: u64,
        /// The session that replaces it.
        new_session: u64,
    },
    /// The publisher closed cleanly and everything up to its final sequence was delivered
    /// or reported lost.
    Closed {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
    },
    /// The publisher went silent past the inactivity timeout; its open gaps were reported
    /// lost and it is no longer tracked.
    Inactive {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
    },
}

/// An [`Event`] with its payload copied out: for logs, channels and iterators (one
/// allocation per message; the callback API is the allocation-free path).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnedEvent {
    /// See [`Event::Joined`].
    Joined {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
        /// First sequence delivered or reported.
        start_seq: u64,
    },
    /// See [`Event::Message`].
    Message {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
        /// Sequence number.
        seq: u64,
        /// The message.
        payload: Vec<u8>,
    },
    /// See [`Event::Loss`].
    Loss {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
        /// The lost sequence numbers.
        range: SeqRange,
        /// Why.
        reason: LossReason,
    },
    /// See [`Event::Restarted`].
    Restarted {
        /// The publisher.
        source: SourceId,
        /// The session that ended.
        old_session: u64,
        /// The new session.
        new_session: u64,
    },
    /// See [`Event::Closed`].
    Closed {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
    },
    /// See [`Event::Inactive`].
    Inactive {
        /// The publisher.
        source: SourceId,
        /// Its session.
        session: u64,
    },
}

impl From<Event<'_>> for OwnedEvent {
    fn from(e: Event<'_>) -> Self {
        match e {
            Event::Joined {
                source,
                session,
                start_seq,
            } => OwnedEvent::Joined {
                source,
                session,
                start_seq,
            },
            Event::Message {
                source,
                session,
                seq,
                payload,
            } => OwnedEvent::Message {
                source,
                session,
                seq,
                payload: payload.to_vec(),
            },
            Event::Loss {
                source,
                session,
                range,
                reason,
            } => OwnedEvent::Loss {
                source,
                session,
                range,
                reason,
            },
            Event::Restarted {
                source,
                old_session,
                new_session,
            } => OwnedEvent::Restarted {
                source,
                old_session,
                new_session,
            },
            Event::Closed { source, session } => OwnedEvent::Closed { source, session },
            Event::Inactive { source, session } => OwnedEvent::Inactive { source, session },
        }
    }
}

/// Receiver counters. Monotonic; read them with [`Receiver::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverStats {
    /// Datagrams handed to `handle_datagram`.
    pub datagrams: u64,
    /// Datagrams whose CRC did not match.
    pub crc_errors: u64,
    /// Datagrams malformed in any other way.
    pub decode_errors: u64,
    /// Well-formed frames dropped by authentication: a bad MAC (forged or modified), an
    /// unknown key id, or no trailer while authentication is required. Zero with
    /// authentication off, unless someone sends sealed frames.
    pub auth_failures: u64,
    /// Frames for a stream this receiver does not accept.
    pub foreign_stream: u64,
    /// Valid frames a receiver does not act on (NAK and STATUS frames, whatever their
    /// stream; UNAVAILABLE for unknown sources).
    pub ignored_frames: u64,
    /// Frames from new sources refused because `max_sources` were tracked.
    pub sources_rejected: u64,
    /// With authentication required: frames from a new source address carrying a stream
    /// and session already followed from another address, dropped. Source addresses are
    /// not authenticated, so these are authentic frames replayed by another host.
    pub duplicate_sessions: u64,
    /// Frames of a session that its source already replaced (or, with authentication
    /// required, of a session older than the one followed).
    pub stale_session: u64,
    /// Fragments delivered in order (to messages or discarded with a loss).
    pub fragments: u64,
    /// Messages delivered.
    pub messages: u64,
    /// Bytes of messages delivered.
    pub message_bytes: u64,
    /// Fragments received more than once (or after their sequence was passed).
    pub duplicates: u64,
    /// Fragments that could not be held (beyond the reorder window or its byte budget).
    pub out_of_window: u64,
    /// Fragments at or past the end a CLOSE announced (the publisher never sends them:
    /// a forged or inconsistent CLOSE, or forged data), dropped: a closed session
    /// delivers nothing after `Event::Closed`.
    pub beyond_close: u64,
    /// Gaps detected.
    pub gaps: u64,
    /// NAK frames sent.
    pub naks_sent: u64,
    /// Of those, repeats: every range asked for before and still missing (its repair was
    /// lost), flagged [`wire::FLAG_REPEAT`].
    pub naks_repeated: u64,
    /// STATUS frames sent (unicast mode), LEAVING ones included.
    pub status_sent: u64,
    /// Flow reports sent to publishers (STATUS frames with a flow report).
    pub flow_reports: u64,
    /// Ranges in those NAKs.
    pub nak_ranges: u64,
    /// Missing fragments that arrived after being NAKed.
    pub recovered: u64,
    /// Missing fragments that arrived before their NAK was sent (reordering).
    pub reordered: u64,
    /// Sequence numbers reported lost (saturating: forged windows can name nearly 2^64).
    pub lost_fragments: u64,
    /// `Loss` events.
    pub loss_events: u64,
    /// Fragments of messages that could not be completed because of a loss.
    pub discarded_fragments: u64,
    /// Messages longer than `max_message_size`, discarded.
    pub oversized_messages: u64,
    /// Fragments dropped before joining their publisher.
    pub dropped_before_join: u64,
    /// Publishers joined.
    pub joins: u64,
    /// Publisher restarts seen.
    pub restarts: u64,
    /// Publishers closed.
    pub closes: u64,
    /// Publishers timed out.
    pub inactive: u64,
}

/// The size of a receiver's state, to check that hostile input cannot grow it past the
/// configured limits: read it with [`Receiver::footprint`].
///
/// Bounds, per [`ReceiverConfig`]: `sources <= max_sources`; gaps per source about the
/// reorder window at most (a gap is split only by a fragment held in the window, at the NAK
/// limit or at a loss bound); `held_bytes <= reorder_bytes`; the reorder window's buffers
/// at most `2 x reorder_bytes` plus one fragment, and the reassembly buffer at most about
/// `2 x max_message_size`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReceiverFootprint {
    /// Publishers tracked, tombstones included.
    pub sources: usize,
    /// Gaps tracked, summed over sources.
    pub gaps: usize,
    /// The most gaps tracked for one source.
    pub max_gaps: usize,
    /// The most out-of-order payload bytes held for one source.
    pub max_held_bytes: usize,
    /// Heap bytes of payload buffers (reorder window slots and reassembly), summed over
    /// sources.
    pub buffer_bytes: usize,
    /// The most payload-buffer bytes allocated for one source.
    pub max_buffer_bytes: usize,
}

/// STATUS schedule for one `status_to` address.
#[derive(Clone, Copy, Debug)]
struct StatusTarget {
    addr: SocketAddr,
    /// When the next periodic STATUS is due; `None` until the first one is sent (due at
    /// the first `poll_transmit`).
    due: Option<Instant>,
    /// A LEAVING STATUS is still to be sent.
    leave_pending: bool,
}

/// The sans-IO receiver: tracks every publisher heard on its group.
#[derive(Debug)]
pub struct Receiver {
    cfg: ReceiverConfig,
    /// Seals NAK and STATUS frames and checks every frame received (off by default).
    keyring: Keyring,
    rng: SmallRng,
    sources: Vec<Source>,
    next_nak: usize,
    last_source: usize,
    /// One entry per `status_to` address, sized at construction.
    status: Vec<StatusTarget>,
    /// `leave` was called: periodic STATUS stopped.
    leaving: bool,
    /// Some source has a flow report due.
    flow_pending: bool,
    /// The latest `now` any entry point was given (for `poll_timeout`).
    last_now: Option<Instant>,
    stats: ReceiverStats,
    repairs: RepairLatency,
    /// Tests compare the in-order fast path with the general one.
    #[cfg(test)]
    general_path_only: bool,
}

impl Receiver {
    /// A receiver with `cfg`; `seed` drives its NAK backoff randomization (pass a random
    /// seed in production, a fixed one in tests).
    pub fn new(cfg: ReceiverConfig, seed: u64) -> Self {
        let cfg = cfg.sanitized();
        let status = cfg
            .status_to
            .iter()
            .map(|&addr| StatusTarget {
                addr,
                due: None,
                leave_pending: false,
            })
            .collect();
        Self {
            rng: SmallRng::seed_from_u64(seed),
            sources: Vec::with_capacity(cfg.max_sources),
            next_nak: 0,
            last_source: 0,
            status,
            leaving: false,
            flow_pending: false,
            last_now: None,
            stats: ReceiverStats::default(),
            repairs: RepairLatency::default(),
            keyring: Keyring::new(&cfg.auth),
            cfg,
            #[cfg(test)]
            general_path_only: false,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &ReceiverStats {
        &self.stats
    }

    /// Repair latency so far: for every fragment recovered after a NAK, the time from
    /// detecting its gap to delivering it in order.
    pub fn repair_latency(&self) -> &RepairLatency {
        &self.repairs
    }

    /// The configuration in effect (after sanitizing).
    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// Number of publishers tracked (including closed ones kept as tombstones).
    pub fn source_count(&self) -> usize {
        self.sources.len()
    }

    /// The size of the state kept for the publishers tracked (see [`ReceiverFootprint`]
    /// for the bounds). Linear in the number of sources.
    pub fn footprint(&self) -> ReceiverFootprint {
        let mut f = ReceiverFootprint {
            sources: self.sources.len(),
            ..ReceiverFootprint::default()
        };
        for s in &self.sources {
            f.gaps += s.gap_count();
            f.max_gaps = f.max_gaps.max(s.gap_count());
            f.max_held_bytes = f.max_held_bytes.max(s.held_bytes());
            f.buffer_bytes += s.buffer_bytes();
            f.max_buffer_bytes = f.max_buffer_bytes.max(s.buffer_bytes());
        }
        f
    }

    /// Stop asking for the stream: the next `poll_transmit` calls send one STATUS with the
    /// LEAVING flag to each `status_to` address (unicast mode) and a last flow report with
    /// it to each publisher followed (so that flow control stops counting this receiver at
    /// once rather than after `flow_timeout`); no periodic STATUS or flow report is sent
    /// afterwards. Frames still arriving are processed as usual. Calling it again changes
    /// nothing.
    pub fn leave(&mut self) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        for t in &mut self.status {
            t.leave_pending = true;
        }
        if self.cfg.flow_window > 0 {
            for s in &mut self.sources {
                self.flow_pending |= s.force_flow();
            }
        }
    }

    /// Whether [`Receiver::leave`] was called.
    pub fn is_leaving(&self) -> bool {
        self.leaving
    }

    /// The session a STATUS to `addr` carries: that of the source tracked at `addr` for
    /// the configured stream, or 0.
    fn status_session(&self, addr: SocketAddr, stream: u32) -> u64 {
        self.sources
            .iter()
            .find(|s| s.id.addr == addr && s.id.stream == stream)
            .map_or(0, |s| s.session)
    }

    /// The next STATUS due at `now`, if any.
    fn transmit_status(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let stream = self.cfg.stream.unwrap_or(0);
        let i = self
            .status
            .iter()
            .position(|t| t.leave_pending || (!self.leaving && t.due.is_none_or(|d| d <= now)))?;
        let addr = self.status[i].addr;
        let leaving = self.status[i].leave_pending;
        let session = self.status_session(addr, stream);
        let len = wire::emit_status(buf, stream, session, leaving, None).ok()?;
        let len = self.keyring.seal(buf, len).ok()?;
        let t = &mut self.status[i];
        t.leave_pending = false;
        t.due = Some(now + self.cfg.status_interval);
        self.stats.status_sent += 1;
        Some(Transmit {
            destination: Destination::Unicast(addr),
            len,
        })
    }

    /// Whether a flow report is due (`poll_transmit` produces it). A cheap check for I/O
    /// layers that send reports as soon as they are due, in the middle of a batch of
    /// received datagrams rather than after it: a publisher held back waits for them.
    pub fn flow_report_due(&self) -> bool {
        self.flow_pending
    }

    /// The next flow report due, if any, and nothing else: for I/O layers that send
    /// reports in the middle of a batch of received datagrams (see
    /// [`flow_report_due`](Self::flow_report_due)), where a NAK would be early (a later
    /// datagram of the batch may fill its gap). [`poll_transmit`](Self::poll_transmit)
    /// produces the reports too.
    pub fn poll_flow_report(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.last_now = Some(now);
        if !self.flow_pending {
            return None;
        }
        self.transmit_flow(now, buf)
    }

    /// The next flow report due, if any (round robin is not needed: each goes out at once).
    fn transmit_flow(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let window = self.cfg.flow_window;
        let Some((src, report)) = self
            .sources
            .iter_mut()
            .find_map(|s| s.take_flow_report(window, now).map(|r| (s, r)))
        else {
            self.flow_pending = false;
            return None;
        };
        let len =
            wire::emit_status(buf, src.id.stream, src.session, self.leaving, Some(report)).ok()?;
        let len = self.keyring.seal(buf, len).ok()?;
        self.stats.flow_reports += 1;
        Some(Transmit {
            destination: Destination::Unicast(src.id.addr),
            len,
        })
    }

    /// The earliest STATUS deadline, if any.
    fn status_deadline(&self) -> Option<Instant> {
        self.status
            .iter()
            .filter_map(|t| {
                if t.leave_pending || (!self.leaving && t.due.is_none()) {
                    self.last_now
                } else if self.leaving {
                    None
                } else {
                    t.due
                }
            })
            .min()
    }

    /// Process one datagram from `from`, reporting events to `on_event`.
    pub fn handle_datagram<F: FnMut(Event<'_>)>(
        &mut self,
        now: Instant,
        from: SocketAddr,
        bytes: &[u8],
        on_event: &mut F,
    ) {
        self.stats.datagrams += 1;
        self.last_now = Some(now);
        let frame = match self.keyring.open(bytes) {
            Ok(f) => f,
            Err(OpenError::Decode(DecodeError::BadCrc)) => {
                self.stats.crc_errors += 1;
                return;
            }
            Err(OpenError::Decode(_)) => {
                self.stats.decode_errors += 1;
                return;
            }
            Err(OpenError::Auth(_)) => {
                self.stats.auth_failures += 1;
                return;
            }
        };
        // The common case first: the next message in order from the source of the previous
        // datagram, nothing missing (see `Source::deliver_next`).
        #[cfg(test)]
        let fast = !self.general_path_only;
        #[cfg(not(test))]
        let fast = true;
        if fast
            && let Frame::Data(d) = &frame
            && self.cfg.stream.is_none_or(|s| s == d.header.stream)
            && let Some(src) = self.sources.get_mut(self.last_source)
            && src.id.addr == from
            && src.id.stream == d.header.stream
            && src.session == d.header.session
            && src.deliver_next(d, now, &self.cfg, &mut self.stats, on_event)
        {
            self.note_flow(self.last_source, FlowNote::Data(bytes.len()), false, now);
            return;
        }
        let header = frame.header();
        if matches!(header.frame_type, FrameType::Nak | FrameType::Status) {
            // Receiver-to-publisher frames (another receiver's, or our own looped back).
            self.stats.ignored_frames += 1;
            return;
        }
        if self.cfg.stream.is_some_and(|s| s != header.stream) {
            self.stats.foreign_stream += 1;
            return;
        }
        let id = SourceId {
            addr: from,
            stream: header.stream,
        };
        let mut ctx = Ctx {
            cfg: &self.cfg,
            rng: &mut self.rng,
            stats: &mut self.stats,
            repairs: &mut self.repairs,
            now,
        };
        // Most datagrams come from the source of the previous one: check it first.
        let hit = (self
            .sources
            .get(self.last_source)
            .is_some_and(|s| s.id == id))
        .then_some(self.last_source);
        let i = match hit.or_else(|| self.sources.iter().position(|s| s.id == id)) {
            Some(i) => i,
            None if header.frame_type == FrameType::Unavailable => {
                ctx.stats.ignored_frames += 1;
                return;
            }
            None => {
                if self.keyring.is_required()
                    && self
                        .sources
                        .iter()
                        .any(|s| s.id.stream == header.stream && s.session == header.session)
                {
                    // One publisher sends from one address: an authentic frame of a
                    // session followed elsewhere was replayed by another host.
                    ctx.stats.duplicate_sessions += 1;
                    return;
                }
                if self.sources.len() == self.cfg.max_sources {
                    // Only a closed tombstone may make room; live publishers are never
                    // pushed out by newcomers.
                    match self.sources.iter().position(|s| s.phase == Phase::Closed) {
                        Some(t) => {
                            self.sources.swap_remove(t);
                        }
                        None => {
                            ctx.stats.sources_rejected += 1;
                            return;
                        }
                    }
                }
                self.sources
                    .push(Source::new(id, header.session, now, ctx.cfg));
                self.sources.len() - 1
            }
        };
        self.last_source = i;
        let src = &mut self.sources[i];
        if header.session != src.session {
            // With authentication required, every frame here is authentic, but it may be
            // a recording: a session older than the one followed is a replay (or the
            // stale tail of a restart), never a restart.
            let older = self.keyring.is_required() && header.session < src.session;
            if older
                || src.is_retired(header.session)
                || header.frame_type == FrameType::Unavailable
            {
                ctx.stats.stale_session += 1;
                return;
            }
            src.flush(LossReason::PublisherRestarted, &mut ctx, on_event);
            let old_session = src.session;
            src.restart(header.session, now);
            ctx.stats.restarts += 1;
            on_event(Event::Restarted {
                source: id,
                old_session,
                new_session: header.session,
            });
        }
        src.last_activity = now;
        let was_live = src.phase == Phase::Live;
        let (data, heartbeat) = match frame {
            Frame::Data(_) => (true, false),
            Frame::Heartbeat { .. } => (false, true),
            _ => (false, false),
        };
        let held = heartbeat && header.flags & wire::FLAG_FLOW_HELD != 0;
        let original = match &frame {
            Frame::Data(d) => !d.is_retransmit(),
            Frame::Heartbeat { .. } | Frame::Close { .. } => true,
            _ => false,
        };
        if original {
            // Repairs were framed earlier: only new frames tell the group as it is now.
            src.group = wire::group_size(header.flags);
        }
        match frame {
            Frame::Data(d) => src.on_data(&d, now, &mut ctx, on_event),
            Frame::Heartbeat {
                header,
                next_seq,
                oldest_seq,
            } => {
                let a = Announce {
                    next_seq,
                    oldest_seq,
                    session_offset: header.session_offset,
                    close: false,
                };
                src.on_control(a, now, &mut ctx, on_event)
            }
            Frame::Close {
                header,
                next_seq,
                oldest_seq,
            } => {
                let a = Announce {
                    next_seq,
                    oldest_seq,
                    session_offset: header.session_offset,
                    close: true,
                };
                src.on_control(a, now, &mut ctx, on_event)
            }
            Frame::Unavailable(list) => {
                for range in list.iter() {
                    src.on_unavailable(range, now, &mut ctx, on_event);
                }
            }
            Frame::Nak(_) | Frame::Status { .. } => {
                unreachable!("receiver-to-publisher frames are ignored above")
            }
        }
        let note = match (data, heartbeat) {
            (true, _) => FlowNote::Data(bytes.len()),
            (_, true) => FlowNote::Heartbeat,
            _ => FlowNote::Other,
        };
        self.note_flow(i, note, held || !was_live, now);
    }

    /// Flow reports: at join, as data is taken in (a quarter window at a time), at once to
    /// a held-back publisher's heartbeat (a lost report is replaced within one heartbeat
    /// interval), and to any heartbeat once the last report is `flow_keepalive` old (so
    /// the publisher keeps counting this receiver). `force`: a report is due now.
    fn note_flow(&mut self, source: usize, note: FlowNote, force: bool, now: Instant) {
        if self.cfg.flow_window > 0 && !self.leaving {
            self.flow_pending |= self.sources[source].note_flow(note, force, now, &self.cfg);
        }
    }

    /// Advance timers to `now`: give up on gaps past their tries or deadline, and drop
    /// publishers silent past the inactivity timeout (reporting their gaps lost).
    pub fn handle_timeout<F: FnMut(Event<'_>)>(&mut self, now: Instant, on_event: &mut F) {
        self.last_now = Some(now);
        let mut ctx = Ctx {
            cfg: &self.cfg,
            rng: &mut self.rng,
            stats: &mut self.stats,
            repairs: &mut self.repairs,
            now,
        };
        let mut i = 0;
        while i < self.sources.len() {
            let src = &mut self.sources[i];
            if now.saturating_duration_since(src.last_activity) >= ctx.cfg.inactivity_timeout {
                if src.phase == Phase::Live {
                    src.flush(LossReason::PublisherInactive, &mut ctx, on_event);
                    ctx.stats.inactive += 1;
                    on_event(Event::Inactive {
                        source: src.id,
                        session: src.session,
                    });
                }
                self.sources.swap_remove(i);
                continue;
            }
            src.on_timeout(now, &mut ctx, on_event);
            i += 1;
        }
    }

    /// Produce the next NAK or STATUS into `buf` (at least [`NAK_MAX_LEN`] bytes), or `None` if none is due
    /// at `now`. Due STATUS frames come first (they are rare and keep this receiver's
    /// unicast feed alive), then NAKs, round robin over publishers.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.last_now = Some(now);
        if let Some(t) = self.transmit_status(now, buf) {
            return Some(t);
        }
        if self.flow_pending
            && let Some(t) = self.transmit_flow(now, buf)
        {
            return Some(t);
        }
        if buf.len() < NAK_MAX_LEN {
            // Too small for a full NAK: leave every timer untouched rather than lose one.
            return None;
        }
        let n = self.sources.len();
        for k in 0..n {
            let i = (self.next_nak + k) % n;
            let src = &mut self.sources[i];
            if !src.nak_due(now) {
                continue;
            }
            let mut ranges = [SeqRange::new(0, 1); MAX_RANGES];
            let (count, repeat) = src.collect_nak(now, &self.cfg, &mut ranges);
            if count == 0 {
                continue;
            }
            let len = wire::emit_ranges(
                buf,
                FrameType::Nak,
                src.id.stream,
                src.session,
                &ranges[..count],
            )
            .expect("ranges are valid and the buffer holds a full NAK");
            if repeat {
                wire::set_flags(&mut buf[..len], wire::FLAG_REPEAT);
                self.stats.naks_repeated += 1;
            }
            let len = self
                .keyring
                .seal(buf, len)
                .expect("NAK_MAX_LEN leaves room for the trailer");
            self.next_nak = (i + 1) % n;
            self.stats.naks_sent += 1;
            self.stats.nak_ranges += count as u64;
            return Some(Transmit {
                destination: Destination::Unicast(src.id.addr),
                len,
            });
        }
        None
    }

    /// The earliest instant at which `handle_timeout` or `poll_transmit` has work (NAK,
    /// give-up and inactivity deadlines, and in unicast mode the next STATUS).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sources = self
            .sources
            .iter()
            .map(|s| {
                let idle = s.last_activity + self.cfg.inactivity_timeout;
                s.deadline.map_or(idle, |d| d.min(idle))
            })
            .min();
        let mut status = self.status_deadline();
        if self.flow_pending {
            // A flow report is due at once.
            status = self.last_now.map(|n| status.map_or(n, |s| s.min(n)));
        }
        match (sources, status) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
