//! The sans-IO protocol core: wire format and the publisher and receiver state machines.
//!
//! Nothing in here opens a socket, reads a clock, spawns a thread or uses a global RNG:
//! bytes and an injected [`std::time::Instant`] go in; frames to send, events and the next
//! deadline come out. The transport layer drives it; the simulator drives it in tests.

pub mod auth;
pub mod pacing;
pub mod publisher;
pub mod receiver;
pub mod ring;
pub mod session;
pub mod transmit;
pub mod wire;

pub use auth::{AuthConfig, AuthKey, Keyring};
pub use publisher::{FlowControl, OfferError, Publisher, PublisherConfig, PublisherStats};
pub use receiver::{
    Event, JoinPolicy, LossReason, OwnedEvent, Receiver, ReceiverConfig, ReceiverFootprint,
    ReceiverStats, RepairLatency, SourceId,
};
pub use transmit::{Destination, Transmit};
