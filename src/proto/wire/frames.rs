//! Frame bodies: checked views for decoding, writers for encoding.
//!
//! DATA body (after the header):
//! ```text
//! 24  8  first_seq   sequence number of the first fragment
//! 32  2  count       number of fragments (>= 1); fragment i has sequence first_seq + i
//! 34  2  reserved
//! 36  .. fragments, each: length u16, flags u8 (FRAG_BEGIN | FRAG_END), reserved u8,
//!        then `length` payload bytes; the last fragment ends exactly at the datagram end
//! ```
//! HEARTBEAT and CLOSE body: `next_seq` u64 (first sequence not yet sent; for CLOSE, one
//! past the last sequence of the session), `oldest_seq` u64 (oldest still retained for
//! repair; equal to `next_seq` when nothing is retained).
//!
//! NAK and UNAVAILABLE body: `count` u16 (1..=MAX_RANGES), 6 reserved bytes, then `count`
//! ranges of `start` u64, `end` u64 (half-open, `start < end`, span <= MAX_RANGE_SPAN).
//!
//! STATUS body (receiver to publisher, unicast; exactly 16 bytes):
//! ```text
//! 24  4  flags      bit 0 STATUS_LEAVING, bit 1 STATUS_FLOW; other bits zero when sent,
//!                   ignored when received
//! 28  4  window     with STATUS_FLOW: bytes the receiver can take beyond `position`
//! 32  8  position   with STATUS_FLOW: the next sequence the receiver will deliver
//! ```
//! Its header carries the stream the receiver wants and the session it follows (0 if it
//! does not know one yet). Without STATUS_FLOW, `window` and `position` are zero when sent
//! and ignored when received.

use super::header::{FLAG_RETRANSMIT, FrameType, HEADER_LEN, Header, STATUS_FLOW, STATUS_LEAVING};
use super::{
    CONTROL_BODY_LEN, DATA_PREFIX_LEN, DecodeError, EncodeError, FRAGMENT_HEADER_LEN,
    MAX_RANGE_SPAN, MAX_RANGES, RANGE_LEN, RANGES_PREFIX_LEN, STATUS_BODY_LEN, SeqRange, read_u16,
    read_u32, read_u64, write_u16, write_u32, write_u64,
};

