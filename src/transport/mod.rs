//! Socket layer: UDP socket set-up ([`socket`]) and batched, allocation-free
//! datagram I/O ([`batch`]). No protocol logic lives here.
//!
//! Unix only (the batch layer talks to the kernel through `libc`).

// The only modules allowed `unsafe`: syscall wrappers, each block with a SAFETY comment.
#[allow(unsafe_code)]
pub mod batch;
#[allow(unsafe_code)]
pub mod socket;

pub use batch::{Datagram, PushError, RecvBatch, SendBatch, Truncated};
pub use socket::{
    BufferSizes, Interface, OpenedSocket, ResolvedInterface, SocketConfig, SocketWarning,
    TransportError, open_multicast_receiver, open_sender, open_unicast_receiver, resolve_interface,
};
