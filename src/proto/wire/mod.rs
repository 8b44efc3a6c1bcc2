//! Bytes <-> frames: the nakcast wire format.
//!
//! Every frame is one UDP datagram: a fixed 24-byte little-endian [`header`](Header) followed by a
//! body whose layout depends on the frame type. docs/PROTOCOL.md specifies every byte.
//!
//! Decoding follows the smoltcp pattern: [`Frame::parse`] checks the CRC32, the version, the
//! type and every length and count exactly once, and returns a typed view whose accessors are
//! then infallible and read fields in place (no copy, no allocation). Every malformed input is
//! a [`DecodeError`]; nothing in this module panics on network input.
//!
//! Encoding writes into a caller-provided buffer: [`DataFrameWriter`] builds a DATA frame
//! fragment by fragment, and [`emit_control`] / [`emit_ranges`] / [`emit_status`] write the
//! small control frames. Buffers too small for the frame are reported as [`EncodeError`].

mod frames;
mod header;

pub use frames::{
    DataFrame, DataFrameWriter, FlowReport, Fragment, FragmentIter, Frame, RangeIter, RangeList,
    append_data_fragments, emit_control, emit_ranges, emit_status, finish_frame, set_flags,
    set_retransmit, set_session_offset,
};
pub use header::{
    FLAG_AUTH, FLAG_FLOW_HELD, FLAG_GROUP_MASK, FLAG_REPEAT, FLAG_RETRANSMIT, FRAG_BEGIN, FRAG_END,
    FrameType, HEADER_LEN, Header, PROTOCOL_VERSION, STATUS_FLOW, STATUS_LEAVING, group_flags,
    group_size,
};

use core::fmt;

/// Bytes of per-fragment overhead inside a DATA frame (length u16, flags u8, reserved u8).
pub const FRAGMENT_HEADER_LEN: usize = 4;
/// Bytes of DATA body before the first fragment (first sequence u64, count u16, reserved u16).
pub const DATA_PREFIX_LEN: usize = 12;
/// Bytes of a HEARTBEAT or CLOSE body (next sequence u64, oldest retained u64).
pub const CONTROL_BODY_LEN: usize = 16;
/// Bytes of a STATUS body (flags u32, window u32, position u64).
pub const STATUS_BODY_LEN: usize = 16;
/// Bytes of a range-list body before its first range (count u16, reserved 6 bytes).
pub const RANGES_PREFIX_LEN: usize = 8;
/// Bytes per range in a NAK or UNAVAILABLE frame (start u64, end u64).
pub const RANGE_LEN: usize = 16;
/// Most ranges one NAK or UNAVAILABLE frame may carry.
pub const MAX_RANGES: usize = 64;
/// Longest range (in sequence numbers) a NAK or UNAVAILABLE frame may name.
pub const MAX_RANGE_SPAN: u64 = 1 << 32;
/// Largest frame this implementation encodes or accepts (fits a 64 KiB UDP datagram).
pub const MAX_FRAME_LEN: usize = 65_507;

/// A half-open range of sequence numbers `[start, end)`, `start < end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeqRange {
    /// First sequence number in the range.
    pub start: u64,
    /// One past the last sequence number in the range.
    pub end: u64,
}

impl SeqRange {
    /// A range `[start, end)`; callers must ensure `start < end`.
    pub const fn new(start: u64, end: u64) -> Self {
        Self { start, end }
    }

    /// Number of sequence numbers in the range.
    pub const fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range is empty (never true for a range decoded from the wire).
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// Whether `seq` lies in the range.
    pub const fn contains(&self, seq: u64) -> bool {
        self.start <= seq && seq < self.end
    }

    /// Whether the two ranges share at least one sequence number.
    pub const fn overlaps(&self, other: &SeqRange) -> bool {
        self.start < other.end && other.start < self.end
    }
}

impl fmt::Display for SeqRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// Why a datagram could not be decoded. Receivers count these and drop the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the fixed header, or than the fixed part of its frame type's body.
    Truncated,
    /// Longer than [`MAX_FRAME_LEN`].
    TooLong,
    /// The CRC32 does not match the content: corrupted or not a nakcast frame.
    BadCrc,
    /// A protocol version this implementation does not speak.
    UnknownVersion(u8),
    /// A frame type this implementation does not know.
    UnknownType(u8),
    /// A DATA frame with no fragments, or a range list with none or too many ranges.
    BadCount,
    /// A length or count points past the end of the datagram.
    Overrun,
    /// Bytes left over after the last fragment or range.
    TrailingBytes,
    /// A range with `start >= end`.
    ReversedRange,
    /// A range longer than [`MAX_RANGE_SPAN`].
    OversizedRange,
    /// Sequence numbers that would wrap past `u64::MAX`.
    SequenceOverflow,
    /// HEARTBEAT or CLOSE announcing an oldest retained sequence above the next one.
    InconsistentWindow,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("frame truncated"),
            Self::TooLong => f.write_str("frame longer than the maximum datagram"),
            Self::BadCrc => f.write_str("CRC32 mismatch"),
            Self::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            Self::UnknownType(t) => write!(f, "unknown frame type {t}"),
            Self::BadCount => f.write_str("fragment or range count out of bounds"),
            Self::Overrun => f.write_str("length runs past the end of the frame"),
            Self::TrailingBytes => f.write_str("trailing bytes after the last element"),
            Self::ReversedRange => f.write_str("range start is not below its end"),
            Self::OversizedRange => f.write_str("range longer than the protocol allows"),
            Self::SequenceOverflow => f.write_str("sequence numbers overflow u64"),
            Self::InconsistentWindow => f.write_str("oldest retained sequence above next"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a frame could not be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer cannot hold the frame.
    BufferTooSmall,
    /// A fragment longer than a DATA fragment length field (u16) can describe.
    FragmentTooLong,
    /// A range list with no ranges, more than [`MAX_RANGES`], or an invalid range.
    BadRanges,
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall => f.write_str("output buffer too small for the frame"),
            Self::FragmentTooLong => f.write_str("fragment longer than 65535 bytes"),
            Self::BadRanges => f.write_str("range list empty, too long, or invalid"),
        }
    }
}

impl std::error::Error for EncodeError {}

#[inline]
pub(crate) fn read_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

#[inline]
pub(crate) fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[inline]
pub(crate) fn read_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[inline]
pub(crate) fn write_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn write_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[inline]
pub(crate) fn write_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests;
