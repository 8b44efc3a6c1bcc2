//! The lowest-latency receive loop: a subscriber busy-polling on a pinned thread, zero
//! allocation per message, recording the one-way latency of every message in an
//! HDR histogram. A publisher thread in the same process sends feed quotes
//! (`examples/feed/mod.rs`) at a steady rate, each stamped with its send time in
//! nanoseconds since an `Instant` both threads share, so no clock synchronisation is
//! involved.
//!
//! Zero allocation: the histogram is sized up front (1 ns ..= 10 s, 3 significant digits;
//! `saturating_record` never grows it), the handler decodes in place, and
//! `Subscriber::poll` does not allocate per message (tests/alloc_free.rs checks it).
//!
//! Pinning uses the `core_affinity` crate (`--pin-sub`, `--pin-pub`); the same can be done
//! from the shell without it: `taskset -c 1 target/release/examples/latency_subscriber
//! --pin-sub none`. Compare idle strategies with `--idle spin|yield|backoff|block`
//! (docs/PERFORMANCE.md has measured figures for each).
//!
//! ```sh
//! cargo run --release --example latency_subscriber
//! cargo run --release --example latency_subscriber -- --idle block --rate 10000
//! ```

#[path = "feed/mod.rs"]
mod feed;

use std::error::Error;
use std::time::{Duration, Instant};

use feed::{Args, FLAG_ASK, FLAG_BID, FeedMsg, QUOTE_LEN, Quote};
use hdrhistogram::Histogram;
use nakcast::transport::idle::Idler;
use nakcast::{
    Channel, Event, IdleStrategy, OfferError, Publisher, PublisherOptions, Subscriber,
    SubscriberOptions,
};

const USAGE: &str = "\
latency_subscriber: one-way latency of a busy-polling subscriber (publisher in-process)

Options (all optional):
  --group ADDR:PORT       multicast group and port        [239.255.9.2:40462]
  --interface IP          interface                       [127.0.0.1]
  --stream ID             stream id                       [9]
  --rate N                messages per second             [20000]
  --duration-ms MS        how long to publish             [3000]
  --warmup-ms MS          samples sent before MS are not recorded [200]
  --idle S                receive loop idle strategy: spin|yield|backoff|block [spin]
  --pin-sub CORE|last|none  pin the receive loop          [last]
  --pin-pub CORE|none     pin the publisher thread        [none]";

/// Pin the current thread as `spec` says; returns the core id used.
fn pin(spec: &str) -> Result<Option<usize>, Box<dyn Error>> {
    if spec == "none" {
        return Ok(None);
    }
    let cores = core_affinity::get_core_ids().ok_or("cannot list the CPU cores")?;
    let core = match spec {
        "last" => *cores.last().ok_or("no CPU core")?,
        n => {
            let id: usize = n.parse().map_err(|_| format!("bad core {n:?}"))?;
            *cores
                .iter()
                .find(|c| c.id == id)
                .ok_or_else(|| format!("no core {id} (cores: {})", cores.len()))?
        }
    };
    if core_affinity::set_for_current(core) {
        Ok(Some(core.id))
    } else {
        Err(format!("cannot pin to core {}", core.id).into())
    }
}

