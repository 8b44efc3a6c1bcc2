//! The publisher state machine: offer, batching and fragmentation, the retransmit ring, NAK
//! service, heartbeats, pacing and close.
//!
//! # Call order (the sans-IO contract)
//! 1. [`Publisher::offer`] as the application produces messages.
//! 2. [`Publisher::handle_datagram`] for every datagram arriving on the publisher's socket
//!    (NAKs and STATUS frames from receivers).
//! 3. [`Publisher::poll_transmit`] until it returns `None`, sending each frame to its
//!    [`Destination`]. [`Destination::Group`] means the multicast group, or, in unicast
//!    mode, every address [`Publisher::destinations`] yields right after that call (it
//!    expires stale destinations first, so read the list after polling).
//! 4. Sleep or spin until [`Publisher::poll_timeout`], call [`Publisher::handle_timeout`],
//!    then go to 2. (`handle_timeout` is optional: `poll_transmit` evaluates every timer
//!    against its `now` too.)
//!
//! # Unicast fan-out (networks without multicast)
//! Receivers configured with `ReceiverConfig::status_to` send a STATUS frame to the
//! publisher every `status_interval`; the first one adds the sender address as a
//! destination (and makes a heartbeat due at once, so the joiner learns the window), later
//! ones refresh it, one with the LEAVING flag removes it, and silence for
//! [`PublisherConfig::destination_timeout`] expires it. [`Publisher::add_destination`] adds
//! static destinations that never expire. Recovery is unchanged: NAKs are unicast as
//! always, and repairs go to [`Destination::Group`] like everything else.
//!
//! # Flow control
//! Receivers report the sequence number they will deliver next and a window in bytes
//! (STATUS frames with a flow report, sent as they consume and in reply to heartbeats).
//! New DATA frames go no further than the window of the fastest receiver
//! ([`FlowControl::Max`], the default) or the slowest ([`FlowControl::Min`]); frames held
//! back stay unsent in the ring, and `offer` pushes back once the unsent allowance is full.
//! A receiver silent for [`PublisherConfig::flow_timeout`] stops counting. A session sends
//! [`PublisherConfig::initial_flow_window`] bytes before the first report, then waits for
//! one (at most [`PublisherConfig::flow_start_wait`]). Heartbeats announce only what was sent, so receivers never
//! NAK held-back frames.
//!
//! Without authentication, anyone who can send the publisher a STATUS datagram can make it
//! send the stream to an address of their choosing (a spoofed source address included),
//! for up to `destination_timeout`. `max_destinations` bounds the damage; deploy unicast
//! mode only where the publisher's port is reachable by trusted hosts.

mod config;
mod flow;

pub use config::PublisherConfig;
pub use flow::FlowControl;

use flow::{FlowTable, Reported};

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::proto::auth::{Keyring, OpenError};
use crate::proto::pacing::TokenBucket;
use crate::proto::ring::{DATAGRAM_COST, RetransmitRing};
use crate::proto::transmit::{Destination, Transmit};
use crate::proto::wire::{self, DataFrameWriter, FRAG_BEGIN, FRAG_END, Frame, FrameType, SeqRange};

/// Why [`Publisher::offer`] refused a message. Nothing was queued; the caller may retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OfferError {
    /// Back-pressure: frames not yet handed to the transport fill their allowance. Drive
    /// `poll_transmit` (send what is queued) and retry.
    BackPressure,
    /// Back-pressure: the configured send rate is exhausted until the given instant.
    RateLimited(Instant),
    /// The message exceeds [`PublisherConfig::max_message_size`].
    MessageTooLarge,
    /// The publisher was closed.
    Closed,
    /// The message's fragments would take the session past the last sequence number
    /// (sequence numbers never wrap; a frame must end at or below `u64::MAX`). Start a new
    /// session (a new publisher).
    SequenceSpaceExhausted,
}

impl fmt::Display for OfferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BackPressure => f.write_str("back-pressure: unsent frames fill the ring"),
            Self::RateLimited(_) => f.write_str("back-pressure: send rate limit reached"),
            Self::MessageTooLarge => f.write_str("message larger than max_message_size"),
            Self::Closed => f.write_str("publisher is closed"),
            Self::SequenceSpaceExhausted => f.write_str("the session's sequence space is used up"),
        }
    }
}

impl std::error::Error for OfferError {}

/// Publisher counters. Monotonic; read them with [`Publisher::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Messages accepted by `offer`.
    pub messages: u64,
    /// Payload bytes accepted by `offer`.
    pub message_bytes: u64,
    /// Offers refused with back-pressure or rate limiting.
    pub back_pressure: u64,
    /// Original DATA frames sent.
    pub data_frames: u64,
    /// Bytes of original DATA frames sent.
    pub data_bytes: u64,
    /// NAK frames received for this session.
    pub naks_received: u64,
    /// Ranges in those NAKs.
    pub nak_ranges: u64,
    /// NAKs flagged as repeats (their repairs were lost), served with `repeat_linger`.
    pub naks_repeated: u64,
    /// Repair datagrams sent (each a DATA frame with the RETRANSMIT flag).
    pub retransmits: u64,
    /// Stored frames packed into the repair datagram of the frame before them (a repair
    /// datagram carries `1 +` the frames coalesced into it).
    pub repairs_coalesced: u64,
    /// Extra copies of repair datagrams sent (`repair_copies`; not in `retransmits`).
    pub repair_copies: u64,
    /// Copies not sent: the retransmit cap had no tokens to spare beyond those the queued
    /// first repairs need, or the frames had left the ring. So
    /// `repair_copies + repair_copies_skipped = retransmits × (repair_copies - 1)` once no
    /// copy is pending.
    pub repair_copies_skipped: u64,
    /// Bytes re-sent as repairs, copies included.
    pub retransmit_bytes: u64,
    /// Repairs not queued because the same frame was repaired within the linger.
    pub repairs_suppressed: u64,
    /// Repairs not queued because the repair queue was full.
    pub repairs_dropped: u64,
    /// Datagrams shed unread beyond `max_control_rate` (a flood; see
    /// [`Publisher::control_allowance`]). Those the kernel drops because the I/O layer
    /// left them in the socket are not seen and not counted here.
    pub control_shed: u64,
    /// NAKs that found the repair backlog full (the queue full, or holding more than the
    /// retransmit cap sends within one `repair_linger`): only their unavailable part was
    /// served, and receivers retry the rest after their back-off. A flood shows up here.
    pub naks_shed: u64,
    /// UNAVAILABLE frames sent.
    pub unavailable_sent: u64,
    /// HEARTBEAT frames sent.
    pub heartbeats: u64,
    /// CLOSE frames sent.
    pub closes: u64,
    /// Datagrams that failed to decode (CRC, version, layout).
    pub decode_errors: u64,
    /// Well-formed frames dropped by authentication: a bad MAC (forged or modified), an
    /// unknown key id, or no trailer while authentication is required. Zero with
    /// authentication off, unless someone sends sealed frames.
    pub auth_failures: u64,
    /// Valid frames not addressed to this publisher (other session/stream, or neither a
    /// NAK nor a STATUS).
    pub ignored_frames: u64,
    /// STATUS frames received for this stream (any session).
    pub status_received: u64,
    /// Unicast destinations added (by STATUS or [`Publisher::add_destination`]).
    pub destinations_added: u64,
    /// Destinations dropped because they sent no STATUS for `destination_timeout`.
    pub destinations_expired: u64,
    /// Destinations removed by a STATUS with the LEAVING flag.
    pub destinations_left: u64,
    /// STATUS frames from new addresses refused because `max_destinations` were tracked.
    pub destinations_refused: u64,
    /// Flow reports accepted (STATUS frames with a flow report for this session), in every
    /// flow-control mode: with `FlowControl::None` they hold nothing back but still count
    /// the receivers (the group size frames advertise).
    pub flow_reports: u64,
    /// Receivers that started reporting (added to the flow table).
    pub flow_added: u64,
    /// Flow reports from new addresses ignored because `max_flow_receivers` were tracked.
    pub flow_refused: u64,
    /// Receivers dropped from the flow table: silent for `flow_timeout`.
    pub flow_expired: u64,
    /// Receivers removed from the flow table by a STATUS with the LEAVING flag.
    pub flow_left: u64,
    /// Times new data was held back by flow control (counted when sending stops for it,
    /// not per attempt).
    pub flow_blocked: u64,
}

