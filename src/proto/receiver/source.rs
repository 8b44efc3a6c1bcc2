//! Per-publisher receive state: delivery cursor, reorder window, gaps, NAK timers,
//! reassembly.

use std::time::{Duration, Instant};

use rand::Rng;
use rand::rngs::SmallRng;

use super::gaps::GapList;
use super::window::ReorderWindow;
use super::{
    Event, JoinPolicy, LossReason, ReceiverConfig, ReceiverStats, RepairLatency, SourceId,
};
use crate::proto::wire::{self, DataFrame, FRAG_BEGIN, FRAG_END, MAX_RANGES, SeqRange};

/// What a HEARTBEAT or CLOSE announces.
#[derive(Clone, Copy, Debug)]
pub(super) struct Announce {
    /// First sequence not yet sent (for CLOSE: one past the last of the session).
    pub next_seq: u64,
    /// Oldest sequence still retained.
    pub oldest_seq: u64,
    /// Distance of `next_seq` from the session's first sequence.
    pub session_offset: u32,
    /// Whether this is a CLOSE.
    pub close: bool,
}

/// Lifecycle of a tracked source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Seen, but no join point yet (FromOldest waits for a heartbeat; FirstSeen ignores
    /// repairs meant for others).
    Awaiting,
    /// Delivering.
    Live,
    /// CLOSE received and everything up to the final sequence delivered or reported lost:
    /// kept as a tombstone so stray repairs do not re-join the session.
    Closed,
}

/// What the source needs from its receiver to process one input.
pub(super) struct Ctx<'a> {
    pub cfg: &'a ReceiverConfig,
    pub rng: &'a mut SmallRng,
    pub stats: &'a mut ReceiverStats,
    pub repairs: &'a mut RepairLatency,
    /// The time of the input being processed.
    pub now: Instant,
}

/// What a received datagram counts for toward the next flow report
/// ([`Source::note_flow`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowNote {
    /// A DATA frame of this many bytes.
    Data(usize),
    /// A HEARTBEAT.
    Heartbeat,
    /// Any other frame.
    Other,
}

/// Fragment reassembly into whole messages.
#[derive(Debug, Default)]
struct Assembler {
    buf: Vec<u8>,
    /// Sequence number of the message being assembled (or skipped as oversized).
    seq: u64,
    /// Fragments held for the current message.
    frags: u64,
    active: bool,
    /// The current message exceeds `max_message_size`: its fragments are skipped and a
    /// `Loss` is reported when its last fragment passes.
    oversized: bool,
}

impl Assembler {
    /// Deliver fragment `seq` (the next in order) and emit a message when one completes.
    #[allow(clippy::too_many_arguments)]
    fn push<F: FnMut(Event<'_>)>(
        &mut self,
        id: SourceId,
        session: u64,
        seq: u64,
        flags: u8,
        payload: &[u8],
        cfg: &ReceiverConfig,
        stats: &mut ReceiverStats,
        on_event: &mut F,
    ) {
        stats.fragments += 1;
        let (begin, end) = (flags & FRAG_BEGIN != 0, flags & FRAG_END != 0);
        if begin {
            // A message begins: whatever was pending was incomplete (a publisher bug).
            self.reset(stats);
            self.seq = seq;
            self.buf.clear();
            self.active = true;
        } else if !self.active {
            // The start of this message was lost (reported as Loss): discard the rest.
            stats.discarded_fragments += 1;
            return;
        }
        self.frags += 1;
        if !self.oversized && self.buf.len() + payload.len() > cfg.max_message_size {
            self.oversized = true;
            self.buf.clear();
        }
        if self.oversized {
            if end {
                // Never silent: the whole message is reported, in sequence order.
                stats.oversized_messages += 1;
                stats.discarded_fragments += self.frags;
                stats.lost_fragments = stats.lost_fragments.saturating_add(seq + 1 - self.seq);
                stats.loss_events += 1;
                let range = SeqRange::new(self.seq, seq + 1);
                self.active = false;
                self.oversized = false;
                self.frags = 0;
                on_event(Event::Loss {
                    source: id,
                    session,
                    range,
                    reason: LossReason::MessageTooLarge,
                });
            }
            return;
        }
        if begin && end {
            self.deliver_whole(id, session, seq, payload, stats, on_event);
            return;
        }
        self.buf.extend_from_slice(payload);
        if end {
            self.active = false;
            self.frags = 0;
            stats.messages += 1;
            stats.message_bytes += self.buf.len() as u64;
            on_event(Event::Message {
                source: id,
                session,
                seq: self.seq,
                payload: &self.buf,
            });
        }
    }

