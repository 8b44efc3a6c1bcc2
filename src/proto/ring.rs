//! The publisher's bounded retransmit ring: encoded DATA frames kept for repair.
//!
//! Frames are stored back to back in one preallocated byte buffer (a log, as in Aeron's
//! term buffers), with a bounded index of `(sequence range, offset, length)` entries. A frame
//! is written in place at the head, so repairs re-send exactly the bytes first sent and the
//! steady state allocates nothing. The oldest frames are evicted when the bytes, the index or
//! the retained-sequence limit would be exceeded.

use std::collections::VecDeque;
use std::time::Instant;

/// What a frame counts for in stream positions beyond its length: about what a kernel
/// charges a receiving socket's buffer per datagram besides its bytes (Linux's `sk_buff`
/// and its bookkeeping, 700–900 bytes on x86-64). A flow-control window then bounds the
/// buffer a receiver needs whatever the datagrams' size: without it, a 1 MiB window of
/// 72-byte datagrams would be some 14 000 of them, over 10 MiB of socket buffer.
pub const DATAGRAM_COST: u64 = 768;

/// Index entry for one stored frame.
#[derive(Clone, Copy, Debug)]
pub struct RingEntry {
    /// Sequence number of the frame's first fragment.
    pub first_seq: u64,
    /// One past the sequence number of its last fragment.
    pub end_seq: u64,
    offset: usize,
    len: usize,
    /// Position of the frame in the session's stream of frames (the lengths of all frames
    /// stored before it, plus [`DATAGRAM_COST`] each), for flow control.
    pos: u64,
    /// When this frame was last sent as a repair.
    pub last_repair: Option<Instant>,
    /// Whether a repair of this frame is queued and not yet sent.
    pub repair_queued: bool,
}

impl RingEntry {
    /// Length of the stored frame in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Position of the frame in the stream of frames stored since the ring was created:
    /// the lengths of all frames before it, plus [`DATAGRAM_COST`] for each.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    /// Position one past the frame (its length and [`DATAGRAM_COST`] after `pos`).
    pub fn end_pos(&self) -> u64 {
        self.pos + self.len as u64 + DATAGRAM_COST
    }

    /// Whether the stored frame is empty (never, for frames the publisher stores).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A bounded ring of encoded frames, addressable by sequence number.
#[derive(Debug)]
pub struct RetransmitRing {
    buf: Vec<u8>,
    entries: VecDeque<RingEntry>,
    max_entries: usize,
    max_seqs: u64,
    head: usize,
    reserved: usize,
    /// Bytes from `head` up to here were prefetched this lap (see `reserve`).
    prefetched: usize,
    /// Sequence numbers below this have been evicted (or were never sent).
    oldest_seq: u64,
    /// Byte position one past the newest frame stored.
    end_pos: u64,
}

impl RetransmitRing {
    /// A ring of `bytes` bytes holding at most `max_entries` frames and `max_seqs` sequence
    /// numbers, whose first frame will start at `initial_seq`. `bytes` must be at least
    /// twice the largest frame that will be reserved.
    pub fn new(bytes: usize, max_entries: usize, max_seqs: u64, initial_seq: u64) -> Self {
        Self {
            buf: vec![0; bytes],
            entries: VecDeque::with_capacity(max_entries.max(1)),
            max_entries: max_entries.max(1),
            max_seqs: max_seqs.max(1),
            head: 0,
            reserved: 0,
            prefetched: 0,
            oldest_seq: initial_seq,
            end_pos: 0,
        }
    }

    /// Touch every page of the byte buffer now, so that the first lap around the ring
    /// does not take a page fault (a microsecond or more each) every few frames: a
    /// latency-sensitive publisher calls this once after creation.
    pub fn prefault(&mut self) {
        const PAGE: usize = 4096;
        for i in (0..self.buf.len()).step_by(PAGE) {
            // An opaque value: the store cannot be proven redundant and removed.
            self.buf[i] = std::hint::black_box(0);
        }
        // The frame index too (64k entries by default, megabytes): fill its capacity with
        // placeholders, then drop them.
        if self.entries.is_empty() {
            let filler = RingEntry {
                first_seq: 0,
                end_seq: 0,
                offset: 0,
                len: 0,
                pos: 0,
                last_repair: None,
                repair_queued: false,
            };
            for _ in 0..self.entries.capacity() {
                self.entries.push_back(std::hint::black_box(filler));
            }
            self.entries.clear();
        }
    }

