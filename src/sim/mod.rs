//! A deterministic network simulator driving the sans-IO core in virtual time.
//!
//! One or more publishers multicast to N receivers over simulated links with random and
//! burst (Gilbert-Elliott) loss, duplication, delay and jitter (which reorders); NAKs travel
//! back over lossy links too. Everything is driven by one seeded RNG and a virtual clock
//! that jumps to the next event, so a seed reproduces a run exactly and thousands of runs
//! take seconds.
//!
//! Topology: each publisher has an *uplink* (loss there is seen by every receiver, like a
//! drop at the publisher's NIC or switch port) and each receiver a *downlink* (independent
//! loss) and a *return link* for its NAKs.

mod check;
pub mod hostile;
mod network;

pub use check::{CheckError, Checker, SessionRecord};
pub use network::{GilbertElliott, LinkConfig};

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::proto::wire::{FLAG_RETRANSMIT, FrameType, Header};
use crate::proto::{
    Destination, Event, OfferError, OwnedEvent, Publisher, PublisherConfig, Receiver,
    ReceiverConfig, SourceId,
};
use network::Link;

/// What one simulated publisher does.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Messages to publish.
    pub messages: usize,
    /// Virtual time between offers (bursts of `burst` messages are offered at once).
    pub interval: Duration,
    /// Messages offered back to back at each tick.
    pub burst: usize,
    /// Payload sizes are drawn from `[min_size, max_size]`, except that with probability
    /// `large_fraction` a message of `large_size` bytes is offered (to exercise
    /// fragmentation).
    pub min_size: usize,
    /// See `min_size`.
    pub max_size: usize,
    /// See `min_size`.
    pub large_fraction: f64,
    /// See `min_size`.
    pub large_size: usize,
    /// Delay before the first offer.
    pub start: Duration,
    /// How long the publisher keeps serving NAKs after `close` before it disappears.
    pub linger: Duration,
    /// If set, the publisher is killed (no CLOSE) after this many messages and a new
    /// session starts from the same address right after.
    pub restart_after: Option<usize>,
}

impl Default for Workload {
    fn default() -> Self {
        Self {
            messages: 500,
            interval: Duration::from_micros(20),
            burst: 1,
            min_size: 1,
            max_size: 200,
            large_fraction: 0.0,
            large_size: 4000,
            start: Duration::from_millis(1),
            linger: Duration::from_secs(2),
            restart_after: None,
        }
    }
}

/// The deterministic payload of message `seq` of `session`, `len` bytes long.
pub fn payload_byte(session: u64, seq: u64, i: usize) -> u8 {
    (session ^ seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i as u64).wrapping_mul(31)) as u8
}

/// Simulation settings.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of everything random.
    pub seed: u64,
    /// Publisher core settings (each publisher gets `stream` = its index).
    pub publisher: PublisherConfig,
    /// Receiver core settings.
    pub receiver: ReceiverConfig,
    /// What each publisher does.
    pub workloads: Vec<Workload>,
    /// Number of receivers.
    pub receivers: usize,
    /// Each publisher's uplink (shared by all receivers).
    pub uplink: LinkConfig,
    /// Each receiver's downlink.
    pub downlink: LinkConfig,
    /// Each receiver's link back to the publishers (NAKs).
    pub return_link: LinkConfig,
    /// Virtual time limit; the run stops there even if work remains.
    pub max_time: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            publisher: PublisherConfig::default(),
            receiver: ReceiverConfig::default(),
            workloads: vec![Workload::default()],
            receivers: 3,
            uplink: LinkConfig::default(),
            downlink: LinkConfig::default(),
            return_link: LinkConfig::default(),
            max_time: Duration::from_secs(60),
        }
    }
}

/// One event a receiver reported, with the virtual time it was reported at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// Virtual time of the report.
    pub at: Duration,
    /// The event.
    pub event: OwnedEvent,
}

struct SimPublisher {
    addr: SocketAddr,
    stream: u32,
    core: Option<Publisher>,
    workload: Workload,
    offered: usize,
    next_offer: Duration,
    closed_at: Option<Duration>,
    /// When a killed publisher's new session starts.
    restart_at: Option<Duration>,
    sessions: Vec<SessionRecord>,
}

struct SimReceiver {
    addr: SocketAddr,
    core: Receiver,
    down: Link,
    back: Link,
    log: Vec<Logged>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    at: Duration,
    order: u64,
    from: SocketAddr,
    /// Receiver index, or `usize::MAX - publisher index` for a publisher.
    to: usize,
    bytes: Vec<u8>,
}