    /// Deliver fragment `seq`, a whole message by itself (no message being assembled).
    fn deliver_whole<F: FnMut(Event<'_>)>(
        &mut self,
        id: SourceId,
        session: u64,
        seq: u64,
        payload: &[u8],
        stats: &mut ReceiverStats,
        on_event: &mut F,
    ) {
        self.seq = seq;
        self.active = false;
        self.frags = 0;
        stats.messages += 1;
        stats.message_bytes += payload.len() as u64;
        on_event(Event::Message {
            source: id,
            session,
            seq,
            payload,
        });
    }

    /// Abandon the message being assembled (a loss or a new message cut it short).
    fn reset(&mut self, stats: &mut ReceiverStats) {
        if self.active {
            stats.discarded_fragments += self.frags;
        }
        self.active = false;
        self.oversized = false;
        self.frags = 0;
    }
}

/// Receive state for one (source address, stream) and its current session.
#[derive(Debug)]
pub(super) struct Source {
    pub id: SourceId,
    pub session: u64,
    retired: [Option<u64>; 4],
    retired_next: usize,
    pub phase: Phase,
    pub last_activity: Instant,
    /// Next sequence to deliver.
    cursor: u64,
    /// One past the highest sequence known to exist.
    highest: u64,
    final_seq: Option<u64>,
    window: ReorderWindow,
    gaps: GapList,
    assembler: Assembler,
    srtt: Duration,
    /// The group size the publisher advertised in its latest original DATA, HEARTBEAT or
    /// CLOSE frame (see [`wire::group_size`]), if any.
    pub group: Option<u32>,
    /// Earliest NAK or give-up deadline of the gaps (not inactivity).
    pub deadline: Option<Instant>,
    /// Bytes of DATA received since the last flow report.
    flow_bytes: usize,
    /// A flow report to this source is due.
    flow_due: bool,
    /// When the last flow report to this source was sent.
    flow_sent_at: Option<Instant>,
}

impl Source {
    pub fn new(id: SourceId, session: u64, now: Instant, cfg: &ReceiverConfig) -> Self {
        Self {
            id,
            session,
            retired: [None; 4],
            retired_next: 0,
            phase: Phase::Awaiting,
            last_activity: now,
            cursor: 0,
            highest: 0,
            final_seq: None,
            window: ReorderWindow::new(cfg.reorder_window, cfg.reorder_bytes),
            gaps: GapList::default(),
            assembler: Assembler::default(),
            srtt: cfg.initial_rtt,
            group: None,
            deadline: None,
            flow_bytes: 0,
            flow_due: false,
            flow_sent_at: None,
        }
    }

    /// Count a datagram toward the next flow report: a DATA frame's length (plus the
    /// per-datagram cost the publisher counts) moves the position on; `force` makes a
    /// report due regardless (a held-back publisher's heartbeat, a join), and so does a
    /// heartbeat once the last report is `flow_keepalive` old at `now`, or data adding up to
    /// a quarter of `flow_window` since the last report. Returns whether a report is due.
    /// Only a live source is reported to.
    pub fn note_flow(
        &mut self,
        note: FlowNote,
        force: bool,
        now: Instant,
        cfg: &ReceiverConfig,
    ) -> bool {
        if self.phase != Phase::Live {
            return false;
        }
        let stale = match note {
            FlowNote::Data(len) => {
                self.flow_bytes += len + crate::proto::ring::DATAGRAM_COST as usize;
                false
            }
            FlowNote::Heartbeat => self
                .flow_sent_at
                .is_none_or(|t| now >= t + cfg.flow_keepalive),
            FlowNote::Other => false,
        };
        if force || stale || self.flow_bytes >= cfg.flow_window as usize / 4 {
            self.flow_due = true;
        }
        self.flow_due
    }

    /// Make a flow report due if the source is live (leaving: the last report).
    pub fn force_flow(&mut self) -> bool {
        self.flow_due = self.phase == Phase::Live;
        self.flow_due
    }