/// A decoded frame: its header and a view of its body.
#[derive(Clone, Copy, Debug)]
pub enum Frame<'a> {
    /// Message fragments.
    Data(DataFrame<'a>),
    /// Publisher liveness and window.
    Heartbeat {
        /// The frame header.
        header: Header,
        /// First sequence the publisher has not sent yet.
        next_seq: u64,
        /// Oldest sequence the publisher can still repair.
        oldest_seq: u64,
    },
    /// Receiver's request for repairs.
    Nak(RangeList<'a>),
    /// Publisher's notice that ranges are gone for good.
    Unavailable(RangeList<'a>),
    /// Publisher's clean end of session.
    Close {
        /// The frame header.
        header: Header,
        /// One past the last sequence of the session.
        next_seq: u64,
        /// Oldest sequence the publisher can still repair.
        oldest_seq: u64,
    },
    /// Receiver's request to be sent the stream by unicast (or, leaving, to stop), or its
    /// flow-control report.
    Status {
        /// The frame header: the stream wanted and the session followed (0 if unknown).
        header: Header,
        /// The receiver is going away (`STATUS_LEAVING`).
        leaving: bool,
        /// Position and window for flow control (`STATUS_FLOW`), if reported.
        flow: Option<FlowReport>,
    },
}

/// A receiver's flow-control report (a STATUS frame with [`STATUS_FLOW`]): it will deliver
/// `position` next and can take `window` beyond it, counting each DATA frame as its length
/// plus [`DATAGRAM_COST`](crate::proto::ring::DATAGRAM_COST).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowReport {
    /// The next sequence number the receiver will deliver (everything below it was
    /// delivered or reported lost).
    pub position: u64,
    /// DATA frames (length plus `DATAGRAM_COST` each), counted from the frame holding
    /// `position`, the receiver can take without overrunning its buffers.
    pub window: u32,
}

impl<'a> Frame<'a> {
    /// Validate `bytes` completely (CRC first) and return a view of the frame.
    ///
    /// Checks no MAC: a frame carrying an authentication trailer ([`super::FLAG_AUTH`])
    /// fails here (the trailer is trailing bytes). Nodes that hold keys decode with
    /// [`Keyring::open`](crate::proto::auth::Keyring::open).
    pub fn parse(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let header = Header::parse(bytes)?;
        Self::parse_body(header, bytes)
    }

    /// Validate the body of a frame whose `header` was parsed (and CRC checked) from
    /// `bytes`, which ends where the body must end.
    pub(crate) fn parse_body(header: Header, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        match header.frame_type {
            FrameType::Data => DataFrame::parse(header, bytes).map(Frame::Data),
            FrameType::Heartbeat | FrameType::Close => {
                if bytes.len() != HEADER_LEN + CONTROL_BODY_LEN {
                    return Err(if bytes.len() < HEADER_LEN + CONTROL_BODY_LEN {
                        DecodeError::Truncated
                    } else {
                        DecodeError::TrailingBytes
                    });
                }
                let next_seq = read_u64(bytes, HEADER_LEN);
                let oldest_seq = read_u64(bytes, HEADER_LEN + 8);
                if oldest_seq > next_seq {
                    return Err(DecodeError::InconsistentWindow);
                }
                Ok(if header.frame_type == FrameType::Heartbeat {
                    Frame::Heartbeat {
                        header,
                        next_seq,
                        oldest_seq,
                    }
                } else {
                    Frame::Close {
                        header,
                        next_seq,
                        oldest_seq,
                    }
                })
            }
            FrameType::Nak => RangeList::parse(header, bytes).map(Frame::Nak),
            FrameType::Unavailable => RangeList::parse(header, bytes).map(Frame::Unavailable),
            FrameType::Status => {
                if bytes.len() != HEADER_LEN + STATUS_BODY_LEN {
                    return Err(if bytes.len() < HEADER_LEN + STATUS_BODY_LEN {
                        DecodeError::Truncated
                    } else {
                        DecodeError::TrailingBytes
                    });
                }
                let flags = read_u32(bytes, HEADER_LEN);
                let flow = (flags & STATUS_FLOW != 0).then(|| FlowReport {
                    window: read_u32(bytes, HEADER_LEN + 4),
                    position: read_u64(bytes, HEADER_LEN + 8),
                });
                Ok(Frame::Status {
                    header,
                    leaving: flags & STATUS_LEAVING != 0,
                    flow,
                })
            }
        }
    }

    /// The frame's header.
    pub fn header(&self) -> Header {
        match self {
            Frame::Data(d) => d.header,
            Frame::Nak(r) | Frame::Unavailable(r) => r.header,
            Frame::Heartbeat { header, .. }
            | Frame::Close { header, .. }
            | Frame::Status { header, .. } => *header,
        }
    }
}

/// A validated DATA frame. Iterating its fragments cannot fail.
#[derive(Clone, Copy, Debug)]
pub struct DataFrame<'a> {
    /// The frame header.
    pub header: Header,
    /// Sequence number of the first fragment.
    pub first_seq: u64,
    /// Number of fragments (at least one).
    pub count: u16,
    bytes: &'a [u8],
}

impl<'a> DataFrame<'a> {
    fn parse(header: Header, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN + DATA_PREFIX_LEN {
            return Err(DecodeError::Truncated);
        }
        let first_seq = read_u64(bytes, HEADER_LEN);
        let count = read_u16(bytes, HEADER_LEN + 8);
        if count == 0 {
            return Err(DecodeError::BadCount);
        }
        if first_seq.checked_add(u64::from(count)).is_none() {
            return Err(DecodeError::SequenceOverflow);
        }
        let mut at = HEADER_LEN + DATA_PREFIX_LEN;
        for _ in 0..count {
            if bytes.len() - at < FRAGMENT_HEADER_LEN {
                return Err(DecodeError::Overrun);
            }
            let len = usize::from(read_u16(bytes, at));
            at += FRAGMENT_HEADER_LEN;
            if bytes.len() - at < len {
                return Err(DecodeError::Overrun);
            }
            at += len;
        }
        if at != bytes.len() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Self {
            header,
            first_seq,
            count,
            bytes,
        })
    }

    /// How far `first_seq` is from the session's first sequence number (header bytes
    /// 12..16, saturating at `u32::MAX`): lets a receiver that joins young session recover
    /// its start even when the very first frames were lost.
    pub fn session_offset(&self) -> u32 {
        self.header.session_offset
    }

    /// Whether this frame is a repair (RETRANSMIT flag).
    pub fn is_retransmit(&self) -> bool {
        self.header.flags & FLAG_RETRANSMIT != 0
    }

    /// One past the sequence number of the last fragment.
    pub fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    /// The fragments, in sequence order.
    pub fn fragments(&self) -> FragmentIter<'a> {
        FragmentIter {
            bytes: self.bytes,
            at: HEADER_LEN + DATA_PREFIX_LEN,
            seq: self.first_seq,
            left: self.count,
        }
    }
}