#[derive(Clone, Copy, Debug)]
struct OpenFrame {
    writer: DataFrameWriter,
    first_seq: u64,
    opened_at: Instant,
}

/// Idle heartbeat schedule: first soon after data, then doubling up to a maximum.
#[derive(Clone, Copy, Debug)]
struct HeartbeatTimer {
    last_sent: Instant,
    last_data: Instant,
    data_since: bool,
    interval: Duration,
    /// A new destination joined: send a heartbeat at the next opportunity.
    due_now: bool,
}

/// The repair datagram just sent, to be sent again (`repair_copies`).
#[derive(Clone, Copy, Debug)]
struct RepairCopy {
    /// First sequence number of its first frame.
    first_seq: u64,
    /// Ring frames packed into it.
    frames: usize,
    /// Its length on the wire (trailer included): what a copy costs in tokens.
    len: usize,
    /// Copies still to send.
    left: u32,
}

/// One unicast destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UnicastDest {
    addr: SocketAddr,
    /// When it is dropped unless refreshed by STATUS; `None` for a static destination.
    expires_at: Option<Instant>,
}

/// The sans-IO publisher for one stream of one session.
#[derive(Debug)]
pub struct Publisher {
    cfg: PublisherConfig,
    /// Seals every frame sent and checks every frame received (off by default).
    keyring: Keyring,
    /// `cfg.frame_limit()`: the largest frame before its trailer.
    frame_limit: usize,
    session: u64,
    ring: RetransmitRing,
    open: Option<OpenFrame>,
    /// Next sequence number `offer` assigns.
    next_seq: u64,
    /// First sequence number of the oldest committed frame not yet transmitted.
    unsent_seq: u64,
    unsent_bytes: usize,
    unsent_frames: usize,
    /// Queued repairs: first sequence and length of each frame.
    repairs: VecDeque<(u64, usize)>,
    /// Sum of the lengths in `repairs`.
    queued_repair_bytes: u64,
    /// A copy of the last repair datagram, due before anything else is repaired.
    repair_copy: Option<RepairCopy>,
    repair_bucket: TokenBucket,
    /// Datagrams handled per second (units: datagrams, not bytes).
    control_bucket: TokenBucket,
    send_bucket: Option<TokenBucket>,
    pending_unavailable: Option<SeqRange>,
    last_unavailable: Option<(SeqRange, Instant)>,
    heartbeat: HeartbeatTimer,
    /// Unicast destinations, static and dynamic. Capacity is reserved up front for every
    /// static one plus `max_destinations` dynamic ones: STATUS never allocates.
    destinations: Vec<UnicastDest>,
    /// Number of dynamic (STATUS-added) entries in `destinations`.
    dynamic_destinations: usize,
    /// No dynamic destination expires before this (a lower bound: refreshes move the real
    /// expiries later; the scan in `expire_destinations` recomputes it).
    next_expiry: Option<Instant>,
    /// Receivers' flow reports and the limit they set on new data.
    flow: FlowTable,
    /// The last attempt to send new data was held back by flow control.
    flow_held: bool,
    /// [`Publisher::release_flow`] was called: nothing is held back any more.
    flow_released: bool,
    closing: bool,
    /// The latest `now` seen by any entry point (for deadlines computed without one).
    now: Instant,
    stats: PublisherStats,
}

impl Publisher {
    /// A publisher for `cfg.stream` with the given random `session` id, starting at `now`.
    ///
    /// The session id must be chosen at random by the caller (the transport does), so that
    /// a restarted publisher is recognised as a new session. With authentication, it must
    /// also be greater than the previous session's from the same source address
    /// ([`crate::proto::session::session_id`] does both): receivers that require
    /// authentication follow only newer sessions, so replayed old ones cannot take over.
    pub fn new(cfg: PublisherConfig, session: u64, now: Instant) -> Self {
        let cfg = cfg.sanitized();
        let ring = RetransmitRing::new(
            cfg.ring_bytes,
            cfg.ring_frames,
            cfg.ring_messages,
            cfg.initial_seq,
        );
        let repair_bucket = TokenBucket::new(cfg.retransmit_rate, cfg.retransmit_burst, now);
        let send_bucket = cfg
            .send_rate
            .map(|r| TokenBucket::new(r, cfg.send_burst, now));
        Self {
            session,
            ring,
            open: None,
            next_seq: cfg.initial_seq,
            unsent_seq: cfg.initial_seq,
            unsent_bytes: 0,
            unsent_frames: 0,
            repairs: VecDeque::with_capacity(cfg.max_queued_repairs),
            queued_repair_bytes: 0,
            repair_copy: None,
            repair_bucket,
            control_bucket: TokenBucket::new(cfg.max_control_rate, cfg.control_burst, now),
            send_bucket,
            pending_unavailable: None,
            last_unavailable: None,
            heartbeat: HeartbeatTimer {
                last_sent: now,
                last_data: now,
                data_since: false,
                interval: cfg.heartbeat_min,
                due_now: false,
            },
            destinations: Vec::with_capacity(cfg.max_destinations),
            dynamic_destinations: 0,
            next_expiry: None,
            flow: FlowTable::new(
                cfg.flow_control,
                cfg.max_flow_receivers,
                cfg.flow_timeout,
                cfg.initial_flow_window as u64,
                cfg.flow_start_wait,
            ),
            flow_held: false,
            flow_released: false,
            closing: false,
            now,
            stats: PublisherStats::default(),
            keyring: Keyring::new(&cfg.auth),
            frame_limit: cfg.frame_limit(),
            cfg,
        }
    }

