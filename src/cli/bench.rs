//! `nakcast bench`: one publisher and K subscribers in one process over loopback multicast.
//!
//! Threads: the publisher runs on one thread, all subscribers are polled round-robin on a
//! second one (never more busy threads than the 2 cores this must run well on); the main
//! thread sleeps and shows progress. Each message carries its send time (ns since a shared
//! epoch) in its first 8 bytes and its index in the next 8, so subscribers record one-way
//! latency and check order.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use nakcast::proto::{PublisherStats, ReceiverStats, RepairLatency};
use nakcast::{
    Event, JoinPolicy, OfferError, Publisher, PublisherOptions, Subscriber, SubscriberOptions,
};
use serde_json::json;

use super::{
    CliError, Percentiles, RepairPercentiles, StatusLine, channel, new_histogram, parse_rate,
    print_json, r3,
};

/// Header of a bench message: send time and index.
const HEADER: usize = 16;

/// `nakcast bench`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    nakcast bench                                  # 2 subscribers, 1M x 64 B, as fast as possible\n  \
    nakcast bench --subscribers 4 --loss 5         # 5% of datagrams dropped at each subscriber\n  \
    nakcast bench --rate 100000 --count 500000     # paced: latency under a steady load\n  \
    nakcast bench --json | tail -1 | jq .p99_us\n\n\
    JSON (--json, last line of stdout): subscribers, count, size, delivered, elapsed_s, msgs_per_s,\n\
    mb_per_s, p50_us, p90_us, p99_us, p999_us, max_us, mean_us, injected_drops, recovered, lost,\n\
    reported_lost, naks_sent, naks_received, retransmitted, unavailable, ...\n\
    Exit status: 0 when every subscriber got every message; 1 otherwise; 2 for set-up errors.")]
pub struct BenchArgs {
    /// Subscribers (each with its own socket, all polled by one thread).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    subscribers: u64,
    /// Messages to publish.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Message size in bytes (at least 16: send time and index).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=65_536))]
    size: u64,
    /// Percentage of datagrams each subscriber drops on receipt (injected loss, 0..100).
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    loss: f64,
    /// Publish at this many messages per second (latency is measured from each message's
    /// intended send time, so stalls are not hidden); default: as fast as possible.
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Messages offered per batch (they share datagrams) before a flush.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    burst: u64,
    /// Most messages in flight (published, not yet delivered to the slowest subscriber):
    /// the harness's flow control so the publisher does not overrun socket buffers. 0 = off.
    #[arg(long, default_value_t = 16_384)]
    window: u64,
    /// Interface (loopback by default).
    #[arg(long, value_name = "IP|NAME", default_value = "127.0.0.1")]
    interface: String,
    /// Multicast group address (the port is always a free one).
    #[arg(long, value_name = "ADDR")]
    group: Option<std::net::Ipv4Addr>,
    /// Give up when no subscriber made progress for this long.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = super::parse_secs)]
    idle_timeout: Duration,
    /// Print one JSON object on the last line of stdout (after the table).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    auth: super::auth::AuthArgs,
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

fn free_port() -> Result<u16, CliError> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::Setup(format!("cannot bind a UDP socket on 127.0.0.1: {e}")))
}

