//! The benchmark behind `nakcast bench`, callable from code: one publisher and K subscribers
//! in one process over loopback multicast, measuring throughput, one-way latency and loss
//! recovery. `nakcast bench` and `examples/embedded_bench.rs` both run [`run`], so their
//! figures and JSON field names are the same.
//!
//! Threads: the publisher runs on one thread, all subscribers are polled round-robin on a
//! second one (never more busy threads than the 2 cores this must run well on); the calling
//! thread sleeps and reports progress. Each message carries its send time (ns since a shared
//! epoch) in its first 8 bytes and its index in the next 8, so subscribers record one-way
//! latency and check order.
//!
//! ```no_run
//! use nakcast::bench::{self, BenchConfig};
//!
//! let report = bench::run(&BenchConfig {
//!     count: 100_000,
//!     loss_pct: 1.0,
//!     ..BenchConfig::default()
//! })?;
//! // The JSON object `nakcast bench --json` prints.
//! println!("{}", serde_json::to_value(&report)?);
//! if let Some(problem) = report.failure() {
//!     eprintln!("{problem}");
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::proto::{AuthConfig, PublisherStats, ReceiverStats, RepairLatency};
use crate::{
    Channel, Event, Interface, JoinPolicy, OfferError, Publisher, PublisherOptions, Subscriber,
    SubscriberOptions,
};

/// Header of a bench message: send time and index.
const HEADER: usize = 16;

/// What to run. The defaults are those of `nakcast bench`.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchConfig {
    /// Subscribers (each with its own socket, all polled by one thread), 1 to 64.
    pub subscribers: u64,
    /// Messages to publish, at least 1.
    pub count: u64,
    /// Message size in bytes, 16 (send time and index) to 65 536.
    pub size: usize,
    /// Percentage of datagrams each subscriber drops on receipt (injected loss), in 0..100.
    pub loss_pct: f64,
    /// Publish at this many messages per second (latency is then measured from each
    /// message's intended send time, so stalls are not hidden); `None`: as fast as possible.
    pub rate: Option<f64>,
    /// Messages offered per batch (they share datagrams) before a flush, 1 to 65 536.
    pub burst: u64,
    /// Most messages in flight (published, not yet delivered to the slowest subscriber):
    /// the harness's flow control so the publisher does not overrun socket buffers. 0 = off.
    pub window: u64,
    /// Interface to publish and join on.
    pub interface: Interface,
    /// Multicast group address; `None` picks one in 239.255.0.0/16 from the port. The port
    /// is always a free one.
    pub group: Option<Ipv4Addr>,
    /// Give up when no subscriber made progress for this long.
    pub idle_timeout: Duration,
    /// Frame authentication of the publisher and every subscriber (off by default).
    pub auth: AuthConfig,
    /// Times the publisher sends each repair datagram
    /// ([`PublisherConfig::repair_copies`](crate::proto::PublisherConfig::repair_copies)).
    pub repair_copies: u32,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            subscribers: 2,
            count: 1_000_000,
            size: 64,
            loss_pct: 0.0,
            rate: None,
            burst: 64,
            window: 16_384,
            interface: Interface::Addr(Ipv4Addr::LOCALHOST.into()),
            group: None,
            idle_timeout: Duration::from_secs(5),
            auth: AuthConfig::default(),
            repair_copies: 2,
        }
    }
}

impl BenchConfig {
    /// Check every field's range; the message names the field.
    pub fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: String| Err(BenchError::Config(m));
        if !(1..=64).contains(&self.subscribers) {
            return bad(format!("subscribers {} is not in 1..=64", self.subscribers));
        }
        if self.count == 0 {
            return bad("count must be at least 1".into());
        }
        if !(HEADER..=65_536).contains(&self.size) {
            return bad(format!("size {} is not in {HEADER}..=65536", self.size));
        }
        if !(0.0..100.0).contains(&self.loss_pct) {
            return bad(format!(
                "loss_pct {} is not a percentage in 0..100",
                self.loss_pct
            ));
        }
        if self.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return bad(format!("rate {:?} is not a positive number", self.rate));
        }
        if !(1..=65_536).contains(&self.burst) {
            return bad(format!("burst {} is not in 1..=65536", self.burst));
        }
        if !(1..=4).contains(&self.repair_copies) {
            return bad(format!(
                "repair_copies {} is not in 1..=4",
                self.repair_copies
            ));
        }
        if let Some(g) = self.group
            && !g.is_multicast()
        {
            return bad(format!(
                "group {g} is not a multicast address (use 224.0.0.0/4, e.g. 239.255.0.1)"
            ));
        }
        Ok(())
    }
}

