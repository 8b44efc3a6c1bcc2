//! The set of missing sequence ranges of one source, with each gap's NAK timer.
//!
//! Invariant kept by the source: every sequence in `[cursor, highest)` that is not held in
//! the reorder window is in exactly one gap, and no gap holds a sequence that is held. Gaps
//! are sorted and disjoint. Their number is bounded by the reorder window: a gap is only
//! split by a fragment stored in the window.

use std::collections::VecDeque;
use std::time::Instant;

use super::LossReason;
use crate::proto::wire::SeqRange;

/// One missing range and its recovery state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// The missing sequence numbers.
    pub range: SeqRange,
    /// When the next NAK for it is due.
    pub nak_at: Instant,
    /// NAKs sent for it so far.
    pub tries: u32,
    /// When the first NAK for it was sent.
    pub first_nak: Option<Instant>,
    /// NAKs sent since the publisher last repaired part of it: a wide gap is repaired in
    /// slices (the publisher bounds the work per NAK), and a gap that is making progress
    /// must not run out of tries.
    pub unanswered: u32,
    /// The first NAK, or the last repair of part of the gap: the loss deadline runs from
    /// here.
    pub since: Option<Instant>,
    /// When the gap was first detected.
    pub detected: Instant,
    /// Set once the gap is known to be unrecoverable; reported when delivery reaches it.
    pub lost: Option<LossReason>,
}

/// Sorted, disjoint missing ranges.
#[derive(Clone, Debug, Default)]
pub struct GapList {
    gaps: VecDeque<Gap>,
}

impl GapList {
    /// Number of gaps.
    pub fn len(&self) -> usize {
        self.gaps.len()
    }

    /// Whether nothing is missing.
    pub fn is_empty(&self) -> bool {
        self.gaps.is_empty()
    }

    /// The lowest gap.
    pub fn front(&self) -> Option<&Gap> {
        self.gaps.front()
    }

    /// Remove and return the lowest gap.
    pub fn pop_front(&mut self) -> Option<Gap> {
        self.gaps.pop_front()
    }

    /// Iterate gaps in order, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Gap> {
        self.gaps.iter_mut()
    }

    /// Iterate gaps in order.
    pub fn iter(&self) -> impl Iterator<Item = &Gap> {
        self.gaps.iter()
    }

    /// Append a newly detected gap above every existing one, merging it into the last gap
    /// when adjacent and neither has been NAKed nor declared lost.
    pub fn push(&mut self, range: SeqRange, now: Instant, nak_at: Instant) {
        debug_assert!(self.gaps.back().is_none_or(|g| g.range.end <= range.start));
        if let Some(last) = self.gaps.back_mut()
            && last.range.end == range.start
            && last.tries == 0
            && last.lost.is_none()
        {
            last.range.end = range.end;
            return;
        }
        self.gaps.push_back(Gap {
            range,
            nak_at,
            tries: 0,
            first_nak: None,
            unanswered: 0,
            since: None,
            detected: now,
            lost: None,
        });
    }

    /// Remove `seq` from the gap holding it, if any, and return that gap's state as it was.
    /// With `progress` (a repair arrived at that instant), what remains of the gap starts
    /// its unanswered count and loss deadline afresh.
    pub fn fill(&mut self, seq: u64, progress: Option<Instant>) -> Option<Gap> {
        let i = self.gaps.partition_point(|g| g.range.end <= seq);
        let g = *self.gaps.get(i)?;
        if !g.range.contains(seq) {
            return None;
        }
        let (lo, hi) = (
            SeqRange::new(g.range.start, seq),
            SeqRange::new(seq + 1, g.range.end),
        );
        let rest = match progress {
            Some(at) if g.tries > 0 => Gap {
                unanswered: 0,
                since: Some(at),
                ..g
            },
            _ => g,
        };
        self.gaps[i] = rest;
        match (lo.is_empty(), hi.is_empty()) {
            (true, true) => {
                self.gaps.remove(i);
            }
            (false, true) => self.gaps[i].range = lo,
            (true, false) => self.gaps[i].range = hi,
            (false, false) => {
                self.gaps[i].range = lo;
                self.gaps.insert(i + 1, Gap { range: hi, ..rest });
            }
        }
        Some(g)
    }

    /// Split the gap at index `i` at `seq` (inside it): both halves keep its state.
    pub fn split(&mut self, i: usize, seq: u64) {
        let g = self.gaps[i];
        debug_assert!(g.range.start < seq && seq < g.range.end);
        self.gaps[i].range.end = seq;
        self.gaps.insert(
            i + 1,
            Gap {
                range: SeqRange::new(seq, g.range.end),
                ..g
            },
        );
    }

    /// The gap at index `i`.
    pub fn get(&self, i: usize) -> Option<&Gap> {
        self.gaps.get(i)
    }

    /// The gap at index `i`, mutably.
    pub fn get_mut(&mut self, i: usize) -> &mut Gap {
        &mut self.gaps[i]
    }

    /// Mark every sequence below `bound` as lost for `reason`, splitting the gap that
    /// straddles it. Returns whether anything changed.
    pub fn mark_lost_below(&mut self, bound: u64, reason: LossReason) -> bool {
        let mut changed = false;
        let mut i = 0;
        while i < self.gaps.len() && self.gaps[i].range.start < bound {
            let g = self.gaps[i];
            if g.range.end > bound {
                self.gaps[i].range.end = bound;
                self.gaps.insert(
                    i + 1,
                    Gap {
                        range: SeqRange::new(bound, g.range.end),
                        ..g
                    },
                );
            }
            if self.gaps[i].lost.is_none() {
                self.gaps[i].lost = Some(reason);
                changed = true;
            }
            i += 1;
        }
        changed
    }

    /// Mark every gap lost for `reason` (publisher gone or replaced).
    pub fn mark_all_lost(&mut self, reason: LossReason) {
        for g in &mut self.gaps {
            g.lost.get_or_insert(reason);
        }
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.gaps.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_fill_split_and_mark() {
        let t = Instant::now();
        let mut gl = GapList::default();
        gl.push(SeqRange::new(10, 20), t, t);
        gl.push(SeqRange::new(20, 25), t, t);
        assert_eq!(gl.len(), 1);
        assert_eq!(gl.front().unwrap().range, SeqRange::new(10, 25));
        assert!(gl.fill(9, None).is_none());
        assert!(gl.fill(15, None).is_some());
        assert!(gl.fill(15, None).is_none());
        assert!(gl.fill(10, None).is_some());
        let ranges: Vec<_> = gl.iter().map(|g| g.range).collect();
        assert_eq!(ranges, [SeqRange::new(11, 15), SeqRange::new(16, 25)]);
        assert!(gl.mark_lost_below(20, LossReason::Unavailable));
        let ranges: Vec<_> = gl.iter().map(|g| (g.range, g.lost.is_some())).collect();
        assert_eq!(
            ranges,
            [
                (SeqRange::new(11, 15), true),
                (SeqRange::new(16, 20), true),
                (SeqRange::new(20, 25), false)
            ]
        );
        assert!(!gl.mark_lost_below(20, LossReason::Unavailable));
    }
}
