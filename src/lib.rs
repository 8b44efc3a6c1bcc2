//! nakcast: brokerless, low-latency UDP multicast messaging with NACK-based loss recovery.
//!
//! # Layers
//! ```text
//! user ──offer──▶ transport::Publisher ──▶ proto::Publisher ──frames──▶ socket ──▶ group
//! group ──▶ socket ──▶ transport::Subscriber ──▶ proto::Receiver ──events──▶ user
//!                                   NAKs ◀── unicast ──┘
//! ```
//! - [`proto`]: the sans-IO core (wire format, publisher and receiver state machines). No
//!   sockets, clocks or threads: bytes and an `Instant` in, frames, events and deadlines out.
//! - [`sim`]: a deterministic network simulator that drives the core in virtual time.
//! - [`transport`]: sockets, batched syscalls, and the [`Publisher`] / [`Subscriber`] API.
//! - [`bench`](mod@bench): the in-process benchmark behind `nakcast bench`, callable from code.
#![deny(unsafe_code)]

#[cfg(unix)]
pub mod bench;
mod hint;
pub mod proto;
pub mod sim;
#[cfg(unix)]
pub mod transport;

pub use proto::publisher::{FlowControl, PublisherConfig};
pub use proto::{Event, JoinPolicy, LossReason, OfferError, ReceiverConfig, SourceId};
#[cfg(unix)]
pub use transport::{
    Channel, Error, IdleStrategy, Interface, OwnedEvent, Publisher, PublisherOptions,
    SharedPublisher, SocketConfig, Subscriber, SubscriberOptions, SubscriberThread,
};

/// The README's example, compiled as a doctest so it cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// docs/GUIDE.md's examples, compiled as doctests (run where they need no other host).
#[doc = include_str!("../docs/GUIDE.md")]
#[cfg(doctest)]
pub struct GuideDoctests;

/// docs/SECURITY.md's configuration example, compiled as a doctest.
#[doc = include_str!("../docs/SECURITY.md")]
#[cfg(doctest)]
pub struct SecurityDoctests;