/// Why a benchmark could not run to the end. A run that completed with incomplete delivery
/// is not an error: see [`BenchReport::failure`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BenchError {
    /// A [`BenchConfig`] field is out of range.
    Config(String),
    /// Sockets or threads could not be set up, or the subscribers never heard the
    /// publisher; the message says what to check.
    Setup(String),
    /// The run broke off: an offer was refused for good or a socket failed while running.
    Failed(String),
}

impl fmt::Display for BenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchError::Config(m) | BenchError::Setup(m) | BenchError::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for BenchError {}

impl From<crate::Error> for BenchError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Io(e) => BenchError::Failed(format!("socket I/O failed: {e}")),
            other => BenchError::Setup(other.to_string()),
        }
    }
}

/// What a run measured. Serialized (`serde_json::to_value`), it is the JSON object
/// `nakcast bench --json` prints: scripts depend on these field names. Latencies are in
/// microseconds, one-way, from the send timestamp in each message, rounded to 3 decimals.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BenchReport {
    /// Subscribers.
    pub subscribers: u64,
    /// Messages published.
    pub count: u64,
    /// Message size in bytes.
    pub size: usize,
    /// Configured rate (messages per second), `None` for as fast as possible.
    pub rate: Option<f64>,
    /// Injected loss, percent.
    pub loss_pct: f64,
    /// Messages delivered, summed over subscribers.
    pub delivered: u64,
    /// First send to last delivery, seconds.
    pub elapsed_s: f64,
    /// First send to last send, seconds.
    pub send_s: f64,
    /// Messages published per second, delivered to every subscriber.
    pub msgs_per_s: f64,
    /// `msgs_per_s` x `size`, in MB (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// Median one-way latency.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest latency.
    pub max_us: f64,
    /// Mean latency.
    pub mean_us: f64,
    /// Latency samples (messages delivered).
    pub samples: u64,
    /// Datagrams dropped by the loss injector.
    pub injected_drops: u64,
    /// Gaps detected (`ReceiverStats::gaps`, summed).
    pub gaps: u64,
    /// Fragments recovered by repairs (`ReceiverStats::recovered`, summed).
    pub recovered: u64,
    /// Messages not delivered (expected minus delivered).
    pub lost: u64,
    /// Sequence numbers reported in `Loss` events.
    pub reported_lost: u64,
    /// Undelivered messages not reported lost (must be 0: loss is never silent).
    pub unreported_lost: u64,
    /// Messages delivered out of order (must be 0).
    pub out_of_order: u64,
    /// NAKs sent by the subscribers.
    pub naks_sent: u64,
    /// Median repair latency (gap detected to delivered in order); `None` without repairs.
    pub repair_p50_us: Option<f64>,
    /// 90th percentile repair latency.
    pub repair_p90_us: Option<f64>,
    /// 99th percentile repair latency.
    pub repair_p99_us: Option<f64>,
    /// Largest repair latency.
    pub repair_max_us: Option<f64>,
    /// Fragments whose repair latency was measured.
    pub repair_samples: u64,
    /// NAKs the publisher received.
    pub naks_received: u64,
    /// Repairs sent (`PublisherStats::retransmits`).
    pub retransmitted: u64,
    /// Extra copies of repairs sent (`PublisherStats::repair_copies`).
    pub repair_copies_sent: u64,
    /// UNAVAILABLE frames sent.
    pub unavailable: u64,
    /// Original DATA frames sent.
    pub data_frames: u64,
    /// Datagrams the kernel refused to send.
    pub send_errors: u64,
    /// Whether every frame was authenticated ([`BenchConfig::auth`] has a key).
    pub auth: bool,
    /// Frames that failed authentication, publisher and subscribers together.
    pub auth_failures: u64,
    /// The group and port the run used.
    #[serde(skip)]
    pub group: SocketAddr,
    /// Why the run stopped early (a stall or a socket error), if it did.
    #[serde(skip)]
    pub error: Option<String>,
}