/// The publisher thread: one quote every `1/rate` s, sent at once (`offer`, not
/// `offer_deferred`: latency over batching), NAKs served between sends.
fn publish(
    mut p: Publisher,
    base: Instant,
    rate: f64,
    duration: Duration,
) -> Result<(u64, u64), String> {
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let mut buf = [0u8; QUOTE_LEN];
    let mut back_pressure = 0;
    let start = Instant::now();
    let mut next = start;
    let mut sent: u64 = 0;
    while start.elapsed() < duration {
        let now = Instant::now();
        if now < next {
            p.poll().map_err(|e| e.to_string())?;
            // Sleep through most of a long wait: the receive loop may need the other core.
            let left = next - now;
            if left > Duration::from_micros(200) {
                std::thread::sleep(left - Duration::from_micros(100));
            } else {
                std::hint::spin_loop();
            }
            continue;
        }
        next += interval;
        let q = Quote {
            flags: FLAG_BID | FLAG_ASK,
            instrument: (sent % 300) as u16,
            version: sent as u32,
            // Stamped last, just before the send.
            timestamp_ns: base.elapsed().as_nanos() as u64,
            ..Quote::default()
        };
        loop {
            match p.offer(q.encode(&mut buf)) {
                Ok(_) => break,
                Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                    back_pressure += 1;
                    p.poll().map_err(|e| e.to_string())?;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        sent += 1;
    }
    p.close(Duration::from_millis(100))
        .map_err(|e| e.to_string())?;
    Ok((sent, back_pressure))
}

/// Start the publisher thread, run the receive loop, print the histogram.
fn main() -> Result<(), Box<dyn Error>> {
    let mut a = Args::parse(USAGE);
    let group: String = a.get("group", "239.255.9.2:40462".to_string());
    let interface: String = a.get("interface", "127.0.0.1".to_string());
    let stream: u32 = a.get("stream", 9);
    let rate: f64 = a.get("rate", 20_000.0);
    let duration = Duration::from_millis(a.get("duration-ms", 3_000));
    let warmup = Duration::from_millis(a.get("warmup-ms", 200));
    let idle_name: String = a.get("idle", "spin".to_string());
    let pin_sub: String = a.get("pin-sub", "last".to_string());
    let pin_pub: String = a.get("pin-pub", "none".to_string());
    a.finish();
    let idle = match idle_name.as_str() {
        "spin" => IdleStrategy::BusySpin,
        "yield" => IdleStrategy::Yield,
        "backoff" => IdleStrategy::DEFAULT_BACKOFF,
        "block" => IdleStrategy::Block,
        other => return Err(format!("--idle {other:?}: spin, yield, backoff or block").into()),
    };

    let channel: Channel =
        format!("udp://{group}?interface={interface}&stream={stream}").parse()?;
    let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    let publisher = Publisher::new(PublisherOptions::new(channel))?;
    let base = Instant::now();
    let pub_thread = std::thread::Builder::new()
        .name("publisher".into())
        .spawn(move || {
            let core = pin(&pin_pub).map_err(|e| e.to_string())?;
            publish(publisher, base, rate, duration).map(|r| (r, core))
        })?;
    // Pinned after spawning the publisher, which would otherwise inherit this affinity and
    // share the core with the spinning loop.
    let sub_core = pin(&pin_sub)?;

    // Everything the loop touches is allocated here, before it starts.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3)?;
    let warmup_ns = warmup.as_nanos() as u64;
    let (mut delivered, mut warm, mut lost, mut bad) = (0u64, 0u64, 0u64, 0u64);
    let mut closed = false;
    let mut idler = Idler::default();
    let give_up = Instant::now() + duration + Duration::from_secs(3);
    while !closed {
        let mut handler = |ev: Event<'_>| match ev {
            Event::Message { payload, .. } => {
                let now_ns = base.elapsed().as_nanos() as u64;
                match FeedMsg::decode(payload) {
                    Ok(m) if m.timestamp_ns() >= warmup_ns => {
                        hist.saturating_record(now_ns.saturating_sub(m.timestamp_ns()).max(1));
                        delivered += 1;
                    }
                    Ok(_) => warm += 1,
                    Err(_) => bad += 1,
                }
            }
            Event::Loss { range, .. } => lost += range.len(),
            Event::Closed { .. } | Event::Inactive { .. } => closed = true,
            _ => {}
        };
        let work = sub.poll(&mut handler, 64)?;
        if work == 0 {
            if pub_thread.is_finished() {
                // It closed (after its linger) or failed, and nothing is left to receive:
                // a failure is reported by `join` below.
                break;
            }
            if Instant::now() > give_up {
                return Err("the publisher never closed".into());
            }
            if idle == IdleStrategy::Block {
                sub.wait(Duration::from_millis(10))?;
            } else {
                idler.idle(idle, work);
            }
        } else {
            idler.idle(idle, work);
        }
    }
    let ((sent, back_pressure), pub_core) = pub_thread
        .join()
        .map_err(|_| "publisher thread panicked")??;

    // Busy-polling needs an otherwise idle core: say how busy the host was.
    if let Some(load) = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
    {
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!("latency: host load average (1 min) {load} on {cpus} CPUs");
    }
    let us = |q: f64| hist.value_at_quantile(q) as f64 / 1e3;
    let core = |c: Option<usize>| c.map_or("unpinned".to_string(), |c| format!("core {c}"));
    println!(
        "latency: idle={idle_name} subscriber={} publisher={} rate={rate} msgs/s sent={sent} back_pressure={back_pressure}",
        core(sub_core),
        core(pub_core)
    );
    println!(
        "latency: samples={delivered} warmup={warm} lost={lost} bad={bad} stats_messages={}",
        sub.stats().messages
    );
    println!(
        "latency: one-way p50_us={:.2} p90_us={:.2} p99_us={:.2} p999_us={:.2} max_us={:.2} mean_us={:.2}",
        us(0.5),
        us(0.9),
        us(0.99),
        us(0.999),
        hist.max() as f64 / 1e3,
        hist.mean() / 1e3
    );
    Ok(())
}