/// Run `nakcast bench`.
pub fn run(a: BenchArgs) -> Result<(), CliError> {
    if !(0.0..100.0).contains(&a.loss) {
        return Err(CliError::Usage(format!(
            "--loss {} is not a percentage in 0..100",
            a.loss
        )));
    }
    let port = free_port()?;
    let group_ip = a
        .group
        .unwrap_or_else(|| std::net::Ipv4Addr::new(239, 255, (port >> 8) as u8, port as u8));
    if !group_ip.is_multicast() {
        return Err(CliError::Usage(format!(
            "--group {group_ip} is not a multicast address (use 224.0.0.0/4, e.g. 239.255.0.1)"
        )));
    }
    let group = SocketAddr::from((group_ip, port));
    let ch = channel(group, &a.interface, 1);
    let k = a.subscribers as usize;
    let setup_hint = |e: &dyn std::fmt::Display| {
        CliError::Setup(format!(
            "{e}\n  (bench runs over loopback multicast on {group} via {}; `nakcast doctor \
             --interface {}` checks the set-up)",
            a.interface, a.interface
        ))
    };

    let auth = a.auth.config()?;
    let mut subs = Vec::with_capacity(k);
    for _ in 0..k {
        let mut opts = SubscriberOptions::new(ch.clone());
        opts.protocol.auth = auth.clone();
        opts.protocol.join = JoinPolicy::FromOldest;
        opts.protocol.group_size_hint = a.subscribers as u32;
        opts.inject_loss = a.loss / 100.0;
        subs.push(Subscriber::new(opts).map_err(|e| setup_hint(&e))?);
    }
    let mut pub_opts = PublisherOptions::new(ch.clone());
    pub_opts.protocol.auth = auth.clone();
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
        let (count, timeout) = (a.count, a.idle_timeout);
        std::thread::Builder::new()
            .name("bench-subs".into())
            .spawn(move || subscriber_loop(subs, &shared, count, timeout))
            .map_err(|e| CliError::Setup(format!("cannot spawn a thread: {e}")))?
    };
    let pub_thread = {
        let shared = shared.clone();
        let cfg = PubPlan {
            count: a.count,
            size: a.size as usize,
            rate: a.rate,
            burst: a.burst,
            window: a.window,
            subscribers: k,
        };
        std::thread::Builder::new()
            .name("bench-pub".into())
            .spawn(move || publisher_loop(publisher, &shared, &cfg))
            .map_err(|e| CliError::Setup(format!("cannot spawn a thread: {e}")))?
    };

    // Progress on stderr for runs longer than a second.
    let mut status = StatusLine::new(!a.json);
    let started = Instant::now();
    while !shared.done.load(Ordering::Acquire) && !pub_thread.is_finished() {
        std::thread::sleep(Duration::from_millis(50));
        if started.elapsed() > Duration::from_secs(1) && status.due() {
            let p = shared.progress.load(Ordering::Relaxed);
            let frac = p as f64 / a.count as f64;
            let bar = (frac * 30.0) as usize;
            status.show(&format!(
                "bench: [{}{}] {:5.1}%  {} of {} messages",
                "#".repeat(bar),
                ".".repeat(30 - bar.min(30)),
                frac * 100.0,
                p,
                a.count
            ));
        }
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
    status.finish();
    let pub_res = pub_res.map_err(|e| match e {
        CliError::Setup(m) => setup_hint(&m),
        other => other,
    })?;
    report(&a, group, &pub_res, &sub_res)
}

struct PubPlan {
    count: u64,
    size: usize,
    rate: Option<f64>,
    burst: u64,
    window: u64,
    subscribers: usize,
}

fn offer(p: &mut Publisher, msg: &[u8]) -> Result<(), CliError> {
    loop {
        match p.offer_deferred(msg) {
            Ok(_) => return Ok(()),
            Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                p.flush();
                p.poll()?;
            }
            Err(e) => return Err(CliError::Failed(format!("offer failed: {e}"))),
        }
    }
}