/// One message fragment inside a DATA frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment<'a> {
    /// The fragment's sequence number.
    pub seq: u64,
    /// `FRAG_BEGIN` / `FRAG_END` bits; a whole message carries both.
    pub flags: u8,
    /// The fragment's bytes.
    pub payload: &'a [u8],
}

/// Iterator over the fragments of a validated [`DataFrame`].
#[derive(Clone, Debug)]
pub struct FragmentIter<'a> {
    bytes: &'a [u8],
    at: usize,
    seq: u64,
    left: u16,
}

impl<'a> Iterator for FragmentIter<'a> {
    type Item = Fragment<'a>;

    fn next(&mut self) -> Option<Fragment<'a>> {
        if self.left == 0 {
            return None;
        }
        // Bounds were validated by DataFrame::parse; `get` keeps this panic-free anyway.
        let len = usize::from(read_u16(self.bytes, self.at));
        let flags = self.bytes[self.at + 2];
        let start = self.at + FRAGMENT_HEADER_LEN;
        let payload = self.bytes.get(start..start + len)?;
        let frag = Fragment {
            seq: self.seq,
            flags,
            payload,
        };
        self.at = start + len;
        self.seq += 1;
        self.left -= 1;
        Some(frag)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (usize::from(self.left), Some(usize::from(self.left)))
    }
}

/// A validated NAK or UNAVAILABLE range list.
#[derive(Clone, Copy, Debug)]
pub struct RangeList<'a> {
    /// The frame header.
    pub header: Header,
    bytes: &'a [u8],
    count: u16,
}

impl<'a> RangeList<'a> {
    fn parse(header: Header, bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() < HEADER_LEN + RANGES_PREFIX_LEN {
            return Err(DecodeError::Truncated);
        }
        let count = read_u16(bytes, HEADER_LEN);
        if count == 0 || usize::from(count) > MAX_RANGES {
            return Err(DecodeError::BadCount);
        }
        let need = HEADER_LEN + RANGES_PREFIX_LEN + usize::from(count) * RANGE_LEN;
        if bytes.len() < need {
            return Err(DecodeError::Overrun);
        }
        if bytes.len() > need {
            return Err(DecodeError::TrailingBytes);
        }
        let list = Self {
            header,
            bytes,
            count,
        };
        for i in 0..usize::from(count) {
            let (start, end) = list.raw(i);
            if start >= end {
                return Err(DecodeError::ReversedRange);
            }
            if end - start > MAX_RANGE_SPAN {
                return Err(DecodeError::OversizedRange);
            }
        }
        Ok(list)
    }

    fn raw(&self, i: usize) -> (u64, u64) {
        let at = HEADER_LEN + RANGES_PREFIX_LEN + i * RANGE_LEN;
        (read_u64(self.bytes, at), read_u64(self.bytes, at + 8))
    }

    /// Number of ranges (1..=MAX_RANGES).
    pub fn len(&self) -> usize {
        usize::from(self.count)
    }

    /// Always false for a decoded list (kept for API symmetry with `len`).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The ranges, in the order they were written.
    pub fn iter(&self) -> RangeIter<'a> {
        RangeIter {
            list: *self,
            next: 0,
        }
    }
}

/// Iterator over a [`RangeList`].
#[derive(Clone, Debug)]
pub struct RangeIter<'a> {
    list: RangeList<'a>,
    next: usize,
}

impl Iterator for RangeIter<'_> {
    type Item = SeqRange;

    fn next(&mut self) -> Option<SeqRange> {
        if self.next >= self.list.len() {
            return None;
        }
        let (start, end) = self.list.raw(self.next);
        self.next += 1;
        Some(SeqRange { start, end })
    }
}

/// Fill in the CRC of a complete frame in `frame` (the whole datagram).
pub fn finish_frame(frame: &mut [u8]) {
    let crc = crc32fast::hash(&frame[4..]);
    write_u32(frame, 0, crc);
}

/// Set the session offset (header bytes 12..16, see [`Header::session_offset`]) of an
/// encoded frame and refresh its CRC.
pub fn set_session_offset(frame: &mut [u8], offset: u64) {
    write_u32(frame, 12, u32::try_from(offset).unwrap_or(u32::MAX));
    finish_frame(frame);
}

