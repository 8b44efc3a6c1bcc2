//! Publisher configuration and its defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FlowControl;
use crate::proto::auth::AuthConfig;
use crate::proto::wire::{self, DataFrameWriter};

/// Publisher settings. Defaults are safe on a LAN; docs/PROTOCOL.md explains each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PublisherConfig {
    /// Stream id: independent sequence spaces on one group and port.
    pub stream: u32,
    /// Largest datagram (frame) to send, in bytes. 1472 fits an Ethernet MTU of 1500 after
    /// the IPv4 and UDP headers.
    pub mtu: usize,
    /// Largest message `offer` accepts; longer messages are refused, shorter ones that do
    /// not fit a frame are fragmented.
    pub max_message_size: usize,
    /// How long a partly filled frame may wait for more messages. Zero (default) sends at
    /// the next `poll_transmit`: messages offered between two polls still share a frame.
    pub linger: Duration,
    /// Bytes of the retransmit ring.
    pub ring_bytes: usize,
    /// Most frames the ring retains.
    pub ring_frames: usize,
    /// Most sequence numbers (message fragments) the ring retains.
    pub ring_messages: u64,
    /// Sequence number of the first message of a session.
    pub initial_seq: u64,
    /// Retransmit bandwidth cap in bytes per second (repairs and UNAVAILABLE notices).
    pub retransmit_rate: u64,
    /// Retransmit burst allowance in bytes.
    pub retransmit_burst: u64,
    /// After repairing a frame, NAKs for it are ignored for this long, so that one loss
    /// seen by many receivers costs one repair.
    pub repair_linger: Duration,
    /// The linger for NAKs flagged as repeats ([`wire::FLAG_REPEAT`]: the receiver asked
    /// before and is still missing the data, so the repair was lost): short, so that a
    /// lost repair is re-sent one round trip later rather than after `repair_linger`;
    /// still absorbs the repeats of many receivers that lost the same repair at once.
    pub repeat_linger: Duration,
    /// Times each repair datagram is sent (1 to 4). A lost repair costs the receivers a
    /// second NAK round (a retry timeout, a round trip and `repeat_linger`); a copy sent
    /// right after the repair makes that round rare: at 5% independent loss, 1 repair in
    /// 400 instead of 1 in 20 is lost with both copies. Copies never compete with first
    /// repairs for the retransmit cap: one goes out only if the cap has its tokens at once
    /// on top of those every queued first repair needs, and is skipped otherwise (counted
    /// in [`PublisherStats::repair_copies_skipped`](super::PublisherStats)). Default 2;
    /// 1 halves the repair bandwidth of a lossy network at the cost of that tail.
    pub repair_copies: u32,
    /// Most repairs queued at once; NAKs beyond it are dropped (receivers retry).
    pub max_queued_repairs: usize,
    /// Most ring frames one NAK may make the publisher examine (bounds NAK work).
    pub max_frames_examined_per_nak: usize,
    /// Most datagrams (NAKs, STATUS, anything arriving on the publisher's socket) handled
    /// per second; `control_burst` more may arrive at once. Beyond it the I/O layer leaves
    /// them to the kernel, which drops what overflows the socket buffer, and the state
    /// machine sheds any it is handed anyway (counted in
    /// [`PublisherStats::control_shed`](super::PublisherStats)). This bounds the CPU a
    /// datagram flood can take from the publishing thread; honest control traffic is a
    /// few NAKs per loss event and one STATUS per receiver per `status_interval`.
    pub max_control_rate: u64,
    /// Datagrams accepted at once above `max_control_rate` (a NAK implosion after a loss
    /// that every receiver saw).
    pub control_burst: u64,
    /// First heartbeat after the last data.
    pub heartbeat_min: Duration,
    /// Longest gap between heartbeats, idle or not.
    pub heartbeat_max: Duration,
    /// Optional cap on new-data payload bytes per second; `offer` reports back-pressure
    /// beyond it.
    pub send_rate: Option<u64>,
    /// Burst allowance of `send_rate`, in bytes.
    pub send_burst: u64,
    /// Most unicast destinations added by receivers' STATUS frames (unicast fan-out for
    /// networks without multicast). A STATUS from a further address is refused and counted
    /// in [`PublisherStats::destinations_refused`](super::PublisherStats). Static
    /// destinations ([`Publisher::add_destination`](super::Publisher::add_destination)) do
    /// not count against it. At most 65536; lookups are linear in the count.
    pub max_destinations: usize,
    /// A destination added by STATUS that sent no STATUS for this long is dropped.
    /// Receivers send STATUS every `ReceiverConfig::status_interval`, which must be well
    /// below this (a third or less, so that two lost STATUS frames do not drop a receiver).
    /// Clamped to 1 ms ..= 1 day.
    pub destination_timeout: Duration,
    /// How new data is paced by the receivers' flow reports (receivers report by
    /// default: `ReceiverConfig::flow_window`). [`FlowControl::Max`] (default): no
    /// further than the fastest receiver can take; `Min`: the slowest; `None`: never
    /// wait. See docs/PROTOCOL.md §3.2.
    pub flow_control: FlowControl,
    /// Most receivers whose flow reports are tracked; reports from further addresses are
    /// counted in [`PublisherStats::flow_refused`](super::PublisherStats) and ignored.
    /// At most 4096; lookups are linear in the count.
    pub max_flow_receivers: usize,
    /// A receiver that sent no flow report for this long no longer holds new data back.
    /// Receivers report as they consume and, while heartbeats arrive, at least every
    /// `ReceiverConfig::flow_keepalive` (100 ms); this is the longest a crashed receiver
    /// can slow the publisher.
    /// Clamped to at least twice `heartbeat_max` and at most a day.
    pub flow_timeout: Duration,
    /// DATA a session sends before the first flow report arrives, counted like windows
    /// (frame length plus [`DATAGRAM_COST`](crate::proto::ring::DATAGRAM_COST) each; the
    /// receivers' report comes once they hear the first frame); then it waits for one,
    /// at most `flow_start_wait`, and with no report carries on unheld. Small enough for
    /// any socket buffer. At least one frame (`mtu`).
    pub initial_flow_window: usize,
    /// How long a session that used up `initial_flow_window` waits for the first flow
    /// report before it carries on with nothing held back (no receiver reports: none is
    /// there yet, or they report no flow). A held-back publisher heartbeats at
    /// `heartbeat_min`, doubling, and every reporting receiver answers those at once, so
    /// a few heartbeat intervals are enough. At most `flow_timeout`.
    pub flow_start_wait: Duration,
    /// Frame authentication (off by default): with a key, every frame sent carries a
    /// 20-byte trailer (key id and MAC) inside `mtu`, and NAKs and STATUS frames without a
    /// valid one are dropped and counted in
    /// [`PublisherStats::auth_failures`](super::PublisherStats). Session ids must then grow
    /// across restarts ([`crate::proto::session::session_id`]). See docs/SECURITY.md.
    pub auth: AuthConfig,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        Self {
            stream: 0,
            mtu: 1472,
            max_message_size: 1 << 20,
            linger: Duration::ZERO,
            ring_bytes: 16 << 20,
            ring_frames: 1 << 16,
            ring_messages: 1 << 22,
            initial_seq: 0,
            retransmit_rate: 64 << 20,
            retransmit_burst: 256 << 10,
            repair_linger: Duration::from_micros(200),
            repeat_linger: Duration::from_micros(40),
            repair_copies: 2,
            max_queued_repairs: 1024,
            max_frames_examined_per_nak: 1024,
            max_control_rate: 50_000,
            control_burst: 2048,
            heartbeat_min: Duration::from_millis(1),
            heartbeat_max: Duration::from_millis(100),
            send_rate: None,
            send_burst: 1 << 20,
            max_destinations: 64,
            destination_timeout: Duration::from_secs(5),
            flow_control: FlowControl::Max,
            max_flow_receivers: 64,
            flow_timeout: Duration::from_secs(1),
            initial_flow_window: 64 << 10,
            flow_start_wait: Duration::from_millis(10),
            auth: AuthConfig::default(),
        }
    }
}

