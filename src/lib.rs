//! nakcast: brokerless, low-latency UDP multicast messaging with NACK-based loss recovery.
#![deny(unsafe_code)]

pub mod proto;
pub mod sim;
#[cfg(unix)]
pub mod transport;
