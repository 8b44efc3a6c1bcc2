//! Repair latency: how long recovered data kept the application waiting.
//!
//! One sample per fragment that was NAKed and then arrived: the time from detecting the gap
//! that held it to delivering it in order. That is what a subscriber feels (the repair's
//! round trip, the NAK backoff, and any wait for earlier gaps), unlike the NAK-to-repair
//! round trip alone. Fragments that arrived before their NAK was due (reordering) and
//! fragments reported lost are not samples.

use std::time::Duration;

use hdrhistogram::Histogram;

/// Highest latency recorded exactly; longer samples saturate to it (an hour).
const MAX_NS: u64 = 3_600_000_000_000;

/// A fixed-size latency histogram (nanoseconds, two significant digits): recording never
/// allocates.
#[derive(Clone, Debug)]
pub struct RepairLatency {
    hist: Histogram<u64>,
}

impl Default for RepairLatency {
    fn default() -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, MAX_NS, 2).expect("static histogram bounds"),
        }
    }
}

impl RepairLatency {
    /// Record one sample.
    pub fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.hist.saturating_record(ns.clamp(1, MAX_NS));
    }

    /// Number of samples.
    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    /// The latency at quantile `q` (0.0..=1.0), or `None` without samples.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        (!self.hist.is_empty()).then(|| Duration::from_nanos(self.hist.value_at_quantile(q)))
    }

    /// The largest sample, or `None` without samples.
    pub fn max(&self) -> Option<Duration> {
        (!self.hist.is_empty()).then(|| Duration::from_nanos(self.hist.max()))
    }

    /// Add every sample of `other` (e.g. to summarise several receivers).
    pub fn merge(&mut self, other: &RepairLatency) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    /// The underlying histogram (nanoseconds), for percentile dumps.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_within_two_digits() {
        let mut r = RepairLatency::default();
        assert_eq!(r.quantile(0.5), None);
        for us in 1..=100u64 {
            r.record(Duration::from_micros(us));
        }
        assert_eq!(r.count(), 100);
        let p50 = r.quantile(0.5).unwrap().as_nanos() as f64;
        assert!((p50 - 50_000.0).abs() / 50_000.0 < 0.02, "{p50}");
        let p99 = r.quantile(0.99).unwrap().as_nanos() as f64;
        assert!((p99 - 99_000.0).abs() / 99_000.0 < 0.02, "{p99}");
        let mut all = RepairLatency::default();
        all.merge(&r);
        all.merge(&r);
        assert_eq!(all.count(), 200);
        r.record(Duration::from_secs(100_000));
        assert!(r.max().unwrap() >= Duration::from_secs(3599));
    }
}