    /// The session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// The stream id.
    pub fn stream(&self) -> u32 {
        self.cfg.stream
    }

    /// The configuration in effect (after sanitizing).
    pub fn config(&self) -> &PublisherConfig {
        &self.cfg
    }

    /// Counters.
    pub fn stats(&self) -> &PublisherStats {
        &self.stats
    }

    /// The next sequence number `offer` will assign.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// One past the last sequence number sent: [`next_seq`](Self::next_seq) less what
    /// waits in the open frame or in frames not handed to the transport yet (flow control
    /// or a full socket). What heartbeats announce.
    pub fn sent_seq(&self) -> u64 {
        self.unsent_seq
    }

    /// Oldest sequence number still repairable.
    pub fn oldest_retained(&self) -> u64 {
        self.ring.oldest_seq()
    }

    /// Repairs queued and not yet sent (at most
    /// [`PublisherConfig::max_queued_repairs`]).
    pub fn queued_repairs(&self) -> usize {
        self.repairs.len()
    }

    /// Unicast destinations added by STATUS (at most
    /// [`PublisherConfig::max_destinations`]; static ones are not counted).
    pub fn dynamic_destinations(&self) -> usize {
        self.dynamic_destinations
    }

    /// Every unicast destination, static and dynamic, in no particular order.
    ///
    /// In unicast mode a [`Destination::Group`] transmit goes to each of these (and, if the
    /// transport also has a multicast group, to the group). Expiry is evaluated in
    /// [`Publisher::poll_transmit`], so read this right after it for an up-to-date list.
    pub fn destinations(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.destinations.iter().map(|d| d.addr)
    }

    /// Add a static unicast destination (a statically configured receiver): it never
    /// expires, is not removed by a LEAVING STATUS, and does not count against
    /// [`PublisherConfig::max_destinations`]. Adding an address that is already a dynamic
    /// destination makes it static. A heartbeat is made due at once for a new destination.
    ///
    /// Meant for setup: this may allocate (STATUS handling never does).
    pub fn add_destination(&mut self, addr: SocketAddr) {
        if let Some(d) = self.destinations.iter_mut().find(|d| d.addr == addr) {
            if d.expires_at.take().is_some() {
                self.dynamic_destinations -= 1;
            }
            return;
        }
        let statics = self.destinations.len() - self.dynamic_destinations + 1;
        let want = statics + self.cfg.max_destinations;
        self.destinations
            .reserve_exact(want.saturating_sub(self.destinations.len()));
        self.destinations.push(UnicastDest {
            addr,
            expires_at: None,
        });
        self.stats.destinations_added += 1;
        self.heartbeat.due_now = true;
    }

    /// Remove a unicast destination, static or dynamic; returns whether it was present.
    pub fn remove_destination(&mut self, addr: SocketAddr) -> bool {
        match self.destinations.iter().position(|d| d.addr == addr) {
            Some(i) => {
                if self.destinations.swap_remove(i).expires_at.is_some() {
                    self.dynamic_destinations -= 1;
                }
                true
            }
            None => false,
        }
    }

    /// Drop dynamic destinations whose STATUS is older than `destination_timeout`.
    fn expire_destinations(&mut self, now: Instant) {
        if self.next_expiry.is_none_or(|e| now < e) {
            return;
        }
        let mut next: Option<Instant> = None;
        let mut expired = 0;
        self.destinations.retain(|d| match d.expires_at {
            Some(e) if now >= e => {
                expired += 1;
                false
            }
            Some(e) => {
                next = Some(next.map_or(e, |n| n.min(e)));
                true
            }
            None => true,
        });
        self.next_expiry = next;
        self.dynamic_destinations -= expired;
        self.stats.destinations_expired += expired as u64;
    }

    /// STATUS from `from`: add, refresh or (leaving) remove it as a dynamic destination.
    fn on_status(&mut self, now: Instant, from: SocketAddr, leaving: bool) {
        self.stats.status_received += 1;
        let found = self.destinations.iter().position(|d| d.addr == from);
        if leaving {
            if let Some(i) = found
                && self.destinations[i].expires_at.is_some()
            {
                self.destinations.swap_remove(i);
                self.dynamic_destinations -= 1;
                self.stats.destinations_left += 1;
            }
            return;
        }
        let expires_at = now + self.cfg.destination_timeout;
        if let Some(i) = found {
            let d = &mut self.destinations[i];
            if d.expires_at.is_some() {
                d.expires_at = Some(expires_at);
            }
            return;
        }
        if self.dynamic_destinations >= self.cfg.max_destinations {
            // Make room from stale entries before refusing.
            self.expire_destinations(now);
            if self.dynamic_destinations >= self.cfg.max_destinations {
                self.stats.destinations_refused += 1;
                return;
            }
        }
        debug_assert!(self.destinations.len() < self.destinations.capacity());
        self.destinations.push(UnicastDest {
            addr: from,
            expires_at: Some(expires_at),
        });
        self.dynamic_destinations += 1;
        self.next_expiry = Some(self.next_expiry.map_or(expires_at, |e| e.min(expires_at)));
        self.stats.destinations_added += 1;
        // Tell the joiner the window now rather than up to heartbeat_max later.
        self.heartbeat.due_now = true;
    }

    /// A flow report from `from` about `session`: track the receiver's limit (or, leaving,
    /// stop tracking it).
    fn on_flow_report(
        &mut self,
        now: Instant,
        from: SocketAddr,
        session: u64,
        leaving: bool,
        report: wire::FlowReport,
    ) {
        self.stats.status_received += 1;
        // With flow control off (`FlowControl::None`) reports are still tracked: they
        // count the receivers, the group size frames advertise. Nothing is held back.
        if session != self.session {
            self.stats.ignored_frames += 1;
            return;
        }
        self.stats.flow_reports += 1;
        if leaving {
            if self.flow.leave(from) {
                self.stats.flow_left += 1;
            }
            return;
        }
        // A window smaller than a frame would hold the next frame back for ever.
        let frame = self.frame_limit as u64 + crate::proto::ring::DATAGRAM_COST;
        let window = u64::from(report.window).max(frame);
        let limit = self.stream_pos(report.position).saturating_add(window);
        if self.flow.len() >= self.cfg.max_flow_receivers {
            // Make room from silent receivers (counted) before a newcomer is refused.
            self.expire_flow(now);
        }
        match self.flow.report(now, from, limit) {
            Reported::Added => self.stats.flow_added += 1,
            Reported::Refused => self.stats.flow_refused += 1,
            // A receiver already tracked refreshing its limit: a few table entries' work,
            // and several a millisecond from every fast receiver. Charged a quarter of a
            // datagram against the intake limit, so that a large group's reports do not
            // crowd out its NAKs (a flood forging a tracked address is read at most four
            // times as fast as other floods).
            Reported::Updated => self.control_bucket.give_back(3, 4),
        }
    }