    /// The flow report due, if any, with `window`, sent at `now`; it is then no longer due.
    pub fn take_flow_report(&mut self, window: u32, now: Instant) -> Option<wire::FlowReport> {
        if !self.flow_due {
            return None;
        }
        self.flow_due = false;
        self.flow_bytes = 0;
        self.flow_sent_at = Some(now);
        Some(wire::FlowReport {
            position: self.cursor,
            window,
        })
    }

    /// Whether `session` is a session this source had before (stale frames are dropped).
    pub fn is_retired(&self, session: u64) -> bool {
        self.retired.contains(&Some(session))
    }

    /// Report everything of the current session as delivered or lost with `reason`.
    pub fn flush<F: FnMut(Event<'_>)>(
        &mut self,
        reason: LossReason,
        ctx: &mut Ctx<'_>,
        on_event: &mut F,
    ) {
        if self.phase == Phase::Live {
            self.gaps.mark_all_lost(reason);
            self.advance(ctx, on_event);
        }
        self.assembler.reset(ctx.stats);
    }

    /// Replace the session: the old one is flushed by the caller first.
    pub fn restart(&mut self, session: u64, now: Instant) {
        let slot = self.retired_next % self.retired.len();
        self.retired[slot] = Some(self.session);
        self.retired_next += 1;
        self.session = session;
        self.phase = Phase::Awaiting;
        self.last_activity = now;
        self.final_seq = None;
        self.window.clear();
        self.gaps.clear();
        self.group = None;
        self.deadline = None;
        self.flow_bytes = 0;
        self.flow_due = false;
        self.flow_sent_at = None;
    }

    fn join<F: FnMut(Event<'_>)>(&mut self, start: u64, ctx: &mut Ctx<'_>, on_event: &mut F) {
        self.cursor = start;
        self.highest = start;
        self.phase = Phase::Live;
        ctx.stats.joins += 1;
        on_event(Event::Joined {
            source: self.id,
            session: self.session,
            start_seq: start,
        });
    }

    /// Random first-NAK delay: truncated exponential over `[0, nak_backoff]` (RFC 5401
    /// style), so that in a group of N receivers few fire before the first repair arrives.
    /// N is the group the publisher advertises (`group`, if followed; one more if this
    /// receiver sends no flow reports, so the publisher does not count it) or
    /// `group_size_hint`; a lone receiver has nothing to suppress and waits for nothing
    /// but `nak_delay_min`, which bounds the delay from below in every case.
    fn backoff(group: Option<u32>, ctx: &mut Ctx<'_>) -> Duration {
        let cfg = ctx.cfg;
        let t = cfg.nak_backoff.as_secs_f64();
        let n = match group {
            Some(n) if cfg.follow_group_size && cfg.flow_window == 0 => n.saturating_add(1),
            Some(n) if cfg.follow_group_size => n,
            _ => cfg.group_size_hint,
        };
        if t <= 0.0 || n == 1 {
            return cfg.nak_delay_min;
        }
        let lambda = f64::from(n).ln() + 1.0;
        let u: f64 = ctx.rng.random();
        let x = t / lambda * (u * (lambda.exp() - 1.0)).ln_1p();
        Duration::from_secs_f64(x.clamp(0.0, t)).max(cfg.nak_delay_min)
    }

    /// Wait after the `tries`-th NAK of a gap before the next: two round trips plus the
    /// backoff window, doubling per try, within `[nak_retry_min, nak_retry_max]`.
    fn retry_interval(srtt: Duration, cfg: &ReceiverConfig, tries: u32) -> Duration {
        let base = (srtt * 2 + cfg.nak_backoff).max(cfg.nak_retry_min);
        base.saturating_mul(1 << tries.saturating_sub(1).min(16))
            .min(cfg.nak_retry_max)
    }

    /// Extend the known range to `end` (exclusive), opening a gap for what is missing.
    fn extend_to(&mut self, end: u64, now: Instant, ctx: &mut Ctx<'_>) {
        if end > self.highest {
            let at = now + Self::backoff(self.group, ctx);
            self.gaps.push(SeqRange::new(self.highest, end), now, at);
            ctx.stats.gaps += 1;
            self.highest = end;
        }
    }

