//! Receiver-driven flow control: the publisher sends new data no further ahead than the
//! windows its receivers report (STATUS frames with [`wire::STATUS_FLOW`]).
//!
//! Positions here are offsets in the session's stream of DATA frames (the sum, over all
//! frames before, of each frame's length plus
//! [`DATAGRAM_COST`](crate::proto::ring::DATAGRAM_COST)), which the retransmit ring records
//! per frame. A receiver reports the sequence number it will deliver next and a window in
//! the same units; the
//! publisher turns that into a limit: the position of the frame holding that sequence
//! number plus the window. A new frame goes out only if it ends at or below the limit of
//! the fastest ([`FlowControl::Max`]) or the slowest ([`FlowControl::Min`]) receiver
//! heard from within `flow_timeout`.
//!
//! Receivers report once they hear the first frame, so a new session starts with a small
//! initial window (`initial_flow_window`) and, once it is used up, waits for the first
//! report, for at most `flow_start_wait`: a slow subscriber is not flooded before it could
//! say so, and a publisher nobody reports to (no subscriber yet, or subscribers that
//! send no reports) carries on after the wait with nothing held back. Once the last
//! tracked receiver leaves or goes silent, nothing is held back either, until a receiver
//! reports again.
//!
//! [`wire::STATUS_FLOW`]: crate::proto::wire::STATUS_FLOW

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How a publisher paces new data by its receivers' flow reports.
///
/// Whatever the mode, a receiver that stops reporting for `flow_timeout` (it crashed, or
/// its reports cannot reach the publisher) no longer holds anything back, and a receiver
/// that leaves cleanly stops at once: flow control can slow a publisher, never stall it
/// for longer than that. Repairs, heartbeats and UNAVAILABLE notices are never held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowControl {
    /// Never wait for receivers: a receiver slower than the publisher loses what
    /// overflows its socket buffer and reports it as lost (if the ring no longer holds
    /// it). Reports are still tracked, to count the receivers: the group size the
    /// publisher advertises for their NAK backoff.
    None,
    /// Go no further than the fastest reporting receiver can take (the default): a
    /// publisher never outruns every receiver (one subscriber on the same host, say),
    /// while one slow receiver does not slow the others.
    #[default]
    Max,
    /// Go no further than the slowest reporting receiver can take: no receiver is
    /// overrun while it keeps reporting, and the whole group runs at its pace.
    Min,
}

/// One receiver's latest report.
#[derive(Clone, Copy, Debug)]
struct FlowReceiver {
    addr: SocketAddr,
    /// Byte position up to which this receiver allows new frames.
    limit: u64,
    expires_at: Instant,
}

/// What a report did to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Reported {
    /// A tracked receiver's limit was refreshed.
    Updated,
    /// A new receiver was added.
    Added,
    /// A new receiver was refused: `max_flow_receivers` are tracked.
    Refused,
}

/// Before the first report of the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Startup {
    /// No receiver has reported yet: new data may go `initial` bytes; once that is held
    /// back (since the instant given), it waits for a report up to `timeout`.
    Waiting(Option<Instant>),
    /// A receiver reported, or the wait ran out.
    Over,
}

/// The receivers whose reports pace the publisher, bounded in number.
#[derive(Debug)]
pub(super) struct FlowTable {
    mode: FlowControl,
    max: usize,
    timeout: Duration,
    /// Bytes a session may send before its first report.
    initial: u64,
    /// How long the start-up waits for the first report once `initial` is used up.
    start_wait: Duration,
    startup: Startup,
    receivers: Vec<FlowReceiver>,
    /// The limit in force (by `mode`), `None` when nothing holds new data back.
    limit: Option<u64>,
    /// Earliest `expires_at`, if any receiver is tracked.
    next_expiry: Option<Instant>,
    /// Until when a refused report (a full table) leaves the group size unknown.
    refused_until: Option<Instant>,
}

