//! nakcast: brokerless, low-latency UDP multicast messaging with NACK-based loss recovery.

#[cfg(unix)]
pub mod transport;
