//! nakcast: brokerless, low-latency UDP multicast messaging with NACK-based loss recovery.