/// Mark an encoded DATA frame as a repair and refresh its CRC.
pub fn set_retransmit(frame: &mut [u8]) {
    set_flags(frame, FLAG_RETRANSMIT);
}

/// Set `flags` (header bits, e.g. [`FLAG_REPEAT`](super::FLAG_REPEAT) on a NAK) in an
/// encoded frame and refresh its CRC. Before sealing: the MAC covers the flags.
pub fn set_flags(frame: &mut [u8], flags: u16) {
    let flags = read_u16(frame, 6) | flags;
    write_u16(frame, 6, flags);
    finish_frame(frame);
}

/// Append the fragments of the encoded DATA frame `next` to the encoded DATA frame in
/// `buf[..len]` when `next` continues it (its `first_seq` is where the frame in `buf` ends),
/// the result fits in `max_len` bytes and the fragment count in a `u16`. Returns the new
/// length, or `None` (and `buf` unchanged). The CRC is stale until [`finish_frame`] or
/// [`set_retransmit`]. Both must be valid DATA frames without a trailer, as a publisher
/// stores them: this is how it packs repairs of consecutive small frames into one datagram.
pub fn append_data_fragments(
    buf: &mut [u8],
    len: usize,
    next: &[u8],
    max_len: usize,
) -> Option<usize> {
    const PREFIX: usize = HEADER_LEN + DATA_PREFIX_LEN;
    if len < PREFIX || next.len() < PREFIX {
        return None;
    }
    let end_seq =
        read_u64(buf, HEADER_LEN).checked_add(u64::from(read_u16(buf, HEADER_LEN + 8)))?;
    if read_u64(next, HEADER_LEN) != end_seq {
        return None;
    }
    let count = read_u16(buf, HEADER_LEN + 8).checked_add(read_u16(next, HEADER_LEN + 8))?;
    let body = &next[PREFIX..];
    let new_len = len + body.len();
    if new_len > max_len.min(buf.len()) {
        return None;
    }
    buf[len..new_len].copy_from_slice(body);
    write_u16(buf, HEADER_LEN + 8, count);
    Some(new_len)
}

/// Builds a DATA frame in a caller-owned buffer, one fragment at a time.
///
/// The writer holds only the frame's length and fragment count, not the buffer, so a
/// publisher can keep a frame open across calls while the bytes live in its ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataFrameWriter {
    len: usize,
    count: u16,
}

impl DataFrameWriter {
    /// Bytes a frame takes before any fragment.
    pub const EMPTY_LEN: usize = HEADER_LEN + DATA_PREFIX_LEN;

    /// Start a DATA frame in `buf`. Fails if `buf` cannot hold even an empty frame.
    pub fn begin(
        buf: &mut [u8],
        stream: u32,
        session: u64,
        first_seq: u64,
    ) -> Result<Self, EncodeError> {
        if buf.len() < Self::EMPTY_LEN {
            return Err(EncodeError::BufferTooSmall);
        }
        Header::new(FrameType::Data, stream, session).emit(buf);
        write_u64(buf, HEADER_LEN, first_seq);
        write_u16(buf, HEADER_LEN + 8, 0);
        write_u16(buf, HEADER_LEN + 10, 0);
        Ok(Self {
            len: Self::EMPTY_LEN,
            count: 0,
        })
    }

    /// Record the frame's distance from the session's first sequence number (see
    /// [`DataFrame::session_offset`]); call before `finish`.
    pub fn set_session_offset(&self, buf: &mut [u8], offset: u64) {
        write_u32(buf, 12, u32::try_from(offset).unwrap_or(u32::MAX));
    }

