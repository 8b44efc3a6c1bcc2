//! Receiver configuration and its defaults.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::proto::auth::AuthConfig;

/// Where a receiver starts delivering a publisher it has not seen before.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinPolicy {
    /// At the first original DATA frame or heartbeat seen: nothing older is requested,
    /// except that a session younger than the reorder window is joined at its first
    /// sequence (DATA frames carry their distance from it), so a receiver that was already
    /// listening loses nothing when the session's first frames are dropped.
    #[default]
    FirstSeen,
    /// At the oldest sequence the publisher still retains, as its heartbeats announce:
    /// the retained backlog is recovered, then live data follows. Data arriving before the
    /// first heartbeat is left to be repaired.
    FromOldest,
}

/// Receiver settings. Defaults are safe on a LAN; docs/PROTOCOL.md explains each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReceiverConfig {
    /// Only accept this stream id; `None` accepts every stream.
    pub stream: Option<u32>,
    /// Where to start delivering a new publisher.
    pub join: JoinPolicy,
    /// Most publishers (source address, stream) tracked at once; frames from further ones
    /// are counted and dropped.
    pub max_sources: usize,
    /// Out-of-order fragments buffered per source (rounded up to a power of two, at most
    /// 65536). Also the span of sequence numbers a NAK may ask for ahead of delivery.
    pub reorder_window: usize,
    /// Bytes of out-of-order payload buffered per source.
    pub reorder_bytes: usize,
    /// Largest reassembled message; longer ones are discarded and counted.
    pub max_message_size: usize,
    /// Round-trip time assumed until one is measured (NAK to repair).
    pub initial_rtt: Duration,
    /// Upper bound of the random delay before the first NAK of a gap. Spreads the NAKs
    /// of many receivers missing the same data so that the first repair suppresses most.
    pub nak_backoff: Duration,
    /// Least delay before a gap's first NAK, whatever the backoff draws (default 0). For
    /// paths that reorder datagrams: a gap that a late datagram fills within this delay
    /// costs no NAK (a lone receiver otherwise NAKs at once, and a reordering then costs
    /// a needless repair). Every first repair is delayed by it.
    pub nak_delay_min: Duration,
    /// Expected number of receivers: shapes the random backoff (truncated exponential,
    /// RFC 5401 style) so that few fire early in a large group; 1 means no backoff. Used
    /// while the publisher advertises no group size (see `follow_group_size`).
    pub group_size_hint: u32,
    /// Size the backoff by the group the publisher advertises instead of
    /// `group_size_hint`, whenever it advertises one: its new DATA, HEARTBEAT and CLOSE
    /// frames carry how many receivers it hears flow reports from (rounded up to a power
    /// of two; "more than it can count" once its `max_flow_receivers` table refused one).
    /// A receiver told it is alone has no NAK to suppress and NAKs a gap at once (after
    /// `nak_delay_min`). Receivers that send no flow reports (`flow_window` 0) are not
    /// counted; such a receiver counts itself in, but in a group where many of them share
    /// losses, turn this off and set `group_size_hint`. Default on; off in
    /// [`for_group`](Self::for_group).
    pub follow_group_size: bool,
    /// Smallest interval between NAKs for the same gap.
    pub nak_retry_min: Duration,
    /// Largest interval between NAKs for the same gap.
    pub nak_retry_max: Duration,
    /// NAKs sent for one gap before it is reported lost.
    pub max_nak_tries: u32,
    /// Time from a gap's first NAK after which it is reported lost regardless.
    pub loss_deadline: Duration,
    /// A publisher silent for this long is reported inactive and its gaps lost.
    pub inactivity_timeout: Duration,
    /// Publishers to ask for the stream by unicast (networks without multicast): a STATUS
    /// frame goes to each address every `status_interval`, the first at the first
    /// `poll_transmit`. Use each publisher's data socket address (the source address of
    /// its frames, where NAKs go) so the STATUS can carry the session followed. Empty
    /// (default): multicast mode, no STATUS is sent. Duplicates are removed.
    ///
    /// The STATUS names `stream` (0 if `stream` is `None`): set `stream` in unicast mode
    /// unless the publishers use stream 0.
    pub status_to: Vec<SocketAddr>,
    /// Interval between STATUS frames to each `status_to` address. Must be well below the
    /// publisher's `PublisherConfig::destination_timeout` (5 s by default): a third of it
    /// or less, so that losing two STATUS frames in a row does not make the publisher drop
    /// this receiver. Default 1 s; clamped to 1 ms ..= 1 day.
    pub status_interval: Duration,
    /// DATA this receiver can take from a publisher (each frame counted as its length plus
    /// [`DATAGRAM_COST`](crate::proto::ring::DATAGRAM_COST)) beyond the next message it
    /// will deliver, reported to each publisher for flow control (STATUS with
    /// a flow report: at join, once a quarter of it was received, in reply to a heartbeat
    /// that says the publisher is held back, and in reply to any heartbeat once the last
    /// report is `flow_keepalive` old). Publishers hold new data back by it
    /// (`PublisherConfig::flow_control`). Size it below what the socket buffer holds;
    /// the transport lowers it to half the receive buffer size the kernel reports.
    /// Default 1 MiB; 0 sends no flow reports.
    pub flow_window: u32,
    /// A heartbeat is answered with a flow report (even when the publisher is not held
    /// back) once the last report to that publisher is this old, so that it keeps counting
    /// this receiver while data is slow or idle. Must be well below the publishers'
    /// `PublisherConfig::flow_timeout` (1 s by default) less their `heartbeat_max` (100 ms).
    /// Default 100 ms; clamped to 1 ms ..= 1 day.
    pub flow_keepalive: Duration,
    /// Frame authentication (off by default): with a key, NAK and STATUS frames are sealed
    /// and frames without a valid trailer are dropped and counted in
    /// [`ReceiverStats::auth_failures`](super::ReceiverStats). When it is required (not
    /// `accept_unauthenticated`), a source follows only sessions with a greater id than
    /// the one it follows, so replayed frames of older sessions cannot take it over. See
    /// docs/SECURITY.md.
    pub auth: AuthConfig,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            stream: None,
            join: JoinPolicy::FirstSeen,
            max_sources: 64,
            reorder_window: 16384,
            reorder_bytes: 16 << 20,
            max_message_size: 1 << 20,
            initial_rtt: Duration::from_micros(100),
            nak_backoff: Duration::from_micros(50),
            nak_delay_min: Duration::ZERO,
            group_size_hint: 8,
            follow_group_size: true,
            nak_retry_min: Duration::from_micros(60),
            nak_retry_max: Duration::from_millis(50),
            max_nak_tries: 20,
            loss_deadline: Duration::from_secs(2),
            inactivity_timeout: Duration::from_secs(5),
            status_to: Vec::new(),
            status_interval: Duration::from_secs(1),
            flow_window: 1 << 20,
            flow_keepalive: Duration::from_millis(100),
            auth: AuthConfig::default(),
        }
    }
}

