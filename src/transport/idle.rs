//! Idle strategies: what a driver loop does when a duty cycle found no work.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a driver waits when there is nothing to do. The trade-off is CPU for latency:
/// measured figures are in docs/PERFORMANCE.md.
///
/// ```
/// # use nakcast::{IdleStrategy, Subscriber, SubscriberOptions};
/// # let sub = Subscriber::new(SubscriberOptions::new(nakcast::transport::doc_channel()))?;
/// let running = sub.spawn(IdleStrategy::Block, |event| println!("{event:?}")); // no CPU when idle
/// let from_config: IdleStrategy = serde_json::from_str(r#""yield""#)?; // snake_case names
/// assert_eq!(from_config, IdleStrategy::Yield);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    ///
    /// ```
    /// # use nakcast::{IdleStrategy, Publisher, PublisherOptions};
    /// # let publisher = Publisher::new(PublisherOptions::new(nakcast::transport::doc_channel()))?;
    /// let shared = publisher.spawn(IdleStrategy::DEFAULT_BACKOFF); // cheap when idle
    /// shared.offer(b"hello")?;
    /// # shared.close(std::time::Duration::ZERO)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub const DEFAULT_BACKOFF: IdleStrategy = IdleStrategy::Backoff {
        spins: 10_000,
        yields: 1_000,
        max_sleep: Duration::from_millis(1),
    };
}

/// Per-loop state of an idle strategy.
///
/// ```
/// # use nakcast::{IdleStrategy, Publisher, PublisherOptions};
/// # use nakcast::transport::idle::Idler;
/// # let mut publisher = Publisher::new(PublisherOptions::new(nakcast::transport::doc_channel()))?;
/// let mut idler = Idler::default();
/// for _ in 0..100 {
///     let work = publisher.poll()?; // your own duty cycle
///     idler.idle(IdleStrategy::DEFAULT_BACKOFF, work); // waits only when there was no work
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct Idler {
    idle_cycles: u64,
}

impl Idler {
    /// Call after each duty cycle with the work it did: on no work, wait as the strategy
    /// says. (`Block` does nothing here: the caller blocks in its poller instead.)
    ///
    /// ```
    /// # use nakcast::IdleStrategy;
    /// # use nakcast::transport::idle::Idler;
    /// let mut idler = Idler::default();
    /// idler.idle(IdleStrategy::Yield, 0); // no work: yields the core once
    /// idler.idle(IdleStrategy::Yield, 3); // work: returns at once and resets the back-off
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
