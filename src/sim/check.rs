//! The delivery invariant, checked against what publishers really did.
//!
//! For every receiver and every publisher session it joined:
//! - messages arrive in strictly increasing sequence order, each exactly as published;
//! - every published message from the join point on is either delivered or overlaps a
//!   range the receiver reported lost, never both (for a session killed without CLOSE,
//!   only up to the last sequence the receiver could know of);
//! - a range is reported lost only when the data had really left the publisher's ring, or
//!   the publisher was gone, at the time of the report.

use std::fmt;
use std::time::Duration;

use super::{Logged, payload_byte};
use crate::proto::OwnedEvent;
use crate::proto::SourceId;
use crate::proto::wire::SeqRange;

/// What one publisher session did, as the simulator saw it.
#[derive(Clone, Debug)]
pub struct SessionRecord {
    /// The publisher.
    pub source: SourceId,
    /// Its session id.
    pub session: u64,
    /// `(first sequence, fragments, payload length)` of every message published.
    pub published: Vec<(u64, u64, usize)>,
    /// When the session stopped serving (closed and lingered, or killed).
    pub gone_at: Option<Duration>,
    /// `(time, oldest retained)` each time the oldest retained sequence changed.
    pub oldest: Vec<(Duration, u64)>,
    /// Whether the session ended without CLOSE.
    pub killed: bool,
}

impl SessionRecord {
    pub(super) fn new(source: SourceId, session: u64) -> Self {
        Self {
            source,
            session,
            published: Vec::new(),
            gone_at: None,
            oldest: Vec::new(),
            killed: false,
        }
    }

    pub(super) fn note_oldest(&mut self, at: Duration, oldest: u64) {
        if self.oldest.last().is_none_or(|&(_, o)| o != oldest) {
            self.oldest.push((at, oldest));
        }
    }

    /// Oldest sequence retained at virtual time `t`.
    pub fn oldest_at(&self, t: Duration) -> u64 {
        let i = self.oldest.partition_point(|&(at, _)| at <= t);
        if i == 0 { 0 } else { self.oldest[i - 1].1 }
    }

    /// One past the last sequence published.
    pub fn end_seq(&self) -> u64 {
        self.published.last().map_or(0, |&(s, n, _)| s + n)
    }
}

/// A violation of the delivery invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckError {
    /// Receiver index.
    pub receiver: usize,
    /// Session concerned.
    pub session: u64,
    /// What went wrong.
    pub what: String,
}

impl fmt::Display for CheckError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "receiver {} session {:#x}: {}",
            self.receiver, self.session, self.what
        )
    }
}

impl std::error::Error for CheckError {}

/// Checks receiver logs against session records.
pub struct Checker<'a> {
    sessions: &'a [&'a SessionRecord],
}

impl<'a> Checker<'a> {
    /// A checker for these sessions.
    pub fn new(sessions: &'a [&'a SessionRecord]) -> Self {
        Self { sessions }
    }

    /// Check receiver `j`'s log.
    pub fn check(&self, j: usize, log: &[Logged]) -> Result<(), CheckError> {
        for s in self.sessions {
            self.check_session(j, s, log)?;
        }
        Ok(())
    }

    fn check_session(&self, j: usize, s: &SessionRecord, log: &[Logged]) -> Result<(), CheckError> {
        let err = |what: String| CheckError {
            receiver: j,
            session: s.session,
            what,
        };
        let mine = log.iter().filter(|l| event_source(&l.event) == s.source);
        let mut start = None;
        let mut delivered: Vec<u64> = Vec::new();
        let mut losses: Vec<SeqRange> = Vec::new();
        for Logged { at, event } in mine {
            match event {
                OwnedEvent::Joined {
                    session, start_seq, ..
                } if *session == s.session => {
                    let again = start.is_some();
                    start = Some(*start_seq);
                    if again {
                        return Err(err("joined twice".into()));
                    }
                }
                OwnedEvent::Message {
                    session,
                    seq,
                    payload,
                    ..
                } if *session == s.session => {
                    if start.is_none() {
                        return Err(err(format!("message {seq} before join")));
                    }
                    if delivered.last().is_some_and(|&l| l >= *seq) {
                        return Err(err(format!("message {seq} out of order or duplicated")));
                    }
                    let i = s.published.partition_point(|&(p, _, _)| p < *seq);
                    let Some(&(p, _, len)) = s.published.get(i).filter(|m| m.0 == *seq) else {
                        return Err(err(format!("message {seq} was never published")));
                    };
                    debug_assert_eq!(p, *seq);
                    let ok = payload.len() == len
                        && payload
                            .iter()
                            .enumerate()
                            .all(|(k, &b)| b == payload_byte(s.session, p, k));
                    if !ok {
                        return Err(err(format!("message {seq} payload corrupted")));
                    }
                    delivered.push(*seq);
                }
                OwnedEvent::Loss {
                    session,
                    range,
                    reason,
                    ..
                } if *session == s.session => {
                    if range.end > s.end_seq() {
                        return Err(err(format!("loss {range} beyond what was published")));
                    }
                    let gone = s.gone_at.is_some_and(|g| g <= *at);
                    if !gone && s.oldest_at(*at) < range.end {
                        return Err(err(format!(
                            "loss {range} ({reason:?}) at {at:?} while the publisher still held {} (oldest {})",
                            range.end - 1,
                            s.oldest_at(*at)
                        )));
                    }
                    if losses.last().is_some_and(|l| l.end > range.start) {
                        return Err(err(format!("loss {range} out of order")));
                    }
                    losses.push(*range);
                }
                _ => {}
            }
        }
        let Some(start) = start else {
            if !s.killed && !s.published.is_empty() {
                return Err(err("never joined".into()));
            }
            return Ok(());
        };
        let horizon = if s.killed {
            let d = delivered.last().map_or(0, |&seq| {
                let i = s.published.partition_point(|&(p, _, _)| p < seq);
                seq + s.published[i].1
            });
            d.max(losses.last().map_or(0, |l| l.end))
        } else {
            u64::MAX
        };
        let (mut di, mut li) = (0, 0);
        for &(seq, n, _) in &s.published {
            let range = SeqRange::new(seq, seq + n);
            if seq < start || range.end > horizon {
                continue;
            }
            while di < delivered.len() && delivered[di] < seq {
                di += 1;
            }
            let was_delivered = delivered.get(di) == Some(&seq);
            while li < losses.len() && losses[li].end <= seq {
                li += 1;
            }
            let was_lost = losses.get(li).is_some_and(|l| l.overlaps(&range));
            match (was_delivered, was_lost) {
                (true, false) | (false, true) => {}
                (true, true) => {
                    return Err(err(format!("message {seq} delivered and reported lost")));
                }
                (false, false) => {
                    return Err(err(format!(
                        "message {seq} neither delivered nor reported lost"
                    )));
                }
            }
        }
        Ok(())
    }
}

fn event_source(e: &OwnedEvent) -> SourceId {
    match e {
        OwnedEvent::Joined { source, .. }
        | OwnedEvent::Message { source, .. }
        | OwnedEvent::Loss { source, .. }
        | OwnedEvent::Restarted { source, .. }
        | OwnedEvent::Closed { source, .. }
        | OwnedEvent::Inactive { source, .. } => *source,
    }
}