impl ReceiverConfig {
    /// Defaults tuned for a group of `receivers` that share losses, on a network whose
    /// round trip is `rtt`.
    ///
    /// NAKs are unicast, so the only thing that suppresses a receiver's NAK is the repair
    /// triggered by an earlier one, one round trip after it. The backoff window must then
    /// span many round trips for a large group: `8 x log10(receivers) x rtt` (16 RTT for
    /// 100 receivers), measured in the simulator to keep NAKs per shared loss at or under
    /// 2 for 100 receivers (docs/PROTOCOL.md has the figures). A lone receiver NAKs at
    /// once (its retry interval still counts half a round trip of backoff). The caller
    /// states the group, so `follow_group_size` is off: the publisher's count, bounded
    /// by its `max_flow_receivers`, does not override `receivers`.
    pub fn for_group(receivers: u32, rtt: Duration) -> Self {
        let n = receivers.max(1);
        let factor = if n == 1 {
            0.5
        } else {
            8.0 * f64::from(n).log10().max(0.3)
        };
        Self {
            nak_backoff: rtt.mul_f64(factor),
            group_size_hint: n,
            follow_group_size: false,
            initial_rtt: rtt,
            ..Self::default()
        }
    }

    /// Clamp every setting into the range the state machine relies on.
    pub fn sanitized(mut self) -> Self {
        self.max_sources = self.max_sources.clamp(1, 1 << 16);
        self.reorder_window = self.reorder_window.clamp(16, 1 << 16).next_power_of_two();
        self.group_size_hint = self.group_size_hint.max(1);
        self.max_nak_tries = self.max_nak_tries.max(1);
        self.nak_retry_max = self.nak_retry_max.max(self.nak_retry_min);
        let day = Duration::from_secs(86_400);
        self.inactivity_timeout = self.inactivity_timeout.clamp(Duration::from_millis(1), day);
        self.loss_deadline = self.loss_deadline.min(day);
        self.initial_rtt = self.initial_rtt.min(day);
        self.nak_backoff = self.nak_backoff.min(day);
        self.nak_delay_min = self.nak_delay_min.min(day);
        self.nak_retry_min = self.nak_retry_min.min(day);
        self.nak_retry_max = self.nak_retry_max.min(day);
        self.status_interval = self
            .status_interval
            .clamp(Duration::from_millis(1), Duration::from_secs(86_400));
        self.flow_keepalive = self.flow_keepalive.clamp(Duration::from_millis(1), day);
        let mut seen = 0;
        while seen < self.status_to.len() {
            if self.status_to[..seen].contains(&self.status_to[seen]) {
                self.status_to.remove(seen);
            } else {
                seen += 1;
            }
        }
        self
    }
}