    /// Byte position of the frame holding `seq` in the stream of frames: for a sequence
    /// number not sent yet (or forged beyond), the end of what was sent; for one evicted
    /// already, the oldest frame retained.
    fn stream_pos(&self, seq: u64) -> u64 {
        let sent_end = self.ring.len() - self.unsent_frames;
        let sent_pos = if self.unsent_frames > 0 {
            self.ring.entry(sent_end).pos()
        } else {
            self.ring.end_pos()
        };
        if seq >= self.unsent_seq || sent_end == 0 {
            return sent_pos;
        }
        match self.ring.find(seq) {
            Some(i) => self.ring.entry(i).pos(),
            None => self.ring.entry(0).pos(),
        }
    }

    /// Receivers whose flow reports are tracked.
    pub fn flow_receivers(&self) -> usize {
        self.flow.len()
    }

    /// Whether sealed frames wait because flow control holds them back (the I/O layer
    /// then reads the receivers' reports before it gives up on sending).
    pub fn flow_blocked(&self) -> bool {
        self.unsent_frames > 0 && !self.flow_allows(self.ring.len() - self.unsent_frames)
    }

    /// Stop holding anything back for flow control, for good: every frame offered goes
    /// out at the next `poll_transmit` calls, whatever the receivers reported. For a
    /// closing publisher that must not leave offered messages unsent (the transport's
    /// `close` calls it half-way through its linger): a receiver that cannot take them
    /// recovers them or reports them lost, as without flow control.
    pub fn release_flow(&mut self) {
        self.flow_released = true;
    }

    /// The byte position new frames must end at or below, if any.
    fn flow_limit(&self) -> Option<u64> {
        if self.flow_released {
            None
        } else {
            self.flow.limit()
        }
    }

    /// Whether flow control lets the frame at ring index `i` go out.
    fn flow_allows(&self, i: usize) -> bool {
        self.flow_limit()
            .is_none_or(|limit| self.ring.entry(i).end_pos() <= limit)
    }

    /// Note whether sending new data stopped at `now` for flow control (counted once per
    /// stop).
    fn note_flow_held(&mut self, now: Instant, held: bool) {
        if held {
            if !self.flow_held {
                self.stats.flow_blocked += 1;
            }
            self.flow.held(now);
        }
        self.flow_held = held;
    }

    /// Fault in the retransmit ring's memory now rather than during the first lap of
    /// sending (see [`RetransmitRing::prefault`]). The transport does this at start-up.
    pub fn prefault(&mut self) {
        self.ring.prefault();
    }

    /// Whether `close` was called.
    pub fn is_closed(&self) -> bool {
        self.closing
    }

    /// Whether every offered message has been handed to the transport.
    pub fn is_flushed(&self) -> bool {
        self.open.is_none() && self.unsent_frames == 0
    }

    /// Largest fragment payload per frame.
    fn fragment_room(&self) -> usize {
        self.frame_limit - DataFrameWriter::EMPTY_LEN - wire::FRAGMENT_HEADER_LEN
    }

    /// Queue `msg` for sending; returns its sequence number (that of its first fragment).
    ///
    /// Small messages share a frame with those offered before the next `poll_transmit`
    /// (and, with a linger, within the linger); larger ones are fragmented. Never blocks and
    /// never buffers without bound: when the unsent allowance or the send rate is exhausted
    /// it returns back-pressure and queues nothing.
    pub fn offer(&mut self, now: Instant, msg: &[u8]) -> Result<u64, OfferError> {
        self.now = now;
        if self.closing {
            return Err(OfferError::Closed);
        }
        if msg.len() > self.cfg.max_message_size {
            return Err(OfferError::MessageTooLarge);
        }
        let room = self.fragment_room();
        let frames = msg.len().div_ceil(room).max(1);
        // One sequence number per fragment, and a frame's end (one past its last fragment)
        // must fit a u64: refuse rather than wrap (found by fuzzing, initial_seq near the
        // end of the space).
        if u64::MAX - self.next_seq < frames as u64 {
            return Err(OfferError::SequenceSpaceExhausted);
        }
        let bytes = msg.len() + frames * (wire::FRAGMENT_HEADER_LEN + DataFrameWriter::EMPTY_LEN);
        if self.over_unsent_limits(bytes, frames) {
            self.stats.back_pressure += 1;
            return Err(OfferError::BackPressure);
        }
        if let Some(bucket) = &mut self.send_bucket
            && !bucket.try_take(now, msg.len())
        {
            self.stats.back_pressure += 1;
            return Err(OfferError::RateLimited(bucket.ready_at(now, msg.len())));
        }
        let seq = self.next_seq;
        let mut rest = msg;
        let mut flags = FRAG_BEGIN;
        loop {
            let open = self.open_frame(now);
            let mut writer = open.writer;
            let space = writer.room(self.frame_limit);
            // Start a fresh frame rather than split a message that would fit in one.
            if space < rest.len().min(room) && !writer.is_empty() {
                self.seal();
                continue;
            }
            let take = rest.len().min(space);
            let last = take == rest.len();
            let frag_flags = if last { flags | FRAG_END } else { flags };
            let buf = self.ring.reserved_mut();
            writer
                .push(buf, frag_flags, &rest[..take])
                .expect("fragment sized to the room left in the frame");
            self.open.as_mut().expect("frame is open").writer = writer;
            self.next_seq += 1;
            rest = &rest[take..];
            flags = 0;
            if last {
                break;
            }
            self.seal();
        }
        if self
            .open
            .is_some_and(|o| o.writer.room(self.frame_limit) == 0)
        {
            self.seal();
        }
        self.stats.messages += 1;
        self.stats.message_bytes += msg.len() as u64;
        Ok(seq)
    }