fn publisher_loop(
    mut p: Publisher,
    shared: &Shared,
    plan: &PubPlan,
) -> Result<PubResult, CliError> {
    // Wait until every subscriber has joined (they join on the first heartbeat).
    let t0 = Instant::now();
    while shared.joined.load(Ordering::Acquire) < plan.subscribers {
        p.poll()?;
        if t0.elapsed() > Duration::from_secs(3) {
            shared.abort.store(true, Ordering::Release);
            return Err(CliError::Setup(format!(
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

fn report(a: &BenchArgs, group: SocketAddr, p: &PubResult, s: &SubResult) -> Result<(), CliError> {
    let k = a.subscribers;
    let delivered: u64 = s.states.iter().map(|x| x.delivered).sum();
    let reported_lost: u64 = s.states.iter().map(|x| x.reported_lost).sum();
    let out_of_order: u64 = s.states.iter().map(|x| x.out_of_order).sum();
    let expected = a.count * k;
    let lost = expected.saturating_sub(delivered);
    let unreported = lost.saturating_sub(reported_lost);
    let sum = |f: fn(&ReceiverStats) -> u64| s.stats.iter().map(f).sum::<u64>();
    let injected: u64 = s.injected.iter().sum();
    let recovered = sum(|x| x.recovered);
    let naks_sent = sum(|x| x.naks_sent);
    let auth_failures = sum(|x| x.auth_failures) + p.stats.auth_failures;
    let gaps = sum(|x| x.gaps);
    let elapsed = s
        .last_delivery
        .saturating_duration_since(p.send_start)
        .as_secs_f64()
        .max(1e-9);
    let send_s = p.send_end.duration_since(p.send_start).as_secs_f64();
    let msgs_per_s = a.count as f64 / elapsed;
    let mb_per_s = msgs_per_s * a.size as f64 / 1e6;
    let lat = Percentiles::of(&s.hist);
    let repair = RepairPercentiles::of(&s.repairs);

    let mode = match a.rate {
        Some(r) => format!("paced at {r} msg/s"),
        None => "as fast as possible".to_string(),
    };
    println!(
        "nakcast bench: 1 publisher -> {k} subscriber(s), {} x {} B, {mode}, loss {}%, {group} via {}",
        a.count, a.size, a.loss, a.interface
    );
    println!(
        "  messages     {:>12} published, {delivered} delivered ({k} x {})",
        a.count, a.count
    );
    println!(
        "  throughput   {:>12.0} msgs/s  {:8.1} MB/s  ({:.3} s; sending took {:.3} s)",
        msgs_per_s, mb_per_s, elapsed, send_s
    );
    println!(
        "  latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, {} samples)",
        lat.p50, lat.p90, lat.p99, lat.p999, lat.max, lat.mean, lat.count
    );
    println!(
        "  loss         injected {injected} datagrams; gaps {gaps}; recovered {recovered}; reported lost {reported_lost}; undelivered {lost}"
    );
    println!(
        "  NAKs         sent {naks_sent}, received {}; repairs (retransmits) {}; unavailable {}",
        p.stats.naks_received, p.stats.retransmits, p.stats.unavailable_sent
    );
    if repair.samples > 0 {
        println!(
            "  repair µs    p50 {}  p99 {}  max {}  (gap detected -> delivered in order; {} fragments)",
            repair.p50_us.unwrap_or_default(),
            repair.p99_us.unwrap_or_default(),
            repair.max_us.unwrap_or_default(),
            repair.samples
        );
    }
    let auth_on = a.auth.key.is_some() || a.auth.key_file.is_some();
    if auth_on {
        println!("  auth         every frame MACed; {auth_failures} failed authentication");
    }
    if a.json {
        print_json(&json!({
            "subscribers": k,
            "count": a.count,
            "size": a.size,
            "rate": a.rate,
            "loss_pct": a.loss,
            "delivered": delivered,
            "elapsed_s": r3(elapsed),
            "send_s": r3(send_s),
            "msgs_per_s": r3(msgs_per_s),
            "mb_per_s": r3(mb_per_s),
            "p50_us": lat.p50,
            "p90_us": lat.p90,
            "p99_us": lat.p99,
            "p999_us": lat.p999,
            "max_us": lat.max,
            "mean_us": lat.mean,
            "samples": lat.count,
            "injected_drops": injected,
            "gaps": gaps,
            "recovered": recovered,
            "lost": lost,
            "reported_lost": reported_lost,
            "unreported_lost": unreported,
            "out_of_order": out_of_order,
            "naks_sent": naks_sent,
            "repair_p50_us": repair.p50_us,
            "repair_p99_us": repair.p99_us,
            "repair_max_us": repair.max_us,
            "repair_samples": repair.samples,
            "naks_received": p.stats.naks_received,
            "retransmitted": p.stats.retransmits,
            "unavailable": p.stats.unavailable_sent,
            "data_frames": p.stats.data_frames,
            "send_errors": p.send_errors,
            "auth": auth_on,
            "auth_failures": auth_failures,
        }));
    }
    if let Some(e) = &s.error {
        return Err(CliError::Failed(format!("bench: {e}")));
    }
    if lost > 0 || out_of_order > 0 {
        return Err(CliError::Failed(format!(
            "bench: incomplete delivery: {lost} of {expected} messages undelivered ({reported_lost} \
             reported lost, {unreported} unreported), {out_of_order} out of order"
        )));
    }
    Ok(())
}