    /// Set header `flags` (e.g. the group-size class, [`group_flags`](super::group_flags))
    /// on the frame; call before `finish`.
    pub fn set_flags(&self, buf: &mut [u8], flags: u16) {
        write_u16(buf, 6, read_u16(buf, 6) | flags);
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no fragment has been pushed yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Number of fragments pushed so far.
    pub fn count(&self) -> u16 {
        self.count
    }

    /// Largest fragment payload that still fits in a frame of at most `max_len` bytes.
    pub fn room(&self, max_len: usize) -> usize {
        max_len
            .saturating_sub(self.len + FRAGMENT_HEADER_LEN)
            .min(usize::from(u16::MAX))
    }

    /// Append a fragment with `flags` and `payload`.
    pub fn push(&mut self, buf: &mut [u8], flags: u8, payload: &[u8]) -> Result<(), EncodeError> {
        let len = u16::try_from(payload.len()).map_err(|_| EncodeError::FragmentTooLong)?;
        if self.count == u16::MAX {
            return Err(EncodeError::BufferTooSmall);
        }
        let end = self.len + FRAGMENT_HEADER_LEN + payload.len();
        if end > buf.len() {
            return Err(EncodeError::BufferTooSmall);
        }
        write_u16(buf, self.len, len);
        buf[self.len + 2] = flags;
        buf[self.len + 3] = 0;
        buf[self.len + FRAGMENT_HEADER_LEN..end].copy_from_slice(payload);
        self.len = end;
        self.count += 1;
        Ok(())
    }

    /// Write the fragment count and CRC; returns the frame length. The frame is
    /// `buf[..len]`.
    pub fn finish(&self, buf: &mut [u8]) -> usize {
        write_u16(buf, HEADER_LEN + 8, self.count);
        finish_frame(&mut buf[..self.len]);
        self.len
    }
}

/// Encode a HEARTBEAT or CLOSE frame into `buf`; returns its length.
pub fn emit_control(
    buf: &mut [u8],
    frame_type: FrameType,
    stream: u32,
    session: u64,
    next_seq: u64,
    oldest_seq: u64,
) -> Result<usize, EncodeError> {
    let len = HEADER_LEN + CONTROL_BODY_LEN;
    if buf.len() < len {
        return Err(EncodeError::BufferTooSmall);
    }
    Header::new(frame_type, stream, session).emit(buf);
    write_u64(buf, HEADER_LEN, next_seq);
    write_u64(buf, HEADER_LEN + 8, oldest_seq);
    finish_frame(&mut buf[..len]);
    Ok(len)
}

/// Encode a NAK or UNAVAILABLE frame listing `ranges` into `buf`; returns its length.
pub fn emit_ranges(
    buf: &mut [u8],
    frame_type: FrameType,
    stream: u32,
    session: u64,
    ranges: &[SeqRange],
) -> Result<usize, EncodeError> {
    if ranges.is_empty()
        || ranges.len() > MAX_RANGES
        || ranges
            .iter()
            .any(|r| r.start >= r.end || r.end - r.start > MAX_RANGE_SPAN)
    {
        return Err(EncodeError::BadRanges);
    }
    let len = HEADER_LEN + RANGES_PREFIX_LEN + ranges.len() * RANGE_LEN;
    if buf.len() < len {
        return Err(EncodeError::BufferTooSmall);
    }
    Header::new(frame_type, stream, session).emit(buf);
    write_u16(buf, HEADER_LEN, ranges.len() as u16);
    buf[HEADER_LEN + 2..HEADER_LEN + RANGES_PREFIX_LEN].fill(0);
    for (i, r) in ranges.iter().enumerate() {
        let at = HEADER_LEN + RANGES_PREFIX_LEN + i * RANGE_LEN;
        write_u64(buf, at, r.start);
        write_u64(buf, at + 8, r.end);
    }
    finish_frame(&mut buf[..len]);
    Ok(len)
}

/// Encode a STATUS frame into `buf`; returns its length.
///
/// `stream` is the stream the receiver wants, `session` the publisher session it follows
/// (0 if it does not know one yet), `leaving` sets [`STATUS_LEAVING`], `flow` sets
/// [`STATUS_FLOW`] and the position and window.
pub fn emit_status(
    buf: &mut [u8],
    stream: u32,
    session: u64,
    leaving: bool,
    flow: Option<FlowReport>,
) -> Result<usize, EncodeError> {
    let len = HEADER_LEN + STATUS_BODY_LEN;
    if buf.len() < len {
        return Err(EncodeError::BufferTooSmall);
    }
    Header {
        frame_type: FrameType::Status,
        flags: 0,
        stream,
        session,
        session_offset: 0,
    }
    .emit(buf);
    let mut flags = if leaving { STATUS_LEAVING } else { 0 };
    if flow.is_some() {
        flags |= STATUS_FLOW;
    }
    let f = flow.unwrap_or(FlowReport {
        position: 0,
        window: 0,
    });
    write_u32(buf, HEADER_LEN, flags);
    write_u32(buf, HEADER_LEN + 4, f.window);
    write_u64(buf, HEADER_LEN + 8, f.position);
    finish_frame(&mut buf[..len]);
    Ok(len)
}