    /// The latency path of [`offer`](Self::offer): a message offered when nothing else is
    /// waiting goes into a frame of its own, sealed at once, that may be sent straight away.
    ///
    /// It applies when no frame is open or unsent, `linger` is zero, there is no send-rate
    /// limit, no repair, repair copy or UNAVAILABLE notice is pending, frames need no
    /// trailer (authentication off), no destination or flow-control expiry is due, the
    /// message fits one fragment, and flow control lets the frame go. Then `msg` is stored
    /// exactly as `offer` followed by a seal would store it, and its sequence number is
    /// returned with the frame as it goes on the wire (the one
    /// [`unsent_data`](Self::unsent_data) yields), to be sent and reported with
    /// [`data_sent`](Self::data_sent), or left for [`poll_transmit`](Self::poll_transmit).
    /// Otherwise nothing changes and `None` is returned: use [`offer`](Self::offer).
    ///
    /// For an I/O layer's lone-message path: it skips the open-frame, linger and
    /// unsent-frame bookkeeping that batching needs (the transport's `offer` then runs
    /// ~1 010 instructions in all instead of ~1 340, docs/PERFORMANCE.md §1).
    pub fn offer_lone(&mut self, now: Instant, msg: &[u8]) -> Option<(u64, &[u8])> {
        let len = DataFrameWriter::EMPTY_LEN + wire::FRAGMENT_HEADER_LEN + msg.len();
        if self.open.is_some()
            || self.unsent_frames != 0
            || self.closing
            || !self.cfg.linger.is_zero()
            || self.send_bucket.is_some()
            || len > self.frame_limit
            || msg.len() > self.cfg.max_message_size
            || self.next_seq == u64::MAX
            || !self.sendable_from_ring()
            // An expiry due would change the flow limit or the destinations first.
            || self.next_expiry.is_some_and(|t| t <= now)
            || self.flow.next_expiry().is_some_and(|t| t <= now)
            || self.over_unsent_limits(len, 1)
            || self
                .flow_limit()
                .is_some_and(|limit| self.ring.end_pos() + len as u64 + DATAGRAM_COST > limit)
        {
            return None;
        }
        self.now = now;
        let seq = self.next_seq;
        let group = self.group_flags(now);
        let buf = self.ring.reserve(self.frame_limit);
        let mut writer = DataFrameWriter::begin(buf, self.cfg.stream, self.session, seq)
            .expect("mtu holds an empty frame");
        writer.set_session_offset(buf, seq - self.cfg.initial_seq);
        writer.set_flags(buf, group);
        writer
            .push(buf, FRAG_BEGIN | FRAG_END, msg)
            .expect("checked: the message fits the frame");
        let stored = writer.finish(buf);
        debug_assert_eq!(stored, len);
        self.next_seq = seq + 1;
        self.ring.commit(seq, seq + 1, stored);
        self.unsent_bytes += stored;
        self.unsent_frames += 1;
        self.stats.messages += 1;
        self.stats.message_bytes += msg.len() as u64;
        Some((seq, self.ring.frame(self.ring.len() - 1)))
    }

    /// The header flags advertising the group at `now` (PROTOCOL.md §4.6), for every new
    /// DATA, HEARTBEAT and CLOSE frame.
    fn group_flags(&self, now: Instant) -> u16 {
        wire::group_flags(self.flow.group(now))
    }

    /// Whether offering `bytes` more in `frames` more frames would pass the unsent
    /// allowance (`offer` then pushes back).
    fn over_unsent_limits(&self, bytes: usize, frames: usize) -> bool {
        self.unsent_bytes + bytes > self.cfg.max_unsent_bytes()
            || self.unsent_frames + frames + 1 > self.cfg.max_unsent_frames()
            || self.next_seq - self.unsent_seq + frames as u64 > self.cfg.max_unsent_seqs()
    }

    /// Whether new data may go straight from the ring as stored: nothing must go before
    /// it (no UNAVAILABLE notice, repair or repair copy pending) and frames need no
    /// trailer (authentication off).
    fn sendable_from_ring(&self) -> bool {
        self.repairs.is_empty()
            && self.repair_copy.is_none()
            && self.pending_unavailable.is_none()
            && self.keyring.trailer_len() == 0
    }

    /// The open frame, opening one at the ring's head if none is.
    fn open_frame(&mut self, now: Instant) -> OpenFrame {
        if let Some(open) = self.open {
            return open;
        }
        let group = self.group_flags(now);
        let buf = self.ring.reserve(self.frame_limit);
        let writer = DataFrameWriter::begin(buf, self.cfg.stream, self.session, self.next_seq)
            .expect("mtu holds an empty frame");
        writer.set_session_offset(buf, self.next_seq - self.cfg.initial_seq);
        writer.set_flags(buf, group);
        let open = OpenFrame {
            writer,
            first_seq: self.next_seq,
            opened_at: now,
        };
        self.open = Some(open);
        open
    }

    /// Close the open frame: finish its encoding and commit it to the ring, unsent.
    fn seal(&mut self) {
        let Some(open) = self.open.take() else { return };
        let len = open.writer.finish(self.ring.reserved_mut());
        self.ring.commit(open.first_seq, self.next_seq, len);
        self.unsent_bytes += len;
        self.unsent_frames += 1;
    }

    /// Seal the open frame now, whatever the linger.
    pub fn flush(&mut self) {
        self.seal();
    }

    /// Seal the open frame if its `linger` has run out at `now`, as
    /// [`poll_transmit`](Self::poll_transmit) does before sending new data; returns whether
    /// one was sealed. For an I/O layer that sends the sealed frames together
    /// ([`unsent_data`](Self::unsent_data)) rather than one `poll_transmit` at a time.
    pub fn seal_lingered(&mut self, now: Instant) -> bool {
        self.now = now;
        let due = self
            .open
            .is_some_and(|o| now.saturating_duration_since(o.opened_at) >= self.cfg.linger);
        if due {
            self.seal();
        }
        due
    }

    /// Close the session: pending data is still sent, then CLOSE frames replace heartbeats
    /// (repeated on the heartbeat schedule for as long as the publisher is driven, so that
    /// receivers learn the final sequence even under heavy loss). NAKs are still served.
    pub fn close(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        self.seal();
        self.closing = true;
        // Send the first CLOSE right after the remaining data.
        self.heartbeat.data_since = false;
        self.heartbeat.interval = Duration::ZERO;
        self.heartbeat.last_sent = now;
        self.heartbeat.due_now = true;
    }

