//! The reorder window: fragments that arrived ahead of delivery, held until their turn.
//!
//! A fixed ring of slots indexed by `seq % capacity`. Each slot keeps its byte buffer after
//! use, so once warmed up, buffering and delivering allocate nothing. What the slots keep
//! allocated is bounded too (twice the byte budget plus one fragment): a sender that makes
//! every slot grow to a large fragment in turn (each held only briefly, so the byte budget
//! never binds) would otherwise leave `capacity` large buffers behind — about 1 GiB per
//! source with 64 KiB datagrams. When growing a slot would pass that bound, the buffers of
//! idle slots are released first.

use std::time::Instant;

/// One buffered fragment.
#[derive(Clone, Debug, Default)]
struct Slot {
    seq: u64,
    present: bool,
    flags: u8,
    /// For a fragment recovered after a NAK: when its gap was detected.
    repaired: Option<Instant>,
    data: Vec<u8>,
}

/// Bounded out-of-order fragment storage.
#[derive(Clone, Debug)]
pub struct ReorderWindow {
    slots: Vec<Slot>,
    mask: u64,
    bytes: usize,
    max_bytes: usize,
    /// Sum of the slots' buffer capacities.
    allocated: usize,
}

impl ReorderWindow {
    /// A window of `capacity` (a power of two) fragments and at most `max_bytes` payload.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        debug_assert!(capacity.is_power_of_two());
        Self {
            slots: vec![Slot::default(); capacity],
            mask: capacity as u64 - 1,
            bytes: 0,
            max_bytes,
            allocated: 0,
        }
    }

    /// Number of fragments the window spans.
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Bytes allocated by the slots' buffers: at most twice the byte budget plus the
    /// largest fragment stored.
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// Whether `seq` is held.
    pub fn contains(&self, seq: u64) -> bool {
        let s = &self.slots[(seq & self.mask) as usize];
        s.present && s.seq == seq
    }

    /// Hold a fragment. The caller guarantees `seq` lies within the window's span of the
    /// delivery cursor and is not held. Returns false (nothing stored) when the byte budget
    /// would be exceeded.
    pub fn store(&mut self, seq: u64, flags: u8, payload: &[u8]) -> bool {
        if self.bytes + payload.len() > self.max_bytes {
            return false;
        }
        let i = (seq & self.mask) as usize;
        let grow = payload.len().saturating_sub(self.slots[i].data.capacity());
        if grow > 0 && self.allocated + grow > self.max_bytes.saturating_mul(2) {
            self.release_idle();
        }
        let s = &mut self.slots[i];
        debug_assert!(!s.present);
        s.seq = seq;
        s.present = true;
        s.flags = flags;
        s.repaired = None;
        s.data.clear();
        let before = s.data.capacity();
        // Exact, so that the bound above holds for what is really allocated.
        s.data.reserve_exact(payload.len());
        s.data.extend_from_slice(payload);
        self.allocated += s.data.capacity() - before;
        self.bytes += payload.len();
        true
    }

    /// Free the buffers of the slots that hold nothing and trim those that hold more room
    /// than their fragment: what stays allocated is then about what is held, at most the
    /// byte budget. Linear in the window's capacity, and needed at most once per byte
    /// budget of growth.
    fn release_idle(&mut self) {
        for s in &mut self.slots {
            if !s.present {
                s.data = Vec::new();
            } else if s.data.capacity() > s.data.len() {
                s.data.shrink_to_fit();
            }
        }
        self.allocated = self.slots.iter().map(|s| s.data.capacity()).sum();
    }

    /// Note that the held fragment `seq` was recovered after a NAK, for a gap detected at
    /// `detected` (reported back by [`take`](Self::take) for repair latency).
    pub fn mark_repaired(&mut self, seq: u64, detected: Instant) {
        let s = &mut self.slots[(seq & self.mask) as usize];
        if s.present && s.seq == seq {
            s.repaired = Some(detected);
        }
    }

    /// Release the fragment `seq` (which must be held) and return its flags, bytes and
    /// repair mark; the bytes stay valid until the slot is reused.
    pub fn take(&mut self, seq: u64) -> (u8, &[u8], Option<Instant>) {
        let s = &mut self.slots[(seq & self.mask) as usize];
        debug_assert!(s.present && s.seq == seq);
        s.present = false;
        self.bytes -= s.data.len();
        (s.flags, &s.data, s.repaired.take())
    }

    /// Release every slot (used when a source restarts).
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.present = false;
        }
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_grown_in_turn_do_not_keep_more_than_twice_the_budget() {
        let budget = 64 << 10;
        let mut w = ReorderWindow::new(1024, budget);
        let big = vec![7u8; 16 << 10];
        // Each slot in turn holds one large fragment, briefly: the byte budget never binds.
        for seq in 0..4096u64 {
            assert!(w.store(seq, 3, &big));
            assert_eq!(w.take(seq).1.len(), big.len());
            assert!(
                w.allocated() <= 2 * budget + big.len(),
                "{} after {seq}",
                w.allocated()
            );
        }
        // Held fragments survive a release, byte for byte.
        for seq in 4096..4099u64 {
            assert!(w.store(seq, 1, &[seq as u8; 15_000]));
        }
        assert!(w.store(5000, 2, &big));
        assert_eq!(w.take(4097), (1, &[4097u64 as u8; 15_000][..], None));
        assert_eq!(w.bytes(), 2 * 15_000 + big.len());
    }
}