impl FlowTable {
    /// A table for `mode`, tracking at most `max` receivers, each for `timeout` after its
    /// latest report, allowing `initial` bytes before the first report and then waiting
    /// up to `start_wait` for it. All memory is allocated here.
    pub fn new(
        mode: FlowControl,
        max: usize,
        timeout: Duration,
        initial: u64,
        start_wait: Duration,
    ) -> Self {
        let on = mode != FlowControl::None;
        Self {
            mode,
            max,
            timeout,
            initial,
            start_wait,
            startup: if on {
                Startup::Waiting(None)
            } else {
                Startup::Over
            },
            // Tracked in every mode: the receivers heard from are the group size the
            // publisher advertises, with flow control or without.
            receivers: Vec::with_capacity(max),
            limit: on.then_some(initial),
            next_expiry: None,
            refused_until: None,
        }
    }

    /// New data is held back at `now`: before the first report, start the wait for it.
    pub fn held(&mut self, now: Instant) {
        if self.startup == Startup::Waiting(None) {
            self.startup = Startup::Waiting(Some(now));
            let end = now + self.start_wait;
            self.next_expiry = Some(self.next_expiry.map_or(end, |e| e.min(end)));
        }
    }

    /// The byte position new frames must end at or below, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// Receivers tracked.
    pub fn len(&self) -> usize {
        self.receivers.len()
    }

    /// How many receivers the publisher hears from at `now`, for the group size it
    /// advertises: the receivers tracked, or `usize::MAX` (more than it can count) while a
    /// report refused for a full table is less than `timeout` old.
    pub fn group(&self, now: Instant) -> usize {
        if self.refused_until.is_some_and(|t| t > now) {
            usize::MAX
        } else {
            self.receivers.len()
        }
    }

