//! A throughput benchmark embedded in an application: an in-process publisher and
//! subscribers on loopback multicast driven through the library API, printing one JSON
//! line (for scripts: `| jq .msgs_per_sec`).
//!
//! The publisher thread offers `--count` messages in bursts (`offer_deferred`, then
//! `flush`), keeps at most `--window` messages in flight ahead of the slowest subscriber
//! (the application's own flow control, so socket buffers are not overrun), and serves
//! NAKs until every subscriber is done. The main thread polls all subscribers. Each
//! subscriber drops `--loss` of its datagrams on receipt, so the run exercises repair and
//! reports its latency (`Subscriber::repair_latency()`): the time from detecting a gap to
//! delivering the repaired data in order.
//!
//! `nakcast bench` is the full-featured tool; this is the same idea in ~250 lines of user
//! code.
//!
//! ```sh
//! cargo run --release --example embedded_bench
//! cargo run --release --example embedded_bench -- --count 1000000 --loss 0 | jq .
//! ```

#[path = "feed/mod.rs"]
mod feed;

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use feed::Args;
use nakcast::proto::{PublisherStats, RepairLatency};
use nakcast::{
    Channel, Event, JoinPolicy, OfferError, Publisher, PublisherOptions, Subscriber,
    SubscriberOptions,
};
use serde_json::json;

const USAGE: &str = "\
embedded_bench: in-process publisher + subscribers, one JSON line of results

Options (all optional):
  --group ADDR:PORT       multicast group and port        [239.255.9.4:40464]
  --interface IP          interface                       [127.0.0.1]
  --subscribers N         subscribers (polled by the main thread) [2]
  --count N               messages                        [500000]
  --size BYTES            message size (>= 8)             [64]
  --burst N               messages per flush              [64]
  --window N              most messages in flight         [16384]
  --loss P                fraction of datagrams each subscriber drops [0.01]
  --timeout-ms MS         give up after MS without progress [5000]";

/// State shared by the publisher thread and the subscriber loop.
struct Shared {
    /// Subscribers that have joined the publisher.
    joined: AtomicUsize,
    /// Messages delivered or reported lost at the slowest subscriber.
    progress: AtomicU64,
    /// The subscriber loop finished (every message accounted for, or gave up).
    done: AtomicBool,
}

/// Per-subscriber tallies.
#[derive(Clone, Copy, Default)]
struct Tally {
    joined: bool,
    delivered: u64,
    lost: u64,
    next_index: u64,
    out_of_order: u64,
}

/// What the publisher thread returns.
struct PubResult {
    stats: PublisherStats,
    back_pressure_retries: u64,
    send_start: Instant,
}

