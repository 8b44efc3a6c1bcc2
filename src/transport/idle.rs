//! Idle strategies: what a driver loop does when a duty cycle found no work.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a driver waits when there is nothing to do. The trade-off is CPU for latency:
/// measured figures are in docs/PERFORMANCE.md.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleStrategy {
    /// Spin on the CPU (one core at 100%): lowest latency.
    #[default]
    BusySpin,
    /// `std::thread::yield_now` between polls: near busy-spin latency when the core is not
    /// contended, gives the core away when it is.
    Yield,
    /// Spin a while, then yield, then sleep with exponential back-off up to `max_sleep`.
    Backoff {
        /// Idle cycles spent spinning before yielding.
        spins: u32,
        /// Idle cycles spent yielding before sleeping.
        yields: u32,
        /// Longest sleep.
        max_sleep: Duration,
    },
    /// Block in the kernel (`epoll`) until a datagram or a timer is due: no CPU when idle,
    /// a wake-up (several microseconds) per message.
    Block,
}

impl IdleStrategy {
    /// A back-off that spins for ~10k idle cycles, yields for ~1k, then sleeps up to 1 ms.
    pub const DEFAULT_BACKOFF: IdleStrategy = IdleStrategy::Backoff {
        spins: 10_000,
        yields: 1_000,
        max_sleep: Duration::from_millis(1),
    };
}

/// Per-loop state of an idle strategy.
#[derive(Clone, Debug, Default)]
pub struct Idler {
    idle_cycles: u64,
}

impl Idler {
    /// Call after each duty cycle with the work it did: on no work, wait as the strategy
    /// says. (`Block` does nothing here: the caller blocks in its poller instead.)
    pub fn idle(&mut self, strategy: IdleStrategy, work: usize) {
        if work > 0 {
            self.idle_cycles = 0;
            return;
        }
        self.idle_cycles += 1;
        match strategy {
            IdleStrategy::BusySpin => std::hint::spin_loop(),
            IdleStrategy::Yield => std::thread::yield_now(),
            IdleStrategy::Backoff {
                spins,
                yields,
                max_sleep,
            } => {
                let n = self.idle_cycles;
                let (spins, yields) = (u64::from(spins), u64::from(yields));
                if n <= spins {
                    std::hint::spin_loop();
                } else if n <= spins + yields {
                    std::thread::yield_now();
                } else {
                    let k = (n - spins - yields).min(20) as u32;
                    std::thread::sleep(Duration::from_micros(1u64 << k).min(max_sleep));
                }
            }
            IdleStrategy::Block => {}
        }
    }
}