    pub fn on_data<F: FnMut(Event<'_>)>(
        &mut self,
        frame: &DataFrame<'_>,
        now: Instant,
        ctx: &mut Ctx<'_>,
        on_event: &mut F,
    ) {
        match self.phase {
            Phase::Closed => {
                ctx.stats.duplicates += u64::from(frame.count);
                return;
            }
            Phase::Awaiting => {
                let young = u64::from(frame.session_offset()) < self.window.capacity();
                let join = match ctx.cfg.join {
                    JoinPolicy::FirstSeen => true,
                    // The oldest retained of a session younger than the reorder window is
                    // its start: no need to wait for a heartbeat (up to `heartbeat_max` into
                    // a continuous stream) and then repair everything seen meanwhile.
                    JoinPolicy::FromOldest => young,
                };
                if join && !frame.is_retransmit() {
                    // A session younger than the reorder window is joined at its start, so
                    // a receiver that was listening loses nothing to a dropped first frame.
                    let start = self.young_session_start(frame.first_seq, frame.session_offset());
                    self.join(start, ctx, on_event);
                } else {
                    ctx.stats.dropped_before_join += u64::from(frame.count);
                    return;
                }
            }
            Phase::Live => {}
        }
        let retransmit = frame.is_retransmit();
        for frag in frame.fragments() {
            self.on_fragment(
                frag.seq,
                frag.flags,
                frag.payload,
                retransmit,
                now,
                ctx,
                on_event,
            );
        }
        self.finish(ctx, now);
    }