impl BenchReport {
    /// `None` when every subscriber got every message in order; otherwise what went wrong
    /// (the run stalled, or messages were lost or out of order).
    pub fn failure(&self) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(format!("bench: {e}"));
        }
        (self.lost > 0 || self.out_of_order > 0).then(|| {
            format!(
                "bench: incomplete delivery: {} of {} messages undelivered ({} reported lost, \
                 {} unreported), {} out of order",
                self.lost,
                self.count * self.subscribers,
                self.reported_lost,
                self.unreported_lost,
                self.out_of_order
            )
        })
    }
}

/// Latency percentiles of a nanosecond histogram, in microseconds (rounded to 3 decimals).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Summarise a histogram of nanoseconds (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| round3(ns as f64 / 1000.0);
        Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: round3(h.mean() / 1000.0),
        }
    }
}

/// A histogram of nanoseconds from 1 ns to 100 s with 3 significant digits. Recording into
/// it (`saturating_record`) never allocates.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Run the benchmark; blocks until it ends.
pub fn run(cfg: &BenchConfig) -> Result<BenchReport, BenchError> {
    run_with_progress(cfg, |_| {})
}

/// [`run`], calling `progress` about every 50 ms from the calling thread with the number of
/// messages delivered (or reported lost) to the slowest subscriber so far.
pub fn run_with_progress(
    cfg: &BenchConfig,
    mut progress: impl FnMut(u64),
) -> Result<BenchReport, BenchError> {
    cfg.validate()?;
    let port = free_port()?;
    let group_ip = cfg
        .group
        .unwrap_or_else(|| Ipv4Addr::new(239, 255, (port >> 8) as u8, port as u8));
    let group = SocketAddr::from((group_ip, port));
    let ch = Channel::new(group)
        .with_interface(cfg.interface.clone())
        .with_stream(1);
    let k = cfg.subscribers as usize;
    let interface = cfg.interface.to_string();
    let setup_hint = |e: &dyn fmt::Display| {
        BenchError::Setup(format!(
            "{e}\n  (bench runs over loopback multicast on {group} via {interface}; `nakcast \
             doctor --interface {interface}` checks the set-up)"
        ))
    };

    let mut subs = Vec::with_capacity(k);
    for _ in 0..k {
        let mut opts = SubscriberOptions::new(ch.clone());
        opts.protocol.auth = cfg.auth.clone();
        opts.protocol.join = JoinPolicy::FromOldest;
        opts.protocol.group_size_hint = cfg.subscribers as u32;
        opts.inject_loss = cfg.loss_pct / 100.0;
        subs.push(Subscriber::new(opts).map_err(|e| setup_hint(&e))?);
    }
    let mut pub_opts = PublisherOptions::new(ch.clone());
    pub_opts.protocol.auth = cfg.auth.clone();
    pub_opts.protocol.repair_copies = cfg.repair_copies;
    let publisher = Publisher::new(pub_opts).map_err(|e| setup_hint(&e))?;

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        joined: AtomicUsize::new(0),
        progress: AtomicU64::new(0),
        done: AtomicBool::new(false),
        abort: AtomicBool::new(false),
    });

    let sub_thread = {
        let shared = shared.clone();
        let (count, timeout) = (cfg.count, cfg.idle_timeout);
        std::thread::Builder::new()
            .name("bench-subs".into())
            .spawn(move || subscriber_loop(subs, &shared, count, timeout))
            .map_err(|e| BenchError::Setup(format!("cannot spawn a thread: {e}")))?
    };
    let pub_thread = {
        let shared = shared.clone();
        let plan = PubPlan {
            count: cfg.count,
            size: cfg.size,
            rate: cfg.rate,
            burst: cfg.burst,
            window: cfg.window,
            subscribers: k,
        };
        std::thread::Builder::new()
            .name("bench-pub".into())
            .spawn(move || publisher_loop(publisher, &shared, &plan))
            .map_err(|e| BenchError::Setup(format!("cannot spawn a thread: {e}")))?
    };

    while !shared.done.load(Ordering::Acquire) && !pub_thread.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        progress(shared.progress.load(Ordering::Relaxed));
    }
    let pub_res = pub_thread
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    if pub_res.is_err() {
        shared.abort.store(true, Ordering::Release);
    }
    let sub_res = sub_thread
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p));
    let pub_res = pub_res.map_err(|e| match e {
        BenchError::Setup(m) => setup_hint(&m),
        other => other,
    })?;
    Ok(report(cfg, group, &pub_res, sub_res))
}