    /// Oldest sequence number still retained (equal to the next one when empty).
    pub fn oldest_seq(&self) -> u64 {
        self.oldest_seq
    }

    /// Number of frames retained.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no frame is retained.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Position one past the newest frame stored (the total length of every frame stored
    /// so far, plus [`DATAGRAM_COST`] each).
    pub fn end_pos(&self) -> u64 {
        self.end_pos
    }

    /// How many frames from index `from` on end at or below byte position `limit`.
    ///
    /// Positions grow from front to back. The caller asks about the newest frames (those
    /// not sent yet), so this looks only at them: the last one first (usually all fit),
    /// then a binary search over `from..`, never over the whole index (megabytes, cold).
    pub fn count_within(&self, from: usize, limit: u64) -> usize {
        let len = self.entries.len();
        if from >= len || self.entries[len - 1].end_pos() <= limit {
            return len.saturating_sub(from);
        }
        let (mut lo, mut hi) = (from, len - 1);
        // Invariant: frames before `lo` fit, the frame at `hi` does not.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entries[mid].end_pos() <= limit {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo - from
    }

    /// Capacity of the byte buffer.
    pub fn capacity_bytes(&self) -> usize {
        self.buf.len()
    }

    fn evict_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.oldest_seq = e.end_seq;
        }
    }

    /// Reserve `len` contiguous bytes at the head for a frame being built, evicting the
    /// oldest frames that occupy them, and return them. The reservation lasts until
    /// [`commit`](Self::commit); only one frame is open at a time.
    pub fn reserve(&mut self, len: usize) -> &mut [u8] {
        assert!(len * 2 <= self.buf.len(), "ring smaller than two frames");
        if self.head + len > self.buf.len() {
            // Frames between the old head and the end are the oldest of the previous lap.
            while self.entries.front().is_some_and(|e| e.offset >= self.head) {
                self.evict_front();
            }
            self.head = 0;
            self.prefetched = 0;
        }
        let (start, end) = (self.head, self.head + len);
        while self
            .entries
            .front()
            .is_some_and(|e| e.offset >= start && e.offset < end)
        {
            self.evict_front();
        }
        self.reserved = len;
        // The ring is larger than the CPU's caches and written once per lap, so every line
        // the frame is written to would be a cache miss, paid in stalls while the payload
        // is copied in. Prefetching the next frame's room now, while this one is written,
        // has it in cache in time: the 1 KiB publisher's user time halves (`perf`, see
        // docs/PERFORMANCE.md). Each line once per lap: small frames mostly re-reserve
        // lines already fetched.
        let ahead = (end + len).min(self.buf.len());
        if self.prefetched < ahead {
            let from = self.prefetched.max(end);
            crate::hint::prefetch(&self.buf[from.min(ahead)..ahead]);
            self.prefetched = ahead;
        }
        &mut self.buf[start..end]
    }

    /// The currently reserved bytes (the frame being built).
    pub fn reserved_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.reserved]
    }

    /// Store the reserved frame: its first `len` bytes hold fragments `[first_seq, end_seq)`.
    pub fn commit(&mut self, first_seq: u64, end_seq: u64, len: usize) {
        debug_assert!(len <= self.reserved);
        if self.entries.len() == self.max_entries {
            self.evict_front();
        }
        if self.entries.is_empty() {
            self.oldest_seq = first_seq;
        }
        self.entries.push_back(RingEntry {
            first_seq,
            end_seq,
            offset: self.head,
            len,
            pos: self.end_pos,
            last_repair: None,
            repair_queued: false,
        });
        self.end_pos += len as u64 + DATAGRAM_COST;
        self.head += len;
        self.reserved = 0;
        while end_seq - self.oldest_seq > self.max_seqs && self.entries.len() > 1 {
            self.evict_front();
        }
    }

    /// Index of the retained frame holding `seq`, if any.
    pub fn find(&self, seq: u64) -> Option<usize> {
        if seq < self.oldest_seq {
            return None;
        }
        let i = self.entries.partition_point(|e| e.end_seq <= seq);
        (i < self.entries.len() && self.entries[i].first_seq <= seq).then_some(i)
    }

    /// The entry at index `i` (0 = oldest).
    pub fn entry(&self, i: usize) -> &RingEntry {
        &self.entries[i]
    }

    /// The entry at index `i`, mutably.
    pub fn entry_mut(&mut self, i: usize) -> &mut RingEntry {
        &mut self.entries[i]
    }

    /// The encoded bytes of the frame at index `i`.
    pub fn frame(&self, i: usize) -> &[u8] {
        let e = &self.entries[i];
        &self.buf[e.offset..e.offset + e.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(r: &mut RetransmitRing, first: u64, n: u64, len: usize) {
        let b = r.reserve(100);
        b[..8].copy_from_slice(&first.to_le_bytes());
        r.commit(first, first + n, len);
    }

    #[test]
    fn prefault_leaves_the_ring_empty_and_usable() {
        let mut r = RetransmitRing::new(1 << 16, 64, 1_000_000, 5);
        let cap = r.entries.capacity();
        r.prefault();
        assert!(r.is_empty());
        assert_eq!(r.oldest_seq(), 5);
        assert_eq!(r.entries.capacity(), cap, "no reallocation");
        put(&mut r, 5, 3, 50);
        assert_eq!(r.find(6), Some(0));
        assert_eq!(r.find(4), None);
    }

    #[test]
    fn evicts_oldest_by_bytes_and_finds_by_seq() {
        let mut r = RetransmitRing::new(1000, 100, 1_000_000, 0);
        let mut seq = 0;
        for _ in 0..50 {
            put(&mut r, seq, 3, 60);
            seq += 3;
            // Every retained frame still holds its own bytes.
            for i in 0..r.len() {
                let e = *r.entry(i);
                assert_eq!(&r.frame(i)[..8], &e.first_seq.to_le_bytes());
                assert_eq!(r.find(e.first_seq + 2), Some(i));
            }
            assert!(r.len() * 60 <= 1000);
            assert_eq!(r.oldest_seq(), r.entry(0).first_seq);
        }
        assert!(r.len() >= 1000 / 60 - 2, "{}", r.len());
        assert_eq!(r.find(0), None);
        assert_eq!(r.find(seq), None);
        // Stream positions count every frame ever stored, evicted ones included.
        let each = 60 + DATAGRAM_COST;
        assert_eq!(r.end_pos(), 50 * each);
        let last = r.len() - 1;
        assert_eq!(r.entry(last).end_pos(), 50 * each);
        assert_eq!(r.entry(0).pos(), (50 - r.len() as u64) * each);
        assert_eq!(r.count_within(0, r.entry(0).pos()), 0);
        assert_eq!(r.count_within(0, r.entry(2).end_pos()), 3);
        assert_eq!(r.count_within(1, r.entry(2).end_pos() + each - 1), 2);
        assert_eq!(r.count_within(0, u64::MAX), r.len());
        assert_eq!(r.count_within(r.len(), u64::MAX), 0);
        // Against a plain count, for every start and every limit around every boundary.
        for from in 0..=r.len() {
            for i in 0..r.len() {
                for limit in [r.entry(i).end_pos() - 1, r.entry(i).end_pos()] {
                    let want = (from..r.len())
                        .filter(|&k| r.entry(k).end_pos() <= limit)
                        .count();
                    assert_eq!(r.count_within(from, limit), want, "{from} {limit}");
                }
            }
        }
    }

    #[test]
    fn limits_entries_and_sequences() {
        let mut r = RetransmitRing::new(100_000, 4, 1_000_000, 0);
        for i in 0..10 {
            put(&mut r, i * 2, 2, 50);
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.oldest_seq(), 12);
        let mut r = RetransmitRing::new(100_000, 1000, 10, 0);
        for i in 0..10 {
            put(&mut r, i * 4, 4, 50);
        }
        assert_eq!(r.oldest_seq(), 32);
        assert_eq!(r.find(31), None);
        assert_eq!(r.find(39), Some(1));
    }
}