/// A simulation run.
pub struct Sim {
    cfg: SimConfig,
    t0: Instant,
    now: Duration,
    rng: SmallRng,
    publishers: Vec<SimPublisher>,
    uplinks: Vec<Link>,
    receivers: Vec<SimReceiver>,
    queue: BinaryHeap<Reverse<InFlight>>,
    order: u64,
    buf: Vec<u8>,
    /// Frames dropped on publisher uplinks (lost by every receiver), per publisher.
    pub uplink_drops: Vec<u64>,
    /// NAK frames that reached a publisher, per publisher.
    pub naks_delivered: Vec<u64>,
    retransmits: Vec<u64>,
    auth_failures: Vec<u64>,
    flow_blocked: Vec<u64>,
}

/// How long a killed publisher takes to come back with a new session: longer than any
/// simulated reordering, as a process restart is on a real network.
const RESTART_TIME: Duration = Duration::from_millis(10);

fn addr(net: u8, host: usize, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(10, 0, net, host as u8 + 1),
        port,
    ))
}

impl Sim {
    /// Build a simulation from `cfg`.
    pub fn new(cfg: SimConfig) -> Self {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let t0 = Instant::now();
        let publishers = cfg
            .workloads
            .iter()
            .enumerate()
            .map(|(i, w)| SimPublisher {
                addr: addr(0, i, 5000),
                stream: i as u32,
                core: None,
                workload: w.clone(),
                offered: 0,
                next_offer: w.start,
                closed_at: None,
                restart_at: None,
                sessions: Vec::new(),
            })
            .collect::<Vec<_>>();
        let uplinks = (0..publishers.len())
            .map(|_| Link::new(cfg.uplink.clone()))
            .collect();
        let receivers = (0..cfg.receivers)
            .map(|j| SimReceiver {
                addr: addr(1, j, 6000),
                core: Receiver::new(cfg.receiver.clone(), rng.random()),
                down: Link::new(cfg.downlink.clone()),
                back: Link::new(cfg.return_link.clone()),
                log: Vec::new(),
            })
            .collect();
        let n = publishers.len();
        let mut sim = Self {
            t0,
            now: Duration::ZERO,
            rng,
            publishers,
            uplinks,
            receivers,
            queue: BinaryHeap::new(),
            order: 0,
            buf: vec![0; 70_000],
            uplink_drops: vec![0; n],
            naks_delivered: vec![0; n],
            retransmits: vec![0; n],
            auth_failures: vec![0; n],
            flow_blocked: vec![0; n],
            cfg,
        };
        for i in 0..n {
            sim.start_session(i);
        }
        sim
    }

    fn start_session(&mut self, i: usize) {
        let mut session: u64 = self.rng.random();
        let p = &self.publishers[i];
        if self.cfg.publisher.auth.is_on() {
            // Receivers that require authentication follow only newer sessions: make
            // them grow, as `proto::session::session_id` does with the start time.
            session >>= 8;
            if let Some(prev) = p.sessions.last() {
                session = prev.session + 1 + (session >> 32);
            }
        }
        let mut pcfg = self.cfg.publisher.clone();
        let p = &mut self.publishers[i];
        pcfg.stream = p.stream;
        let core = Publisher::new(pcfg, session, self.t0 + self.now);
        p.sessions.push(SessionRecord::new(
            SourceId {
                addr: p.addr,
                stream: p.stream,
            },
            session,
        ));
        p.core = Some(core);
    }

    fn instant(&self) -> Instant {
        self.t0 + self.now
    }

    /// Run to quiescence (every publisher gone, every receiver idle) or `max_time`.
    pub fn run(&mut self) {
        loop {
            self.step_publishers();
            self.step_receivers();
            let Some(next) = self.next_event() else { break };
            if next > self.cfg.max_time {
                break;
            }
            self.now = next.max(self.now);
            self.deliver_due();
        }
    }

    fn next_event(&self) -> Option<Duration> {
        let mut next: Option<Duration> = self.queue.peek().map(|Reverse(f)| f.at);
        let mut consider = |t: Duration| next = Some(next.map_or(t, |n| n.min(t)));
        for p in &self.publishers {
            if let Some(t) = p.restart_at {
                consider(t);
            }
            if let Some(core) = &p.core {
                consider(core.poll_timeout().saturating_duration_since(self.t0));
                if p.offered < p.workload.messages {
                    consider(p.next_offer);
                } else if let Some(c) = p.closed_at {
                    if self.now < c + p.workload.linger / 2 {
                        consider(c + p.workload.linger / 2);
                    }
                    consider(c + p.workload.linger);
                }
            }
        }
        for r in &self.receivers {
            if let Some(t) = r.core.poll_timeout() {
                consider(t.saturating_duration_since(self.t0));
            }
        }
        // Never stand still: whatever was due now was handled by the steps before, so a
        // deadline that did not move is retried a microsecond later.
        next.map(|n| {
            if n <= self.now {
                self.now + Duration::from_micros(1)
            } else {
                n
            }
        })
    }