    /// The in-order fast path of [`on_data`](Self::on_data): a frame holding one whole
    /// message, the next in sequence, while nothing is missing, held or half-assembled, is
    /// delivered at once, with exactly the state changes and counts `on_data` would make.
    /// Returns false, having changed nothing, when any of that does not hold (then use
    /// `on_data`). The reorder window is not looked at: what it holds lies between the
    /// cursor and the highest sequence seen, and those are equal here.
    pub fn deliver_next<F: FnMut(Event<'_>)>(
        &mut self,
        frame: &DataFrame<'_>,
        now: Instant,
        cfg: &ReceiverConfig,
        stats: &mut ReceiverStats,
        on_event: &mut F,
    ) -> bool {
        let seq = frame.first_seq;
        if frame.count != 1
            || self.phase != Phase::Live
            || seq != self.cursor
            || seq != self.highest
            || self.final_seq.is_some()
            || self.assembler.active
            || !self.gaps.is_empty()
        {
            return false;
        }
        let Some(frag) = frame.fragments().next() else {
            return false;
        };
        let whole = FRAG_BEGIN | FRAG_END;
        if frag.flags & whole != whole || frag.payload.len() > cfg.max_message_size {
            return false;
        }
        self.last_activity = now;
        if !frame.is_retransmit() {
            self.group = wire::group_size(frame.header.flags);
        }
        self.highest = seq + 1;
        self.cursor = seq + 1;
        self.deadline = None;
        stats.fragments += 1;
        self.assembler
            .deliver_whole(self.id, self.session, seq, frag.payload, stats, on_event);
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn on_fragment<F: FnMut(Event<'_>)>(
        &mut self,
        seq: u64,
        flags: u8,
        payload: &[u8],
        retransmit: bool,
        now: Instant,
        ctx: &mut Ctx<'_>,
        on_event: &mut F,
    ) {
        if seq < self.cursor || self.window.contains(seq) {
            ctx.stats.duplicates += 1;
            return;
        }
        if self.final_seq.is_some_and(|f| seq >= f) {
            // Past the announced end: never sent by the publisher that closed, and after
            // `Closed` nothing of the session may be delivered (the rest of a frame that
            // straddles the end would otherwise follow it).
            ctx.stats.beyond_close += 1;
            return;
        }
        let in_order = seq == self.cursor;
        if !in_order
            && (seq - self.cursor >= self.window.capacity()
                || !self.window.store(seq, flags, payload))
        {
            // No room to hold it: leave it missing (it will be requested again later).
            ctx.stats.out_of_window += 1;
            self.extend_to(seq + 1, now, ctx);
            return;
        }
        if seq >= self.highest {
            self.extend_to(seq, now, ctx);
            self.highest = seq + 1;
        } else if let Some(gap) = self.gaps.fill(seq, retransmit.then_some(now)) {
            if gap.tries > 0 {
                ctx.stats.recovered += 1;
                if in_order {
                    ctx.repairs
                        .record(now.saturating_duration_since(gap.detected));
                } else {
                    self.window.mark_repaired(seq, gap.detected);
                }
                if let (1, Some(sent), true) = (gap.tries, gap.first_nak, retransmit) {
                    // Karn: only unambiguous first-try repairs update the RTT estimate.
                    let sample = now.saturating_duration_since(sent);
                    self.srtt = (self.srtt * 7 + sample) / 8;
                }
            } else {
                ctx.stats.reordered += 1;
            }
        }
        if in_order {
            self.assembler.push(
                self.id,
                self.session,
                seq,
                flags,
                payload,
                ctx.cfg,
                ctx.stats,
                on_event,
            );
            self.cursor += 1;
            self.advance(ctx, on_event);
        }
    }

    /// Deliver held fragments and report lost gaps in sequence order, as far as possible.
    fn advance<F: FnMut(Event<'_>)>(&mut self, ctx: &mut Ctx<'_>, on_event: &mut F) {
        loop {
            if self.final_seq.is_some_and(|f| self.cursor >= f) {
                break; // The session ends here: held fragments past it are not delivered.
            }
            if self.window.contains(self.cursor) {
                let (flags, payload, detected) = self.window.take(self.cursor);
                if let Some(d) = detected {
                    ctx.repairs.record(ctx.now.saturating_duration_since(d));
                }
                self.assembler.push(
                    self.id,
                    self.session,
                    self.cursor,
                    flags,
                    payload,
                    ctx.cfg,
                    ctx.stats,
                    on_event,
                );
                self.cursor += 1;
                continue;
            }
            match self.gaps.front() {
                Some(g) if g.range.start == self.cursor && g.lost.is_some() => {
                    let (range, reason) = (g.range, g.lost.expect("checked"));
                    self.gaps.pop_front();
                    self.assembler.reset(ctx.stats);
                    // Saturating: forged windows can report ranges of nearly 2^64.
                    ctx.stats.lost_fragments = ctx.stats.lost_fragments.saturating_add(range.len());
                    ctx.stats.loss_events += 1;
                    on_event(Event::Loss {
                        source: self.id,
                        session: self.session,
                        range,
                        reason,
                    });
                    self.cursor = range.end;
                }
                _ => break,
            }
        }
        if self.phase == Phase::Live && self.final_seq.is_some_and(|f| self.cursor >= f) {
            self.phase = Phase::Closed;
            self.gaps.clear();
            // Whatever is held lies past the end: never to be delivered.
            self.window.clear();
            self.assembler.reset(ctx.stats);
            self.deadline = None;
            ctx.stats.closes += 1;
            on_event(Event::Closed {
                source: self.id,
                session: self.session,
            });
        }
    }

    /// Where a FirstSeen receiver joins, given the first sequence it saw and that
    /// sequence's distance from the session's start: the session's start if the session is
    /// younger than the reorder window, else the sequence seen.
    fn young_session_start(&self, seen: u64, session_offset: u32) -> u64 {
        let offset = u64::from(session_offset);
        if offset < self.window.capacity() {
            seen - offset.min(seen)
        } else {
            seen
        }
    }

    /// HEARTBEAT or CLOSE: the publisher's window (and, for CLOSE, its end).
    pub fn on_control<F: FnMut(Event<'_>)>(
        &mut self,
        a: Announce,
        now: Instant,
        ctx: &mut Ctx<'_>,
        on_event: &mut F,
    ) {
        let Announce {
            next_seq,
            oldest_seq,
            session_offset,
            close,
        } = a;
        match self.phase {
            Phase::Closed => return,
            Phase::Awaiting => {
                let start = match ctx.cfg.join {
                    JoinPolicy::FirstSeen => self.young_session_start(next_seq, session_offset),
                    JoinPolicy::FromOldest => oldest_seq,
                };
                self.join(start, ctx, on_event);
            }
            Phase::Live => {}
        }
        if close {
            self.final_seq = Some(next_seq);
        }
        self.extend_to(next_seq, now, ctx);
        self.gaps
            .mark_lost_below(oldest_seq, LossReason::Unavailable);
        self.advance(ctx, on_event);
        self.finish(ctx, now);
    }

    /// UNAVAILABLE: everything below `range.end` is gone for good.
    pub fn on_unavailable<F: FnMut(Event<'_>)>(
        &mut self,
        range: SeqRange,
        now: Instant,
        ctx: &mut Ctx<'_>,
        on_event: &mut F,
    ) {
        if self.phase != Phase::Live || range.end <= self.cursor {
            return;
        }
        self.extend_to(range.end, now, ctx);
        if self
            .gaps
            .mark_lost_below(range.end, LossReason::Unavailable)
        {
            self.advance(ctx, on_event);
        }
        self.finish(ctx, now);
    }

    /// Give up on gaps past their tries or deadline; returns whether any was given up.
    pub fn on_timeout<F: FnMut(Event<'_>)>(
        &mut self,
        now: Instant,
        ctx: &mut Ctx<'_>,
        on_event: &mut F,
    ) {
        if self.phase != Phase::Live || self.deadline.is_none_or(|d| d > now) {
            return;
        }
        let max_tries = ctx.cfg.max_nak_tries;
        let mut any = false;
        for g in self.gaps.iter_mut() {
            if g.lost.is_some() {
                continue;
            }
            let tries_out = g.unanswered >= max_tries && g.nak_at <= now;
            let deadline_out = g.since.is_some_and(|t| t + ctx.cfg.loss_deadline <= now);
            if tries_out || deadline_out {
                g.lost = Some(LossReason::Timeout);
                any = true;
            }
        }
        if any {
            self.advance(ctx, on_event);
        }
        self.finish(ctx, now);
    }

    /// Whether a NAK is due at `now`.
    pub fn nak_due(&self, now: Instant) -> bool {
        self.phase == Phase::Live && self.deadline.is_some_and(|d| d <= now)
    }

    /// Collect the ranges to NAK now into `out`; returns how many, and whether every one
    /// was NAKed before and is still unanswered (a repeat: see [`wire::FLAG_REPEAT`]).
    /// Updates the gaps' timers.
    pub fn collect_nak(
        &mut self,
        now: Instant,
        cfg: &ReceiverConfig,
        out: &mut [SeqRange; MAX_RANGES],
    ) -> (usize, bool) {
        let limit = self.cursor.saturating_add(self.window.capacity());
        let mut n = 0;
        let mut repeat = true;
        let mut i = 0;
        while let Some(&g) = self.gaps.get(i) {
            if n == MAX_RANGES {
                break;
            }
            if g.range.start >= limit {
                break;
            }
            i += 1;
            if g.lost.is_some() || g.nak_at > now || g.unanswered >= cfg.max_nak_tries {
                continue;
            }
            if g.range.end > limit {
                // Ask only for what the window can hold; the rest stays a fresh gap,
                // requested as soon as delivery makes room, not after this part's retries.
                self.gaps.split(i - 1, limit);
            }
            let g = self.gaps.get_mut(i - 1);
            out[n] = g.range;
            n += 1;
            repeat &= g.unanswered > 0;
            g.tries += 1;
            g.unanswered += 1;
            g.first_nak.get_or_insert(now);
            g.since.get_or_insert(now);
            g.nak_at = now + Self::retry_interval(self.srtt, cfg, g.unanswered);
        }
        self.update_deadline(cfg);
        (n, repeat && n > 0)
    }

    fn finish(&mut self, ctx: &mut Ctx<'_>, now: Instant) {
        let _ = now;
        self.update_deadline(ctx.cfg);
    }

    /// Recompute the earliest NAK or give-up deadline.
    fn update_deadline(&mut self, cfg: &ReceiverConfig) {
        if self.phase != Phase::Live || self.gaps.is_empty() {
            self.deadline = None;
            return;
        }
        let limit = self.cursor.saturating_add(self.window.capacity());
        let mut d: Option<Instant> = None;
        for g in self.gaps.iter() {
            if g.range.start >= limit {
                break;
            }
            if g.lost.is_some() {
                continue;
            }
            let mut t = g.nak_at;
            if let Some(since) = g.since {
                t = t.min(since + cfg.loss_deadline);
            }
            d = Some(d.map_or(t, |d| d.min(t)));
        }
        self.deadline = d;
    }

    /// Number of gaps tracked (bounded by the reorder window).
    pub fn gap_count(&self) -> usize {
        self.gaps.len()
    }

    /// Out-of-order payload bytes held.
    pub fn held_bytes(&self) -> usize {
        self.window.bytes()
    }

    /// Heap bytes of payload buffers: reorder window slots and the reassembly buffer.
    pub fn buffer_bytes(&self) -> usize {
        self.window.allocated() + self.assembler.buf.capacity()
    }
}