/// What the subscriber thread learnt about one subscriber.
#[derive(Clone, Copy, Debug, Default)]
struct SubState {
    joined: bool,
    delivered: u64,
    reported_lost: u64,
    next_index: u64,
    out_of_order: u64,
}

struct SubResult {
    hist: Histogram<u64>,
    states: Vec<SubState>,
    stats: Vec<ReceiverStats>,
    repairs: RepairLatency,
    injected: Vec<u64>,
    last_delivery: Instant,
    error: Option<String>,
}

struct PubResult {
    stats: PublisherStats,
    send_errors: u64,
    send_start: Instant,
    send_end: Instant,
}

/// Shared between the threads.
struct Shared {
    epoch: Instant,
    joined: AtomicUsize,
    /// Messages delivered or reported lost by the slowest subscriber.
    progress: AtomicU64,
    /// The subscriber thread has finished.
    done: AtomicBool,
    /// Stop everything (set-up failure).
    abort: AtomicBool,
}

fn free_port() -> Result<u16, BenchError> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| BenchError::Setup(format!("cannot bind a UDP socket on 127.0.0.1: {e}")))
}

struct PubPlan {
    count: u64,
    size: usize,
    rate: Option<f64>,
    burst: u64,
    window: u64,
    subscribers: usize,
}

fn offer(p: &mut Publisher, msg: &[u8]) -> Result<(), BenchError> {
    loop {
        match p.offer_deferred(msg) {
            Ok(_) => return Ok(()),
            Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                p.flush();
                p.poll()?;
            }
            Err(e) => return Err(BenchError::Failed(format!("offer failed: {e}"))),
        }
    }
}

