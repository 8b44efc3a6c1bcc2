//! The fixed 24-byte header every frame starts with.
//!
//! ```text
//! offset size field
//!  0      4   crc32      CRC-32 (IEEE, crc32fast) of bytes 4..len of the datagram
//!  4      1   version    PROTOCOL_VERSION
//!  5      1   type       FrameType
//!  6      2   flags      FLAG_* bits (u16 LE)
//!  8      4   stream     stream id (u32 LE)
//! 12      4   offset     DATA, HEARTBEAT, CLOSE: distance of the frame's sequence (first_seq,
//!                        next_seq) from the session's first, saturating; others: zero
//! 16      8   session    session id (u64 LE), random per publisher start
//! ```

use super::{DecodeError, read_u16, read_u32, read_u64, write_u16, write_u32, write_u64};

/// Length of the fixed frame header in bytes.
pub const HEADER_LEN: usize = 24;
/// The protocol version this implementation speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// DATA flag: the frame is a repair sent in answer to a NAK.
pub const FLAG_RETRANSMIT: u16 = 0x0001;
/// NAK flag (the same bit as [`FLAG_RETRANSMIT`]): every range was asked for before by this
/// receiver and is still missing, so its repair was lost, not merely in flight. The
/// publisher then applies the short `repeat_linger` instead of `repair_linger`.
pub const FLAG_REPEAT: u16 = 0x0001;
/// Any frame: an authentication trailer (key id and MAC) ends the frame; see
/// [`crate::proto::auth`]. Covered by the MAC, so it cannot be stripped unnoticed.
pub const FLAG_AUTH: u16 = 0x0002;
/// HEARTBEAT flag: the publisher holds new data back for flow control; every receiver that
/// reports answers with a flow report at once (otherwise receivers answer heartbeats only
/// to keep their report alive, see `ReceiverConfig::flow_keepalive`).
pub const FLAG_FLOW_HELD: u16 = 0x0004;
/// DATA, HEARTBEAT and CLOSE: bits 12..=15 of the flags carry the group-size class, how
/// many receivers the publisher hears from (its flow-control reports), so that receivers
/// can size their random NAK delay to the group; see [`group_flags`] and [`group_size`].
pub const FLAG_GROUP_MASK: u16 = 0xF000;
/// Shift of the group-size class within the flags (see [`FLAG_GROUP_MASK`]).
const GROUP_SHIFT: u32 = 12;

/// The header flag bits that advertise a group of `receivers` (see [`FLAG_GROUP_MASK`]):
/// class 0 for none known (no flow report yet), else
/// `1 + ceil(log2(receivers))`, at most 15: class 1 is exactly one receiver, class 2 two,
/// class 3 up to four, class k up to `2^(k-1)`.
pub const fn group_flags(receivers: usize) -> u16 {
    if receivers == 0 {
        return 0;
    }
    let ceil_log2 = usize::BITS - (receivers - 1).leading_zeros();
    let class = if ceil_log2 > 14 { 15 } else { 1 + ceil_log2 };
    (class as u16) << GROUP_SHIFT
}

/// The group size a frame's `flags` advertise (the largest its class stands for), or
/// `None` when the publisher knows of no receiver (class 0).
pub const fn group_size(flags: u16) -> Option<u32> {
    match (flags & FLAG_GROUP_MASK) >> GROUP_SHIFT {
        0 => None,
        class => Some(1 << (class - 1)),
    }
}

/// STATUS body flag (bit 0 of its `flags` u32): the receiver is going away; the publisher
/// stops sending to it.
pub const STATUS_LEAVING: u32 = 0x0000_0001;
/// STATUS body flag (bit 1): the frame reports this receiver's position and window for
/// flow control (see [`FlowReport`](super::FlowReport)); without it both fields are zero
/// and ignored.
pub const STATUS_FLOW: u32 = 0x0000_0002;
/// Fragment flag: the first fragment of a message.
pub const FRAG_BEGIN: u8 = 0x01;
/// Fragment flag: the last fragment of a message.
pub const FRAG_END: u8 = 0x02;

/// The kind of a frame (header byte 5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    /// Publisher to group: a run of message fragments.
    Data = 1,
    /// Publisher to group: liveness plus the next and oldest retained sequence.
    Heartbeat = 2,
    /// Receiver to publisher (unicast): ranges the receiver is missing.
    Nak = 3,
    /// Publisher to group: ranges that can no longer be repaired.
    Unavailable = 4,
    /// Publisher to group: clean end of the session, with its final sequence.
    Close = 5,
    /// Receiver to publisher (unicast): "send me this stream" (unicast fan-out), or with
    /// [`STATUS_LEAVING`] "stop sending to me".
    Status = 6,
}

impl FrameType {
    /// The frame type for a header byte, if known.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Data,
            2 => Self::Heartbeat,
            3 => Self::Nak,
            4 => Self::Unavailable,
            5 => Self::Close,
            6 => Self::Status,
            _ => return None,
        })
    }
}

/// The decoded fixed header (a plain `Repr`: cheap to copy, no borrowed bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Frame type.
    pub frame_type: FrameType,
    /// `FLAG_*` bits.
    pub flags: u16,
    /// Stream id: independent sequence spaces can share a group and port.
    pub stream: u32,
    /// Session id of the publisher the frame belongs to (or is addressed to, for NAK; for
    /// STATUS, the session the receiver follows, 0 if it does not know one yet).
    pub session: u64,
    /// For DATA, HEARTBEAT and CLOSE: how far the frame's sequence number (`first_seq`,
    /// `next_seq`) is from the session's first, saturating at `u32::MAX`, so a receiver
    /// joining a young session can start at its beginning. Zero in other frames.
    pub session_offset: u32,
}

impl Header {
    /// A header with no flags and a zero session offset.
    pub fn new(frame_type: FrameType, stream: u32, session: u64) -> Self {
        Self {
            frame_type,
            flags: 0,
            stream,
            session,
            session_offset: 0,
        }
    }

    /// Check length, CRC and version, and read the header. Nothing else is trusted before
    /// the CRC matches.
    pub fn parse(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN {
            return Err(DecodeError::Truncated);
        }
        if bytes.len() > super::MAX_FRAME_LEN {
            return Err(DecodeError::TooLong);
        }
        if read_u32(bytes, 0) != crc32fast::hash(&bytes[4..]) {
            return Err(DecodeError::BadCrc);
        }
        if bytes[4] != PROTOCOL_VERSION {
            return Err(DecodeError::UnknownVersion(bytes[4]));
        }
        let frame_type = FrameType::from_u8(bytes[5]).ok_or(DecodeError::UnknownType(bytes[5]))?;
        Ok(Self {
            frame_type,
            flags: read_u16(bytes, 6),
            stream: read_u32(bytes, 8),
            session: read_u64(bytes, 16),
            session_offset: read_u32(bytes, 12),
        })
    }

    /// Write the header (with a zero CRC; [`super::finish_frame`] fills it) into `buf`,
    /// which must be at least [`HEADER_LEN`] bytes.
    pub fn emit(&self, buf: &mut [u8]) {
        write_u32(buf, 0, 0);
        buf[4] = PROTOCOL_VERSION;
        buf[5] = self.frame_type as u8;
        write_u16(buf, 6, self.flags);
        write_u32(buf, 8, self.stream);
        write_u32(buf, 12, self.session_offset);
        write_u64(buf, 16, self.session);
    }
}
