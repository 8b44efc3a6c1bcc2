//! The I/O layer: sockets, batched syscalls and the user-facing [`Publisher`] and
//! [`Subscriber`] that drive the protocol core.
//!
//! Unix only (the batch layer talks to the kernel through `libc`).

// The only modules allowed `unsafe` here: syscall wrappers, each block with a SAFETY
// comment. (Elsewhere only `crate::hint`, the CPU prefetch.)
#[allow(unsafe_code)]
pub mod batch;
pub mod channel;
#[doc(hidden)]
pub mod doc_support;
pub mod driver;
pub mod error;
pub mod idle;
pub mod publisher;
#[allow(unsafe_code)]
pub mod socket;
pub mod subscriber;

pub use crate::proto::receiver::OwnedEvent;
pub use batch::{Datagram, PushError, RecvBatch, SendBatch, Truncated};
pub use channel::{Channel, ChannelParseError};
#[doc(hidden)]
pub use doc_support::{doc_channel, doc_poll_until};
pub use driver::{EventIter, SharedPublisher, SubscriberThread};
pub use error::Error;
pub use idle::IdleStrategy;
pub use publisher::{MAX_RECEIVED_PER_POLL, Publisher, PublisherOptions};
pub use socket::{
    BufferSizes, Interface, OpenedSocket, ResolvedInterface, SocketConfig, SocketWarning,
    TransportError, open_multicast_receiver, open_reply_receiver, open_sender,
    open_unicast_receiver, resolve_interface,
};
pub use subscriber::{MAX_DATAGRAM, MIN_DATAGRAM, Subscriber, SubscriberOptions};
