//! Token-bucket rate limiting (retransmit bandwidth cap, optional send-rate limit).

use std::time::{Duration, Instant};

/// A token bucket measured in bytes: `rate` bytes per second refill, at most `burst` saved.
///
/// Pure: the caller passes `now`. Tokens are kept in nanobyte units (bytes x 1e9) so refill
/// is exact integer arithmetic, whatever the call frequency.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    rate: u64,
    burst_nb: u128,
    tokens_nb: u128,
    last: Instant,
}

const NANO: u128 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket refilling at `rate` bytes/s holding at most `burst` bytes.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        let burst_nb = u128::from(burst.max(1)) * NANO;
        Self {
            rate,
            burst_nb,
            tokens_nb: burst_nb,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_nanos();
        if dt > 0 {
            self.tokens_nb = (self.tokens_nb + dt * u128::from(self.rate)).min(self.burst_nb);
            self.last = now;
        }
    }

    /// Take `bytes` tokens if available now; returns whether they were taken.
    pub fn try_take(&mut self, now: Instant, bytes: usize) -> bool {
        self.refill(now);
        let need = bytes as u128 * NANO;
        // A request larger than the burst can never be satisfied in full; let it through
        // when the bucket is full so oversized frames are paced rather than starved.
        let need = need.min(self.burst_nb);
        if self.tokens_nb >= need {
            self.tokens_nb -= need;
            true
        } else {
            false
        }
    }

    /// Return `parts`/`of` of one token taken earlier (a datagram found cheaper than it was
    /// charged for), up to the burst.
    pub fn give_back(&mut self, parts: u32, of: u32) {
        let refund = NANO * u128::from(parts) / u128::from(of.max(1));
        self.tokens_nb = (self.tokens_nb + refund).min(self.burst_nb);
    }

    /// Whole bytes available at `now` (after refill), without taking any.
    pub fn available(&self, now: Instant) -> u64 {
        self.available_up_to(now, u64::MAX)
    }

    /// `available(now).min(max)`, without a division when at least `max` are available
    /// (the common case on a per-poll path).
    pub fn available_up_to(&self, now: Instant, max: u64) -> u64 {
        let dt = now.saturating_duration_since(self.last).as_nanos();
        let have = (self.tokens_nb + dt * u128::from(self.rate)).min(self.burst_nb);
        if have >= u128::from(max) * NANO {
            max
        } else {
            (have / NANO) as u64
        }
    }

    /// Bytes refilled over `d` (ignoring the burst cap).
    pub fn refill_over(&self, d: Duration) -> u64 {
        (d.as_nanos() * u128::from(self.rate) / NANO).min(u128::from(u64::MAX)) as u64
    }

    /// When `bytes` tokens will be available (now, if they already are).
    pub fn ready_at(&self, now: Instant, bytes: usize) -> Instant {
        let need = (bytes as u128 * NANO).min(self.burst_nb);
        let dt = now.saturating_duration_since(self.last).as_nanos();
        let have = (self.tokens_nb + dt * u128::from(self.rate)).min(self.burst_nb);
        if have >= need || self.rate == 0 {
            return now;
        }
        let wait_ns = (need - have).div_ceil(u128::from(self.rate));
        now + Duration::from_nanos(wait_ns.min(u128::from(u64::MAX)) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_at_rate_and_caps_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        assert!(b.try_take(t0, 100));
        assert!(!b.try_take(t0, 1));
        assert_eq!(b.ready_at(t0, 10), t0 + Duration::from_millis(10));
        assert!(b.try_take(t0 + Duration::from_millis(10), 10));
        // A long pause refills only up to the burst.
        let later = t0 + Duration::from_secs(100);
        assert!(b.try_take(later, 100));
        assert!(!b.try_take(later, 1));
    }

    #[test]
    fn bytes_over_a_window_never_exceed_rate_plus_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1_000_000, 10_000, t0);
        let mut sent = 0u64;
        for us in 0..1_000_000u64 {
            if b.try_take(t0 + Duration::from_micros(us), 1500) {
                sent += 1500;
            }
        }
        assert!(sent <= 1_000_000 + 10_000, "{sent}");
        assert!(sent >= 990_000, "{sent}");
    }

    #[test]
    fn available_up_to_caps_without_changing_the_count() {
        let t0 = Instant::now();
        let b = TokenBucket::new(1000, 100, t0);
        assert_eq!(b.available(t0), 100);
        assert_eq!(b.available_up_to(t0, 64), 64);
        assert_eq!(b.available_up_to(t0, 100), 100);
        assert_eq!(b.available_up_to(t0, 1000), 100);
        let mut b = b;
        assert!(b.try_take(t0, 95));
        assert_eq!(b.available_up_to(t0, 64), 5);
        assert_eq!(b.available_up_to(t0 + Duration::from_millis(10), 64), 15);
    }
}