    fn deliver_due(&mut self) {
        while self.queue.peek().is_some_and(|Reverse(f)| f.at <= self.now) {
            let Reverse(f) = self.queue.pop().expect("peeked");
            let now = self.instant();
            if f.to >= usize::MAX - self.publishers.len() {
                let i = usize::MAX - f.to;
                if let Some(core) = &mut self.publishers[i].core {
                    // Flow reports (STATUS) reach the publisher too; count only NAKs.
                    if Header::parse(&f.bytes).is_ok_and(|h| h.frame_type == FrameType::Nak) {
                        self.naks_delivered[i] += 1;
                    }
                    let before = core.stats().auth_failures;
                    core.handle_datagram(now, f.from, &f.bytes);
                    self.auth_failures[i] += core.stats().auth_failures - before;
                }
            } else {
                let r = &mut self.receivers[f.to];
                let at = self.now;
                let log = &mut r.log;
                r.core
                    .handle_datagram(now, f.from, &f.bytes, &mut |ev| log.push(owned(ev, at)));
            }
        }
    }

    fn send(&mut self, from: SocketAddr, to: usize, bytes: Vec<u8>, delay: Duration) {
        self.order += 1;
        let f = InFlight {
            at: self.now + delay,
            order: self.order,
            from,
            to,
            bytes,
        };
        self.queue.push(Reverse(f));
    }

    fn step_publishers(&mut self) {
        for i in 0..self.publishers.len() {
            self.offer_due(i);
            let now = self.instant();
            let p = &mut self.publishers[i];
            if let (Some(c), Some(_)) = (p.closed_at, &p.core)
                && self.now >= c + p.workload.linger
            {
                p.core = None;
                p.sessions.last_mut().expect("session").gone_at = Some(self.now);
                continue;
            }
            // As the transport's `close(linger)` does: half-way through the linger, what
            // flow control still holds goes out (receivers recover it or report it lost),
            // so that no offered message is left unsent and unannounced.
            if let (Some(c), Some(core)) = (p.closed_at, &mut p.core)
                && self.now >= c + p.workload.linger / 2
            {
                core.release_flow();
            }
            loop {
                let p = &mut self.publishers[i];
                let Some(core) = &mut p.core else { break };
                let before = *core.stats();
                let t = core.poll_transmit(now, &mut self.buf);
                self.flow_blocked[i] += core.stats().flow_blocked - before.flow_blocked;
                let Some(t) = t else {
                    break;
                };
                let coalesced = core.stats().repairs_coalesced - before.repairs_coalesced;
                let copy = core.stats().repair_copies != before.repair_copies;
                let oldest = core.oldest_retained();
                p.sessions
                    .last_mut()
                    .expect("session")
                    .note_oldest(self.now, oldest);
                debug_assert_eq!(t.destination, Destination::Group);
                let from = p.addr;
                let frame = self.buf[..t.len].to_vec();
                if let Ok(h) = Header::parse(&frame)
                    && h.frame_type == FrameType::Data
                    && h.flags & FLAG_RETRANSMIT != 0
                    && !copy
                {
                    // Frames repaired: the datagram's first and those packed after it.
                    self.retransmits[i] += 1 + coalesced;
                }
                self.multicast(i, from, frame);
            }
            let p = &mut self.publishers[i];
            if let Some(core) = &p.core {
                p.sessions
                    .last_mut()
                    .expect("session")
                    .note_oldest(self.now, core.oldest_retained());
            }
        }
    }