    /// When the next tracked receiver expires, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.next_expiry
    }

    /// A report from `from` allowing frames up to byte position `limit`. A receiver's limit
    /// never moves back (reports can arrive out of order).
    pub fn report(&mut self, now: Instant, from: SocketAddr, limit: u64) -> Reported {
        let expires_at = now + self.timeout;
        let result = if let Some(r) = self.receivers.iter_mut().find(|r| r.addr == from) {
            r.limit = r.limit.max(limit);
            r.expires_at = expires_at;
            Reported::Updated
        } else {
            if self.receivers.len() >= self.max {
                // Make room from silent entries before refusing.
                self.expire(now);
            }
            if self.receivers.len() >= self.max {
                self.refused_until = Some(expires_at);
                return Reported::Refused;
            }
            debug_assert!(self.receivers.len() < self.receivers.capacity());
            self.startup = Startup::Over;
            self.receivers.push(FlowReceiver {
                addr: from,
                limit,
                expires_at,
            });
            Reported::Added
        };
        self.next_expiry = Some(self.next_expiry.map_or(expires_at, |e| e.min(expires_at)));
        self.recompute();
        result
    }

    /// `from` left (a STATUS with the LEAVING flag); returns whether it was tracked.
    pub fn leave(&mut self, from: SocketAddr) -> bool {
        let Some(i) = self.receivers.iter().position(|r| r.addr == from) else {
            return false;
        };
        self.receivers.swap_remove(i);
        self.recompute();
        true
    }

    /// Drop receivers silent since `flow_timeout` before `now` (and end a start-up wait
    /// that ran out); returns how many receivers.
    pub fn expire(&mut self, now: Instant) -> usize {
        if self.next_expiry.is_none_or(|e| e > now) {
            return 0;
        }
        if let Startup::Waiting(Some(since)) = self.startup
            && since + self.start_wait <= now
        {
            self.startup = Startup::Over;
        }
        let before = self.receivers.len();
        self.receivers.retain(|r| r.expires_at > now);
        self.next_expiry = self.receivers.iter().map(|r| r.expires_at).min();
        if let Startup::Waiting(Some(since)) = self.startup {
            let end = since + self.start_wait;
            self.next_expiry = Some(self.next_expiry.map_or(end, |e| e.min(end)));
        }
        self.recompute();
        before - self.receivers.len()
    }

    fn recompute(&mut self) {
        let limits = self.receivers.iter().map(|r| r.limit);
        self.limit = match self.mode {
            FlowControl::None => None,
            _ if self.receivers.is_empty() => match self.startup {
                Startup::Waiting(_) => Some(self.initial),
                Startup::Over => None,
            },
            FlowControl::Max => limits.max(),
            FlowControl::Min => limits.min(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn max_follows_the_fastest_min_the_slowest() {
        let t0 = Instant::now();
        for (mode, want) in [(FlowControl::Max, 5000), (FlowControl::Min, 1000)] {
            let mut t = FlowTable::new(mode, 4, Duration::from_secs(1), 64, Duration::from_secs(1));
            assert_eq!(t.limit(), Some(64), "the initial window");
            assert_eq!(t.report(t0, addr(1), 1000), Reported::Added);
            assert_eq!(t.report(t0, addr(2), 5000), Reported::Added);
            assert_eq!(t.limit(), Some(want));
            // A late, older report does not move a receiver back.
            assert_eq!(t.report(t0, addr(2), 10), Reported::Updated);
            assert_eq!(t.limit(), Some(want));
            assert!(t.leave(addr(1)) && !t.leave(addr(1)));
            assert_eq!(t.limit(), Some(5000));
            // The last one leaves: nobody reports, nothing is held back.
            assert!(t.leave(addr(2)));
            assert_eq!(t.limit(), None);
        }
        let mut off = FlowTable::new(
            FlowControl::None,
            4,
            Duration::from_secs(1),
            64,
            Duration::from_secs(1),
        );
        assert_eq!(off.limit(), None);
        // Off, reports still count the receivers, but never hold anything back.
        assert_eq!(off.report(t0, addr(1), 1000), Reported::Added);
        assert_eq!(off.report(t0, addr(1), 2000), Reported::Updated);
        assert_eq!((off.limit(), off.len()), (None, 1));
        assert_eq!(off.expire(t0 + Duration::from_secs(1)), 1);
        assert_eq!((off.limit(), off.len()), (None, 0));
    }

    #[test]
    fn the_start_up_wait_ends_at_the_first_report_or_after_the_timeout() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = FlowTable::new(FlowControl::Max, 4, ms(500), 64, ms(100));
        assert_eq!((t.limit(), t.next_expiry()), (Some(64), None));
        // Held back at 10 ms: the wait runs until 110 ms.
        t.held(t0 + ms(10));
        t.held(t0 + ms(50));
        assert_eq!(t.next_expiry(), Some(t0 + ms(110)));
        t.expire(t0 + ms(109));
        assert_eq!(t.limit(), Some(64));
        t.expire(t0 + ms(110));
        assert_eq!(
            (t.limit(), t.next_expiry()),
            (None, None),
            "nobody reported"
        );
        // A late first report still starts flow control.
        t.report(t0 + ms(120), addr(1), 500);
        assert_eq!(t.limit(), Some(500));

        let mut t = FlowTable::new(FlowControl::Min, 4, ms(500), 64, ms(100));
        t.held(t0);
        t.report(t0 + ms(5), addr(1), 500);
        assert_eq!(t.limit(), Some(500));
        t.expire(t0 + ms(100));
        assert_eq!(t.limit(), Some(500), "the wait ended at the report");
    }

    #[test]
    fn bounded_and_expiring() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = FlowTable::new(FlowControl::Min, 2, ms(100), 64, ms(100));
        assert_eq!(t.report(t0, addr(1), 100), Reported::Added);
        assert_eq!(t.report(t0 + ms(50), addr(2), 200), Reported::Added);
        assert_eq!(t.group(t0 + ms(50)), 2);
        assert_eq!(t.report(t0 + ms(60), addr(3), 300), Reported::Refused);
        assert_eq!((t.len(), t.limit()), (2, Some(100)));
        // A receiver it could not count: the group is more than it knows, for a timeout.
        assert_eq!(t.group(t0 + ms(159)), usize::MAX);
        assert_eq!(t.group(t0 + ms(160)), 2);
        assert_eq!(t.next_expiry(), Some(t0 + ms(100)));
        assert_eq!(t.expire(t0 + ms(99)), 0);
        // The first receiver goes silent: it stops holding the publisher back.
        assert_eq!(t.expire(t0 + ms(100)), 1);
        assert_eq!((t.len(), t.limit()), (1, Some(200)));
        // A full table makes room from expired entries before refusing.
        assert_eq!(t.report(t0 + ms(120), addr(4), 400), Reported::Added);
        assert_eq!(t.report(t0 + ms(200), addr(5), 500), Reported::Added);
        assert_eq!((t.len(), t.limit()), (2, Some(400)));
        assert_eq!(t.expire(t0 + ms(400)), 2);
        assert_eq!((t.len(), t.limit(), t.next_expiry()), (0, None, None));
    }
}