/// The publisher thread: wait for every subscriber, send `count` messages within the
/// flow-control window, then serve NAKs until the subscribers are done.
fn publish(
    mut p: Publisher,
    shared: &Shared,
    subscribers: usize,
    count: u64,
    size: usize,
    burst: u64,
    window: u64,
) -> Result<PubResult, String> {
    // Subscribers join on the first heartbeat: wait for all of them.
    let t0 = Instant::now();
    while shared.joined.load(Ordering::Acquire) < subscribers {
        if t0.elapsed() > Duration::from_secs(3) {
            return Err("subscribers did not join within 3 s (run `nakcast doctor`)".into());
        }
        p.poll().map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_micros(200));
    }
    let mut msg = vec![0xA5u8; size];
    let mut retries = 0;
    let send_start = Instant::now();
    let mut i = 0;
    while i < count && !shared.done.load(Ordering::Relaxed) {
        let in_flight = i - shared.progress.load(Ordering::Acquire).min(i);
        let n = burst.min(count - i).min(window.saturating_sub(in_flight));
        if n == 0 {
            p.poll().map_err(|e| e.to_string())?;
            continue;
        }
        for _ in 0..n {
            msg[..8].copy_from_slice(&i.to_le_bytes());
            loop {
                match p.offer_deferred(&msg) {
                    Ok(_) => break,
                    Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                        retries += 1;
                        p.flush();
                        p.poll().map_err(|e| e.to_string())?;
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            i += 1;
        }
        p.flush();
        p.poll().map_err(|e| e.to_string())?;
    }
    // Serve NAKs until every subscriber has everything.
    while !shared.done.load(Ordering::Acquire) {
        if p.poll().map_err(|e| e.to_string())? == 0 {
            std::hint::spin_loop();
        }
    }
    p.close(Duration::from_millis(10))
        .map_err(|e| e.to_string())?;
    Ok(PubResult {
        stats: *p.stats(),
        back_pressure_retries: retries,
        send_start,
    })
}

/// Run the benchmark and print its JSON line.
fn main() -> Result<(), Box<dyn Error>> {
    let mut a = Args::parse(USAGE);
    let group: String = a.get("group", "239.255.9.4:40464".to_string());
    let interface: String = a.get("interface", "127.0.0.1".to_string());
    let k: usize = a.get("subscribers", 2usize).clamp(1, 64);
    let count: u64 = a.get("count", 500_000u64).max(1);
    let size: usize = a.get("size", 64usize).clamp(8, 65_536);
    let burst: u64 = a.get("burst", 64u64).max(1);
    let window: u64 = a.get("window", 16_384u64).max(1);
    let loss: f64 = a.get("loss", 0.01);
    let timeout = Duration::from_millis(a.get("timeout-ms", 5_000));
    a.finish();

    let channel: Channel = format!("udp://{group}?interface={interface}&stream=1").parse()?;
    let mut subs = Vec::with_capacity(k);
    for _ in 0..k {
        let mut o = SubscriberOptions::new(channel.clone());
        o.protocol.join = JoinPolicy::FromOldest;
        o.protocol.group_size_hint = k as u32;
        o.inject_loss = loss.clamp(0.0, 0.99);
        subs.push(Subscriber::new(o)?);
    }
    let publisher = Publisher::new(PublisherOptions::new(channel))?;
    let shared = Arc::new(Shared {
        joined: AtomicUsize::new(0),
        progress: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let pub_thread = {
        let shared = shared.clone();
        std::thread::spawn(move || publish(publisher, &shared, k, count, size, burst, window))
    };

    let mut tallies = vec![Tally::default(); k];
    let mut last_progress = Instant::now();
    let mut last_delivery = Instant::now();
    let mut stalled = false;
    loop {
        let mut work = 0;
        for (sub, t) in subs.iter_mut().zip(tallies.iter_mut()) {
            let shared = &shared;
            let mut handler = |ev: Event<'_>| match ev {
                Event::Joined { .. } if !t.joined => {
                    t.joined = true;
                    shared.joined.fetch_add(1, Ordering::AcqRel);
                }
                Event::Message { payload, .. } => {
                    let index = u64::from_le_bytes(payload[..8].try_into().expect("8 bytes"));
                    if index != t.next_index {
                        t.out_of_order += 1;
                    }
                    t.next_index = index + 1;
                    t.delivered += 1;
                }
                Event::Loss { range, .. } => {
                    t.lost += range.len();
                    t.next_index = range.end;
                }
                _ => {}
            };
            work += sub.poll(&mut handler, 64)?;
        }
        let min = tallies
            .iter()
            .map(|t| t.delivered + t.lost)
            .min()
            .unwrap_or(0);
        if min != shared.progress.load(Ordering::Relaxed) {
            shared.progress.store(min, Ordering::Release);
            last_progress = Instant::now();
            last_delivery = last_progress;
        }
        if min >= count {
            break;
        }
        if pub_thread.is_finished() || (work == 0 && last_progress.elapsed() > timeout) {
            stalled = true;
            break;
        }
    }
    shared.done.store(true, Ordering::Release);
    let p = pub_thread
        .join()
        .map_err(|_| "publisher thread panicked")??;

    let elapsed = last_delivery.saturating_duration_since(p.send_start);
    let mut repairs = RepairLatency::default();
    for s in &subs {
        repairs.merge(s.repair_latency());
    }
    let us = |d: Option<Duration>| d.map(|d| (d.as_secs_f64() * 1e7).round() / 10.0);
    let sum = |f: fn(&Tally) -> u64| tallies.iter().map(f).sum::<u64>();
    let out = json!({
        "subscribers": k,
        "count": count,
        "size": size,
        "injected_loss": loss,
        "elapsed_s": elapsed.as_secs_f64(),
        "msgs_per_sec": (count as f64 / elapsed.as_secs_f64()).round(),
        "delivered": sum(|t| t.delivered),
        "lost": sum(|t| t.lost),
        "out_of_order": sum(|t| t.out_of_order),
        "injected_drops": subs.iter().map(|s| s.injected_drops()).sum::<u64>(),
        "recovered": subs.iter().map(|s| s.stats().recovered).sum::<u64>(),
        "naks_sent": subs.iter().map(|s| s.stats().naks_sent).sum::<u64>(),
        "naks_received": p.stats.naks_received,
        "retransmits": p.stats.retransmits,
        "back_pressure_retries": p.back_pressure_retries,
        "repair_samples": repairs.count(),
        "repair_p50_us": us(repairs.quantile(0.5)),
        "repair_p99_us": us(repairs.quantile(0.99)),
        "complete": !stalled,
    });
    println!("{out}");
    if stalled {
        return Err(format!("delivery stalled (no progress for {timeout:?})").into());
    }
    Ok(())
}
