//! What the state machines hand to the transport to send.

use std::net::SocketAddr;

/// Where a frame produced by a state machine must be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To the multicast group (or every unicast destination) of the stream.
    Group,
    /// To one peer.
    Unicast(SocketAddr),
}

/// A frame ready to send: `buf[..len]` of the buffer given to `poll_transmit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it.
    pub destination: Destination,
    /// Length of the frame in the caller's buffer.
    pub len: usize,
}
