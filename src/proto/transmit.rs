//! What the state machines hand to the transport to send.

use std::net::SocketAddr;

/// Where a frame produced by a state machine must be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// To everyone following the stream: the multicast group, or, on a network without
    /// multicast, every unicast destination — the transport fans the frame out to each
    /// address [`Publisher::destinations`](crate::proto::Publisher::destinations) yields
    /// (receivers added by STATUS and static ones), read right after the `poll_transmit`
    /// that returned it. Only a publisher produces it.
    Group,
    /// To one peer: a receiver's NAK or STATUS to a publisher.
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
