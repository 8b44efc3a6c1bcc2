//! Simulated links: loss (independent and Gilbert-Elliott bursts), duplication, delay and
//! jitter.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

/// Two-state burst loss: in the bad state packets are lost with `loss_bad`.
#[derive(Clone, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Per-packet probability of moving from the good to the bad state.
    pub enter_bad: f64,
    /// Per-packet probability of moving from the bad back to the good state.
    pub leave_bad: f64,
    /// Loss probability in the bad state.
    pub loss_bad: f64,
}

/// One direction of a simulated link.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// Independent loss probability (in the good state).
    pub loss: f64,
    /// Optional burst loss on top.
    pub burst: Option<GilbertElliott>,
    /// Probability a packet is delivered twice.
    pub duplicate: f64,
    /// Fixed one-way delay.
    pub delay: Duration,
    /// Uniform extra delay in `[0, jitter]`, drawn per packet (reorders packets).
    pub jitter: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            loss: 0.0,
            burst: None,
            duplicate: 0.0,
            delay: Duration::from_micros(25),
            jitter: Duration::ZERO,
        }
    }
}

/// A link's configuration and its burst state.
#[derive(Clone, Debug)]
pub(super) struct Link {
    cfg: LinkConfig,
    bad: bool,
}

impl Link {
    pub fn new(cfg: LinkConfig) -> Self {
        Self { cfg, bad: false }
    }

    /// Decide the fate of one packet: the delays of the copies delivered (none if lost).
    pub fn transmit(&mut self, rng: &mut SmallRng) -> Vec<Duration> {
        let loss = match &self.cfg.burst {
            Some(ge) => {
                let flip = if self.bad { ge.leave_bad } else { ge.enter_bad };
                if rng.random_bool(flip) {
                    self.bad = !self.bad;
                }
                if self.bad { ge.loss_bad } else { self.cfg.loss }
            }
            None => self.cfg.loss,
        };
        if rng.random_bool(loss) {
            return Vec::new();
        }
        let copies = if rng.random_bool(self.cfg.duplicate) {
            2
        } else {
            1
        };
        (0..copies)
            .map(|_| {
                let jitter = if self.cfg.jitter.is_zero() {
                    Duration::ZERO
                } else {
                    self.cfg.jitter.mul_f64(rng.random::<f64>())
                };
                self.cfg.delay + jitter
            })
            .collect()
    }
}