    /// Advance the timers to `now` without producing a frame: expire unicast destinations
    /// silent for `destination_timeout` and flow reporters silent for `flow_timeout`, and seal the open frame once `linger` has passed
    /// (it then goes out at the next [`poll_transmit`](Self::poll_transmit)). Heartbeats,
    /// repairs and CLOSE are timed by `poll_transmit` itself, so calling this is optional;
    /// it is here for drivers that separate timers from transmission.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.expire_destinations(now);
        self.expire_flow(now);
        self.seal_lingered(now);
    }

    /// Stop counting receivers silent for `flow_timeout`.
    fn expire_flow(&mut self, now: Instant) {
        self.stats.flow_expired += self.flow.expire(now) as u64;
    }

    /// Report that the frames the last [`poll_transmit`](Self::poll_transmit) calls
    /// returned left at `now`, when they were asked for with an earlier time. An I/O layer
    /// that wants no clock read between `offer` and the `send` passes the time of its
    /// previous call to both, sends, then reads the clock and reports it here: the
    /// heartbeat schedule then counts from the real send time (a time from before an idle
    /// spell would make a heartbeat follow the data at once). Times never move back.
    pub fn sent_at(&mut self, now: Instant) {
        if now <= self.now {
            return;
        }
        self.now = now;
        let hb = &mut self.heartbeat;
        if hb.data_since {
            hb.last_data = hb.last_data.max(now);
        }
    }

    /// How many datagrams [`handle_datagram`](Self::handle_datagram) will handle at `now`,
    /// at most `max` (`max_control_rate`, `control_burst`): the I/O layer reads no more than this and
    /// leaves the rest to the kernel, so a flood costs the publishing thread a bounded
    /// share of its time however fast it arrives.
    pub fn control_allowance(&self, now: Instant, max: usize) -> usize {
        let max = u64::try_from(max).unwrap_or(u64::MAX);
        usize::try_from(self.control_bucket.available_up_to(now, max)).unwrap_or(usize::MAX)
    }

    /// Process one datagram received on the publisher's socket from `from`.
    ///
    /// A NAK for this session queues repairs. A STATUS for this stream (whatever its
    /// session: a joiner does not know it yet) adds or refreshes `from` as a unicast
    /// destination, or removes it if LEAVING; see the module docs. With authentication,
    /// frames without a valid trailer are dropped and counted first.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        self.now = now;
        if !self.control_bucket.try_take(now, 1) {
            self.stats.control_shed += 1;
            return;
        }
        let list = match self.keyring.open(bytes) {
            Ok(Frame::Nak(list)) => list,
            Ok(Frame::Status {
                header,
                leaving,
                flow,
            }) if header.stream == self.cfg.stream => {
                match flow {
                    // Flow reports are a receiver's own business with this session; they
                    // neither add nor refresh unicast destinations.
                    Some(report) => self.on_flow_report(now, from, header.session, leaving, report),
                    None => self.on_status(now, from, leaving),
                }
                return;
            }
            Ok(_) => {
                self.stats.ignored_frames += 1;
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
        if list.header.session != self.session || list.header.stream != self.cfg.stream {
            self.stats.ignored_frames += 1;
            return;
        }
        self.stats.naks_received += 1;
        self.stats.nak_ranges += list.len() as u64;
        let sent_end = self.unsent_seq;
        // A repeated request means the repair was lost, not in flight: only the short
        // linger applies (it absorbs the repeats of receivers that lost the same repair).
        let linger = if list.header.flags & wire::FLAG_REPEAT != 0 {
            self.stats.naks_repeated += 1;
            self.cfg.repeat_linger
        } else {
            self.cfg.repair_linger
        };
        // Bound the work one NAK can cause, however wide its ranges; with the repair queue
        // full it can cause none (a flood costs O(ranges) per NAK, not a walk of the ring).
        let mut budget = if self.repair_backlog_full(now) {
            self.stats.naks_shed += 1;
            0
        } else {
            self.cfg.max_frames_examined_per_nak
        };
        for range in list.iter() {
            let oldest = self.ring.oldest_seq();
            if range.start < oldest {
                // Everything from the requested start up to the oldest retained is gone.
                let (start, end) = match self.pending_unavailable {
                    Some(p) => (p.start.min(range.start), p.end.max(oldest)),
                    None => (range.start, oldest),
                };
                // One frame names at most MAX_RANGE_SPAN; a receiver asking for more below
                // learns the rest from its next NAK.
                let start = start.max(end.saturating_sub(wire::MAX_RANGE_SPAN));
                self.pending_unavailable = Some(SeqRange::new(start, end));
            }
            let end = range.end.min(sent_end);
            let start = range.start.max(oldest);
            if start >= end || budget == 0 {
                continue;
            }
            // Retained frames hold consecutive sequence numbers: one lookup, then walk the
            // index (a flood of whole-ring NAKs costs a step per frame, not a search).
            let Some(mut i) = self.ring.find(start) else {
                continue;
            };
            while i < self.ring.len() && budget > 0 {
                let entry = self.ring.entry_mut(i);
                if entry.first_seq >= end {
                    break;
                }
                budget -= 1;
                i += 1;
                if entry.repair_queued {
                    continue;
                }
                if entry.last_repair.is_some_and(|t| now < t + linger) {
                    self.stats.repairs_suppressed += 1;
                    continue;
                }
                if self.repairs.len() >= self.cfg.max_queued_repairs {
                    self.stats.repairs_dropped += 1;
                    budget = 0;
                    break;
                }
                entry.repair_queued = true;
                self.queued_repair_bytes += entry.len() as u64;
                self.repairs.push_back((entry.first_seq, entry.len()));
            }
        }
    }

    /// Whether the repair queue is full, or already holds more than the retransmit cap lets
    /// out within one `repair_linger`: a NAK now could only lengthen a backlog that is not
    /// draining, so it is shed at the cost of reading its header (receivers retry after
    /// their back-off). Below the cap this never triggers: the bucket stays full and a
    /// backlog goes out at once.
    fn repair_backlog_full(&self, now: Instant) -> bool {
        self.repairs.len() >= self.cfg.max_queued_repairs
            || self.queued_repair_bytes
                > self.repair_bucket.available(now)
                    + self.repair_bucket.refill_over(self.cfg.repair_linger)
    }

    /// Produce the next frame to send into `buf` (at least `mtu` bytes), or `None` when
    /// nothing is due at `now`.
    ///
    /// Order: UNAVAILABLE notices, repairs and their copies (within the retransmit
    /// bandwidth cap), new data,
    /// then heartbeat or CLOSE. Unicast destinations silent past `destination_timeout` are
    /// dropped first.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.poll_transmit_inner(now, buf, true)
    }

    /// Like [`poll_transmit`](Self::poll_transmit), but the open frame stays open (whatever
    /// the linger) and keeps filling: only frames already full go out. For natural batching,
    /// when the application offers faster than frames are sent: see
    /// [`full_frames`](Self::full_frames).
    pub fn poll_transmit_full(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.poll_transmit_inner(now, buf, false)
    }

    /// How many sealed frames are waiting for `poll_transmit`.
    pub fn full_frames(&self) -> usize {
        self.unsent_frames
    }

    /// Whether a frame is open (holding messages, not sealed yet).
    pub fn has_open_frame(&self) -> bool {
        self.open.is_some()
    }

    fn poll_transmit_inner(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        seal_open: bool,
    ) -> Option<Transmit> {
        self.now = now;
        self.expire_destinations(now);
        self.expire_flow(now);
        if let Some(t) = self.transmit_unavailable(now, buf) {
            return Some(t);
        }
        if let Some(t) = self.transmit_repair(now, buf) {
            return Some(t);
        }
        if seal_open {
            self.seal_lingered(now);
        }
        if let Some(t) = self.transmit_data(now, buf) {
            return Some(t);
        }
        self.transmit_heartbeat(now, buf)
    }

    fn transmit_unavailable(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        let range = self.pending_unavailable.take()?;
        if let Some((last, at)) = self.last_unavailable {
            let covered = last.start <= range.start && range.end <= last.end;
            if covered && now < at + self.cfg.repair_linger {
                return None;
            }
        }
        let len = wire::emit_ranges(
            buf,
            FrameType::Unavailable,
            self.cfg.stream,
            self.session,
            &[range],
        )
        .ok()?;
        let len = self.keyring.seal(buf, len).ok()?;
        if !self.repair_bucket.try_take(now, len) {
            self.pending_unavailable = Some(range);
            return None;
        }
        self.last_unavailable = Some((range, now));
        self.stats.unavailable_sent += 1;
        Some(Transmit {
            destination: Destination::Group,
            len,
        })
    }

    /// The next repair: the frame at the head of the queue, followed in the same datagram
    /// by the frames queued right after it when they continue its sequence and fit in the
    /// `mtu` (so a burst of small lost frames costs the group a few datagrams, not one
    /// each). Paced by the retransmit cap, byte for byte.
    fn transmit_repair(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if let Some(copy) = self.repair_copy.take()
            && let Some(t) = self.transmit_repair_copy(now, buf, copy)
        {
            return Some(t);
        }
        let trailer = self.keyring.trailer_len();
        let max_len = self.cfg.mtu.saturating_sub(trailer);
        while let Some(&(seq, queued_len)) = self.repairs.front() {
            let Some(i) = self.ring.find(seq) else {
                // Evicted while queued: a later NAK will be answered with UNAVAILABLE.
                self.repairs.pop_front();
                self.queued_repair_bytes -= queued_len as u64;
                continue;
            };
            // Wait for the tokens of the whole datagram the backlog can fill, not only of
            // its first frame: under a tight cap, small frames then still share datagrams.
            if self.repair_bucket.ready_at(now, self.repair_datagram_len()) > now {
                return None;
            }
            let mut len = self.ring.frame(i).len();
            if !self.repair_bucket.try_take(now, len + trailer) {
                return None;
            }
            buf[..len].copy_from_slice(self.ring.frame(i));
            self.repair_sent(i, now);
            let mut j = i + 1;
            while let Some(&(next_seq, _)) = self.repairs.front() {
                if j >= self.ring.len() || self.ring.entry(j).first_seq != next_seq {
                    break;
                }
                let next = self.ring.frame(j);
                // Tokens first: appending rewrites the fragment count in `buf`, so a frame
                // appended and then refused its tokens would leave a truncated datagram.
                let extra = next.len().saturating_sub(DataFrameWriter::EMPTY_LEN);
                if self.repair_bucket.available_up_to(now, extra as u64) < extra as u64 {
                    break;
                }
                let Some(new_len) = wire::append_data_fragments(buf, len, next, max_len) else {
                    break;
                };
                let taken = self.repair_bucket.try_take(now, new_len - len);
                debug_assert!(taken, "tokens checked for the appended bytes");
                len = new_len;
                self.repair_sent(j, now);
                self.stats.repairs_coalesced += 1;
                j += 1;
            }
            wire::set_retransmit(&mut buf[..len]);
            let len = self
                .keyring
                .seal(buf, len)
                .expect("poll_transmit buffers hold mtu bytes");
            self.stats.retransmits += 1;
            self.stats.retransmit_bytes += len as u64;
            if self.cfg.repair_copies > 1 {
                self.repair_copy = Some(RepairCopy {
                    first_seq: seq,
                    frames: j - i,
                    len,
                    left: self.cfg.repair_copies - 1,
                });
            }
            return Some(Transmit {
                destination: Destination::Group,
                len,
            });
        }
        None
    }

    /// Send `copy` again, rebuilt from the ring exactly as `transmit_repair` packed it, if
    /// its frames are still retained and the retransmit cap has the tokens now beyond those
    /// the queued first repairs need; otherwise it and the copies after it are skipped (a
    /// copy never waits and never delays a first repair).
    fn transmit_repair_copy(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        copy: RepairCopy,
    ) -> Option<Transmit> {
        let trailer = self.keyring.trailer_len();
        let skipped = u64::from(copy.left);
        // Only tokens the queued first repairs do not need: their bytes (an upper bound:
        // packing drops the appended frames' headers) and a trailer each. Checked before
        // the datagram is rebuilt, so a skipped copy (every one, under a flood at the cap)
        // costs no copying or CRC.
        let reserved = self
            .queued_repair_bytes
            .saturating_add((self.repairs.len() * trailer) as u64);
        let need = (copy.len as u64).saturating_add(reserved);
        let found = self.ring.find(copy.first_seq);
        let Some(i) = found.filter(|_| self.repair_bucket.available_up_to(now, need) >= need)
        else {
            self.stats.repair_copies_skipped += skipped;
            return None;
        };
        let max_len = self.cfg.mtu.saturating_sub(trailer);
        let first = self.ring.frame(i);
        let mut len = first.len();
        buf[..len].copy_from_slice(first);
        for j in i + 1..(i + copy.frames).min(self.ring.len()) {
            match wire::append_data_fragments(buf, len, self.ring.frame(j), max_len) {
                Some(new_len) => len = new_len,
                None => break,
            }
        }
        wire::set_retransmit(&mut buf[..len]);
        let len = self
            .keyring
            .seal(buf, len)
            .expect("poll_transmit buffers hold mtu bytes");
        debug_assert_eq!(len, copy.len, "a copy is its repair, byte for byte");
        let taken = self.repair_bucket.try_take(now, len);
        debug_assert!(taken, "tokens checked");
        self.stats.repair_copies += 1;
        self.stats.retransmit_bytes += len as u64;
        if copy.left > 1 {
            self.repair_copy = Some(RepairCopy {
                left: copy.left - 1,
                ..copy
            });
        }
        Some(Transmit {
            destination: Destination::Group,
            len,
        })
    }

    /// The next repair datagram's length as far as the backlog can tell (its queued bytes
    /// and trailer, at most `mtu`): what `transmit_repair` waits for in tokens.
    fn repair_datagram_len(&self) -> usize {
        let queued = usize::try_from(self.queued_repair_bytes).unwrap_or(usize::MAX);
        queued
            .saturating_add(self.keyring.trailer_len())
            .min(self.cfg.mtu)
    }

    /// Bookkeeping for ring frame `i`, the head of the repair queue, just copied out.
    fn repair_sent(&mut self, i: usize, now: Instant) {
        if let Some((_, queued_len)) = self.repairs.pop_front() {
            self.queued_repair_bytes -= queued_len as u64;
        }
        let entry = self.ring.entry_mut(i);
        entry.repair_queued = false;
        entry.last_repair = Some(now);
    }

    fn transmit_data(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if self.unsent_frames == 0 {
            return None;
        }
        // Unsent frames are the newest sealed ones (never evicted): index from the back
        // rather than search the index (a binary search over it misses the cache).
        let i = self.ring.len() - self.unsent_frames;
        debug_assert_eq!(self.ring.find(self.unsent_seq), Some(i));
        let allowed = self.flow_allows(i);
        self.note_flow_held(now, !allowed);
        if !allowed {
            return None;
        }
        let frame = self.ring.frame(i);
        let stored = frame.len();
        buf[..stored].copy_from_slice(frame);
        let len = self
            .keyring
            .seal(buf, stored)
            .expect("poll_transmit buffers hold mtu bytes");
        self.data_frame_sent(now, len);
        Some(Transmit {
            destination: Destination::Group,
            len,
        })
    }

    /// Bookkeeping for the oldest unsent frame, just sent as `len` bytes.
    fn data_frame_sent(&mut self, now: Instant, len: usize) {
        let i = self.ring.len() - self.unsent_frames;
        self.unsent_seq = self.ring.entry(i).end_seq;
        self.unsent_frames -= 1;
        self.unsent_bytes -= self.ring.entry(i).len();
        self.stats.data_frames += 1;
        self.stats.data_bytes += len as u64;
        self.flow_held = false;
        let hb = &mut self.heartbeat;
        hb.last_data = now;
        hb.data_since = true;
    }

    /// The sealed, unsent frames exactly as they go on the wire, oldest first, when they
    /// can be sent straight from the ring: nothing must go before them (no UNAVAILABLE
    /// notice, repair or repair copy pending) and they need no trailer (authentication off),
    /// and only as many as flow control lets go. Otherwise none. For an I/O layer that gathers datagrams from memory instead of copying them
    /// (`sendmmsg` over the ring); it then reports how many went out with
    /// [`data_sent`](Self::data_sent). [`poll_transmit`](Self::poll_transmit) remains the
    /// general path.
    pub fn unsent_data(&self) -> impl ExactSizeIterator<Item = &[u8]> + '_ {
        let first = self.ring.len() - self.unsent_frames;
        let n = match (self.sendable_from_ring(), self.flow_limit()) {
            (false, _) => 0,
            (true, None) => self.unsent_frames,
            (true, Some(limit)) => self.ring.count_within(first, limit),
        };
        (first..first + n).map(|i| self.ring.frame(i))
    }

    /// Record that the first `n` frames [`unsent_data`](Self::unsent_data) yielded were
    /// sent at `now` (as [`poll_transmit`](Self::poll_transmit) would have sent them).
    pub fn data_sent(&mut self, now: Instant, n: usize) {
        self.now = now;
        for _ in 0..n.min(self.unsent_frames) {
            let len = self.ring.frame(self.ring.len() - self.unsent_frames).len();
            self.data_frame_sent(now, len);
        }
    }

    fn heartbeat_due(&self) -> Instant {
        let hb = &self.heartbeat;
        if hb.due_now {
            self.now
        } else if hb.data_since {
            (hb.last_data + self.cfg.heartbeat_min).min(hb.last_sent + self.cfg.heartbeat_max)
        } else {
            hb.last_sent + hb.interval
        }
    }

    fn transmit_heartbeat(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        if now < self.heartbeat_due() || self.open.is_some() {
            return None;
        }
        // Announce only what was sent: frames that flow control holds back must not look
        // lost to the receivers (they would NAK them). CLOSE waits until they are out.
        let sent_end = self.unsent_seq;
        let frame_type = if self.closing && self.unsent_frames == 0 {
            FrameType::Close
        } else {
            FrameType::Heartbeat
        };
        let len = wire::emit_control(
            buf,
            frame_type,
            self.cfg.stream,
            self.session,
            sent_end,
            self.ring.oldest_seq().min(sent_end),
        )
        .ok()?;
        wire::set_session_offset(&mut buf[..len], sent_end - self.cfg.initial_seq);
        // Held back: ask every reporting receiver for a report now (one may have been
        // lost), rather than wait for their keep-alive reports.
        let held = if self.flow_blocked() {
            wire::FLAG_FLOW_HELD
        } else {
            0
        };
        let flags = held | self.group_flags(now);
        if flags != 0 {
            wire::set_flags(&mut buf[..len], flags);
        }
        let len = self.keyring.seal(buf, len).ok()?;
        let hb = &mut self.heartbeat;
        hb.interval = if hb.data_since {
            self.cfg.heartbeat_min * 2
        } else if hb.interval.is_zero() {
            // The first CLOSE went out at once; repeats follow the usual schedule.
            self.cfg.heartbeat_min
        } else {
            hb.interval * 2
        }
        .min(self.cfg.heartbeat_max);
        hb.data_since = false;
        hb.due_now = false;
        hb.last_sent = now;
        if frame_type == FrameType::Close {
            self.stats.closes += 1;
        } else {
            self.stats.heartbeats += 1;
        }
        Some(Transmit {
            destination: Destination::Group,
            len,
        })
    }

    /// The next instant at which `poll_transmit` may have something to send or a
    /// destination to expire (if nothing is sendable now). Callers should call
    /// `poll_transmit` at or after it.
    pub fn poll_timeout(&self) -> Instant {
        // A heartbeat waits for the open frame to be sealed (`transmit_heartbeat`), so while
        // one is open only the linger deadline counts: reporting an already passed
        // heartbeat deadline would make the caller spin until the linger ends.
        let mut t = match &self.open {
            Some(open) => open.opened_at + self.cfg.linger,
            None => self.heartbeat_due(),
        };
        if let Some(e) = self.next_expiry {
            t = t.min(e);
        }
        if let Some(e) = self.flow.next_expiry() {
            t = t.min(e);
        }
        // Frames held back by flow control wait for a report (a datagram) or an expiry.
        if (self.unsent_frames > 0 && !self.flow_blocked()) || self.repair_copy.is_some() {
            t = t.min(self.now);
        }
        if !self.repairs.is_empty() {
            t = t.min(
                self.repair_bucket
                    .ready_at(self.now, self.repair_datagram_len()),
            );
        }
        if self.pending_unavailable.is_some() {
            // A one-range UNAVAILABLE frame, sealed if authentication is on.
            let len = wire::HEADER_LEN + wire::RANGES_PREFIX_LEN + wire::RANGE_LEN;
            let len = len + self.keyring.trailer_len();
            t = t.min(self.repair_bucket.ready_at(self.now, len));
        }
        t
    }
}

#[cfg(test)]
mod tests;