impl PublisherConfig {
    /// Clamp every setting into the range the state machine relies on.
    pub fn sanitized(mut self) -> Self {
        // Room for a one-byte fragment and for a one-range UNAVAILABLE frame, each with its
        // authentication trailer if any.
        let min_mtu = (DataFrameWriter::EMPTY_LEN + wire::FRAGMENT_HEADER_LEN + 1)
            .max(wire::HEADER_LEN + wire::RANGES_PREFIX_LEN + wire::RANGE_LEN)
            + self.auth.trailer_len();
        self.mtu = self.mtu.clamp(min_mtu, wire::MAX_FRAME_LEN);
        // A zero rate would never refill its bucket; a day-long duration is "forever" and
        // keeps `Instant` arithmetic far from overflow.
        self.retransmit_rate = self.retransmit_rate.max(1);
        self.send_rate = self.send_rate.map(|r| r.max(1));
        let day = Duration::from_secs(86_400);
        self.linger = self.linger.min(day);
        self.repair_linger = self.repair_linger.min(day);
        self.repeat_linger = self.repeat_linger.min(self.repair_linger);
        self.repair_copies = self.repair_copies.clamp(1, 4);
        self.ring_bytes = self.ring_bytes.max(8 * self.mtu);
        self.ring_frames = self.ring_frames.max(8);
        self.ring_messages = self.ring_messages.max(8);
        self.max_queued_repairs = self.max_queued_repairs.max(1);
        self.max_frames_examined_per_nak = self.max_frames_examined_per_nak.max(1);
        self.max_control_rate = self.max_control_rate.max(1);
        self.control_burst = self.control_burst.max(1);
        self.heartbeat_min = self.heartbeat_min.clamp(Duration::from_micros(1), day);
        self.heartbeat_max = self.heartbeat_max.clamp(self.heartbeat_min, day);
        self.max_destinations = self.max_destinations.min(1 << 16);
        self.destination_timeout = self
            .destination_timeout
            .clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self.max_flow_receivers = self.max_flow_receivers.clamp(1, 1 << 12);
        self.flow_timeout = self.flow_timeout.min(day).max(self.heartbeat_max * 2);
        self.initial_flow_window = self.initial_flow_window.max(self.mtu);
        self.flow_start_wait = self.flow_start_wait.min(self.flow_timeout);
        // A message must fit in the unsent allowance, or it could never be offered.
        let room = self.frame_limit() - DataFrameWriter::EMPTY_LEN - wire::FRAGMENT_HEADER_LEN;
        let allowance_frames = (self.max_unsent_frames().saturating_sub(1) as u64)
            .min(self.max_unsent_seqs()) as usize;
        let allowance_bytes = self.max_unsent_bytes() / self.mtu * room;
        self.max_message_size = self
            .max_message_size
            .min(allowance_frames * room)
            .min(allowance_bytes);
        self
    }

    /// Largest frame before sealing: `mtu` less the authentication trailer, if any, so
    /// that sealed frames still fit `mtu`.
    pub fn frame_limit(&self) -> usize {
        self.mtu.saturating_sub(self.auth.trailer_len())
    }

    /// Bytes of offered-but-unsent frames allowed before `offer` pushes back. Half the ring,
    /// so unsent frames are never evicted.
    pub fn max_unsent_bytes(&self) -> usize {
        self.ring_bytes / 2 - self.mtu
    }

    /// Unsent frames allowed before `offer` pushes back.
    pub fn max_unsent_frames(&self) -> usize {
        self.ring_frames / 2
    }

    /// Unsent sequence numbers (fragments) allowed before `offer` pushes back.
    pub fn max_unsent_seqs(&self) -> u64 {
        self.ring_messages / 2
    }
}