    fn offer_due(&mut self, i: usize) {
        let now = self.instant();
        let p = &mut self.publishers[i];
        if p.restart_at.is_some_and(|t| t <= self.now) {
            p.restart_at = None;
            self.start_session(i);
        }
        let p = &mut self.publishers[i];
        let Some(core) = &mut p.core else { return };
        while p.offered < p.workload.messages && p.next_offer <= self.now {
            for _ in 0..p.workload.burst {
                if p.offered == p.workload.messages {
                    break;
                }
                if p.workload.restart_after == Some(p.offered) && p.sessions.len() == 1 {
                    // Kill: the session vanishes without CLOSE; a new one starts from the
                    // same address once a restarted process would be up again.
                    let rec = p.sessions.last_mut().expect("session");
                    rec.gone_at = Some(self.now);
                    rec.killed = true;
                    p.workload.restart_after = None;
                    p.core = None;
                    p.restart_at = Some(self.now + RESTART_TIME);
                    return;
                }
                let w = &p.workload;
                let len = if self.rng.random_bool(w.large_fraction) {
                    w.large_size
                } else {
                    self.rng.random_range(w.min_size..=w.max_size)
                };
                let rec = p.sessions.last_mut().expect("session");
                let seq = core.next_seq();
                let payload: Vec<u8> = (0..len)
                    .map(|k| payload_byte(rec.session, seq, k))
                    .collect();
                match core.offer(now, &payload) {
                    Ok(s) => {
                        debug_assert_eq!(s, seq);
                        rec.published.push((seq, core.next_seq() - seq, len));
                        p.offered += 1;
                    }
                    Err(OfferError::BackPressure) | Err(OfferError::RateLimited(_)) => {
                        // Retry after the transport has sent what is queued.
                        return;
                    }
                    Err(e) => panic!("offer failed: {e}"),
                }
            }
            p.next_offer += p.workload.interval;
        }
        if p.offered == p.workload.messages && p.closed_at.is_none() {
            core.close(now);
            p.closed_at = Some(self.now);
        }
    }

    fn multicast(&mut self, i: usize, from: SocketAddr, frame: Vec<u8>) {
        let copies = self.uplinks[i].transmit(&mut self.rng);
        if copies.is_empty() {
            self.uplink_drops[i] += 1;
        }
        for up_delay in copies {
            for j in 0..self.receivers.len() {
                for down_delay in self.receivers[j].down.transmit(&mut self.rng) {
                    self.send(from, j, frame.clone(), up_delay + down_delay);
                }
            }
        }
    }

    fn step_receivers(&mut self) {
        let now = self.instant();
        for j in 0..self.receivers.len() {
            let at = self.now;
            let r = &mut self.receivers[j];
            if r.core.poll_timeout().is_some_and(|t| t <= now) {
                let log = &mut r.log;
                r.core
                    .handle_timeout(now, &mut |ev| log.push(owned(ev, at)));
            }
            loop {
                let r = &mut self.receivers[j];
                let Some(t) = r.core.poll_transmit(now, &mut self.buf) else {
                    break;
                };
                let Destination::Unicast(to) = t.destination else {
                    panic!("receiver multicast")
                };
                let from = r.addr;
                let delays = r.back.transmit(&mut self.rng);
                let Some(pi) = self.publishers.iter().position(|p| p.addr == to) else {
                    continue;
                };
                for d in delays {
                    self.send(from, usize::MAX - pi, self.buf[..t.len].to_vec(), d);
                }
            }
        }
    }

    /// Virtual time elapsed.
    pub fn elapsed(&self) -> Duration {
        self.now
    }

    /// Every session every publisher ran, with what it published.
    pub fn sessions(&self) -> Vec<&SessionRecord> {
        self.publishers
            .iter()
            .flat_map(|p| p.sessions.iter())
            .collect()
    }

    /// The events receiver `j` reported.
    pub fn log(&self, j: usize) -> &[Logged] {
        &self.receivers[j].log
    }

    /// Receiver `j`'s core (for counters).
    pub fn receiver(&self, j: usize) -> &Receiver {
        &self.receivers[j].core
    }

    /// Number of receivers.
    pub fn receiver_count(&self) -> usize {
        self.receivers.len()
    }

    /// Frames publisher `i` repaired, over all its sessions (a repair datagram may carry
    /// several consecutive frames; each counts). Copies (`repair_copies`) do not count.
    pub fn publisher_retransmits(&self, i: usize) -> u64 {
        self.retransmits[i]
    }

    /// Frames publisher `i` dropped for failing authentication, over all its sessions.
    pub fn publisher_auth_failures(&self, i: usize) -> u64 {
        self.auth_failures[i]
    }

    /// Times flow control held publisher `i`'s new data back, over all its sessions.
    pub fn publisher_flow_blocked(&self, i: usize) -> u64 {
        self.flow_blocked[i]
    }

    /// Check the delivery invariant for every receiver and session.
    pub fn check(&self) -> Result<(), CheckError> {
        let sessions = self.sessions();
        for j in 0..self.receivers.len() {
            Checker::new(&sessions).check(j, self.log(j))?;
        }
        Ok(())
    }
}

fn owned(ev: Event<'_>, at: Duration) -> Logged {
    Logged {
        at,
        event: ev.into(),
    }
}