fn publisher_loop(
    mut p: Publisher,
    shared: &Shared,
    plan: &PubPlan,
) -> Result<PubResult, BenchError> {
    // Wait until every subscriber has joined (they join on the first heartbeat).
    let t0 = Instant::now();
    while shared.joined.load(Ordering::Acquire) < plan.subscribers {
        p.poll()?;
        if t0.elapsed() > Duration::from_secs(3) {
            shared.abort.store(true, Ordering::Release);
            return Err(BenchError::Setup(format!(
                "only {} of {} subscribers heard the publisher within 3 s: loopback multicast \
                 is not working",
                shared.joined.load(Ordering::Acquire),
                plan.subscribers
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut msg = vec![0u8; plan.size];
    for (i, b) in msg.iter_mut().enumerate().skip(HEADER) {
        *b = i as u8;
    }
    let send_start = Instant::now();
    let start_ns = send_start.duration_since(shared.epoch).as_nanos() as u64;
    let interval_ns = plan.rate.map(|r| 1e9 / r);
    let mut i: u64 = 0;
    let mut last_poll = Instant::now();
    while i < plan.count {
        if shared.abort.load(Ordering::Relaxed) || shared.done.load(Ordering::Relaxed) {
            break;
        }
        let mut n = plan.burst.min(plan.count - i);
        if plan.window > 0 {
            let in_flight = i.saturating_sub(shared.progress.load(Ordering::Acquire));
            n = n.min(plan.window.saturating_sub(in_flight));
        }
        if let Some(iv) = interval_ns {
            let now_ns = shared.epoch.elapsed().as_nanos() as u64;
            let due = ((now_ns.saturating_sub(start_ns)) as f64 / iv) as u64 + 1;
            n = n.min(due.saturating_sub(i));
        }
        if n == 0 {
            p.poll()?;
            last_poll = Instant::now();
            continue;
        }
        for _ in 0..n {
            let ts = match interval_ns {
                // Coordinated-omission correction: latency counts from the intended time.
                Some(iv) => start_ns + (i as f64 * iv) as u64,
                None => shared.epoch.elapsed().as_nanos() as u64,
            };
            msg[..8].copy_from_slice(&ts.to_le_bytes());
            msg[8..16].copy_from_slice(&i.to_le_bytes());
            offer(&mut p, &msg)?;
            i += 1;
        }
        p.flush();
        if last_poll.elapsed() > Duration::from_micros(100) {
            p.poll()?;
            last_poll = Instant::now();
        }
    }
    p.flush();
    let send_end = Instant::now();
    // Serve NAKs until every subscriber is done (or gave up).
    while !shared.done.load(Ordering::Acquire) && !shared.abort.load(Ordering::Relaxed) {
        if p.poll()? == 0 {
            std::hint::spin_loop();
        }
    }
    p.close(Duration::from_millis(10))?;
    Ok(PubResult {
        stats: *p.stats(),
        send_errors: p.send_errors(),
        send_start,
        send_end,
    })
}

fn subscriber_loop(
    mut subs: Vec<Subscriber>,
    shared: &Shared,
    count: u64,
    idle_timeout: Duration,
) -> SubResult {
    let mut hist = new_histogram();
    let mut states = vec![SubState::default(); subs.len()];
    let mut last_delivery = Instant::now();
    let mut last_progress = Instant::now();
    let mut error = None;
    let epoch = shared.epoch;
    loop {
        let mut work = 0;
        for (sub, st) in subs.iter_mut().zip(states.iter_mut()) {
            if st.delivered + st.reported_lost >= count {
                continue;
            }
            let hist = &mut hist;
            let mut handler = |ev: Event<'_>| match ev {
                Event::Joined { .. } if !st.joined => {
                    st.joined = true;
                    shared.joined.fetch_add(1, Ordering::AcqRel);
                }
                Event::Message { payload, .. } => {
                    let now_ns = epoch.elapsed().as_nanos() as u64;
                    if payload.len() >= HEADER {
                        let ts = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                        let index = u64::from_le_bytes(payload[8..16].try_into().expect("8 bytes"));
                        hist.saturating_record(now_ns.saturating_sub(ts).max(1));
                        if index != st.next_index {
                            st.out_of_order += 1;
                        }
                        st.next_index = index + 1;
                    }
                    st.delivered += 1;
                }
                Event::Loss { range, .. } => st.reported_lost += range.len(),
                _ => {}
            };
            match sub.poll(&mut handler, 64) {
                Ok(w) => work += w,
                Err(e) => {
                    error = Some(format!("subscriber failed: {e}"));
                    shared.abort.store(true, Ordering::Release);
                }
            }
        }
        let min = states
            .iter()
            .map(|s| s.delivered + s.reported_lost)
            .min()
            .unwrap_or(0);
        if min != shared.progress.load(Ordering::Relaxed) {
            shared.progress.store(min, Ordering::Release);
            last_progress = Instant::now();
        }
        if work > 0 {
            last_delivery = Instant::now();
        }
        if min >= count || shared.abort.load(Ordering::Acquire) {
            break;
        }
        if work == 0 {
            if last_progress.elapsed() > idle_timeout
                && shared.joined.load(Ordering::Relaxed) == subs.len()
            {
                error = Some(format!(
                    "no progress for {idle_timeout:?}: delivery stalled at {min} of {count}"
                ));
                break;
            }
            std::hint::spin_loop();
        }
    }
    shared.done.store(true, Ordering::Release);
    SubResult {
        hist,
        stats: subs.iter().map(|s| *s.stats()).collect(),
        repairs: subs.iter().fold(RepairLatency::default(), |mut all, s| {
            all.merge(s.repair_latency());
            all
        }),
        injected: subs.iter().map(|s| s.injected_drops()).collect(),
        states,
        last_delivery,
        error,
    }
}

fn report(cfg: &BenchConfig, group: SocketAddr, p: &PubResult, s: SubResult) -> BenchReport {
    let delivered: u64 = s.states.iter().map(|x| x.delivered).sum();
    let reported_lost: u64 = s.states.iter().map(|x| x.reported_lost).sum();
    let out_of_order: u64 = s.states.iter().map(|x| x.out_of_order).sum();
    let lost = (cfg.count * cfg.subscribers).saturating_sub(delivered);
    let sum = |f: fn(&ReceiverStats) -> u64| s.stats.iter().map(f).sum::<u64>();
    let elapsed = s
        .last_delivery
        .saturating_duration_since(p.send_start)
        .as_secs_f64()
        .max(1e-9);
    let send_s = p.send_end.duration_since(p.send_start).as_secs_f64();
    let msgs_per_s = cfg.count as f64 / elapsed;
    let lat = Percentiles::of(&s.hist);
    let repair_us = |d: Option<Duration>| d.map(|d| round3(d.as_secs_f64() * 1e6));
    BenchReport {
        subscribers: cfg.subscribers,
        count: cfg.count,
        size: cfg.size,
        rate: cfg.rate,
        loss_pct: cfg.loss_pct,
        delivered,
        elapsed_s: round3(elapsed),
        send_s: round3(send_s),
        msgs_per_s: round3(msgs_per_s),
        mb_per_s: round3(msgs_per_s * cfg.size as f64 / 1e6),
        p50_us: lat.p50,
        p90_us: lat.p90,
        p99_us: lat.p99,
        p999_us: lat.p999,
        max_us: lat.max,
        mean_us: lat.mean,
        samples: lat.count,
        injected_drops: s.injected.iter().sum(),
        gaps: sum(|x| x.gaps),
        recovered: sum(|x| x.recovered),
        lost,
        reported_lost,
        unreported_lost: lost.saturating_sub(reported_lost),
        out_of_order,
        naks_sent: sum(|x| x.naks_sent),
        repair_p50_us: repair_us(s.repairs.quantile(0.50)),
        repair_p90_us: repair_us(s.repairs.quantile(0.90)),
        repair_p99_us: repair_us(s.repairs.quantile(0.99)),
        repair_max_us: repair_us(s.repairs.max()),
        repair_samples: s.repairs.count(),
        naks_received: p.stats.naks_received,
        retransmitted: p.stats.retransmits,
        repair_copies_sent: p.stats.repair_copies,
        unavailable: p.stats.unavailable_sent,
        data_frames: p.stats.data_frames,
        send_errors: p.send_errors,
        auth: cfg.auth.is_on(),
        auth_failures: sum(|x| x.auth_failures) + p.stats.auth_failures,
        group,
        error: s.error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_ranges_are_checked() {
        assert_eq!(BenchConfig::default().validate(), Ok(()));
        let bad = [
            BenchConfig {
                subscribers: 0,
                ..BenchConfig::default()
            },
            BenchConfig {
                count: 0,
                ..BenchConfig::default()
            },
            BenchConfig {
                size: 15,
                ..BenchConfig::default()
            },
            BenchConfig {
                loss_pct: 100.0,
                ..BenchConfig::default()
            },
            BenchConfig {
                rate: Some(0.0),
                ..BenchConfig::default()
            },
            BenchConfig {
                burst: 0,
                ..BenchConfig::default()
            },
            BenchConfig {
                repair_copies: 0,
                ..BenchConfig::default()
            },
            BenchConfig {
                repair_copies: 5,
                ..BenchConfig::default()
            },
            BenchConfig {
                group: Some(Ipv4Addr::new(10, 0, 0, 1)),
                ..BenchConfig::default()
            },
        ];
        for c in bad {
            assert!(matches!(c.validate(), Err(BenchError::Config(_))), "{c:?}");
        }
    }

    #[test]
    fn percentiles_of_a_histogram() {
        let mut h = new_histogram();
        assert_eq!(Percentiles::of(&h), Percentiles::default());
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
    }
}
