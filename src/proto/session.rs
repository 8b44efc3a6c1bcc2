//! Session ids that order by start time.
//!
//! A session id is random per publisher start, so that a restart is recognised. With
//! authentication required, a receiver must also tell a newer session from a replayed
//! older one (an authentic frame recorded earlier stays authentic): it only follows a
//! session whose id is greater than the one it follows. [`session_id`] makes ids that
//! grow with the start time: milliseconds since the Unix epoch in the high 44 bits (until
//! the year 2527), 20 random bits below them. The transport uses it for every publisher.

use std::time::Duration;

/// Bits of randomness below the start time.
pub const SESSION_RANDOM_BITS: u32 = 20;

/// A session id for a publisher started `since_epoch` after the Unix epoch, with `random`
/// supplying the low bits. Ids of publishers started at least a millisecond apart order
/// by start time.
pub fn session_id(since_epoch: Duration, random: u64) -> u64 {
    let millis = u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX);
    let mask = (1u64 << SESSION_RANDOM_BITS) - 1;
    (millis << SESSION_RANDOM_BITS) | (random & mask)
}

/// The start time (since the Unix epoch, millisecond resolution) a [`session_id`] encodes.
pub fn session_start(id: u64) -> Duration {
    Duration::from_millis(id >> SESSION_RANDOM_BITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_order_by_start_time_whatever_the_random_bits() {
        let t = Duration::from_millis(1_795_000_000_000);
        let a = session_id(t, u64::MAX);
        let b = session_id(t + Duration::from_millis(1), 0);
        assert!(b > a);
        assert_eq!(session_start(a), t);
        assert_eq!(a & 0xF_FFFF, 0xF_FFFF);
        assert_ne!(session_id(t, 1), session_id(t, 2));
    }
}
