//! The reorder window: fragments that arrived ahead of delivery, held until their turn.
//!
//! A fixed ring of slots indexed by `seq % capacity`. Each slot keeps its byte buffer after
//! use, so once warmed up, buffering and delivering allocate nothing.

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
        let s = &mut self.slots[(seq & self.mask) as usize];
        debug_assert!(!s.present);
        s.seq = seq;
        s.present = true;
        s.flags = flags;
        s.repaired = None;
        s.data.clear();
        s.data.extend_from_slice(payload);
        self.bytes += payload.len();
        true
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
