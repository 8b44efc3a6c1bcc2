//! A synthetic exchange feed: a few hundred instruments, quotes and trades in a compact
//! fixed-layout binary encoding (`examples/feed/mod.rs`), published on loopback multicast
//! at a steady rate with periodic bursts, plus a full snapshot quote of every instrument at
//! a fixed interval so that consumers can recover from losses.
//!
//! What it shows:
//! - back-pressure handled explicitly: every `OfferError` variant is matched; on
//!   back-pressure the publisher is driven (`flush` + `poll`) and the offer retried, and
//!   each case is counted;
//! - `poll()` between offers so NAKs are answered and heartbeats go out;
//! - a simulated crash and restart (`--restart-at-ms`): the process drops its publisher
//!   without closing it and opens a new one on the same source port, which subscribers see
//!   as `Event::Restarted`;
//! - its own rate and the repairs it served, from `Publisher::stats()`.
//!
//! ```sh
//! cargo run --release --example book_subscriber -- --external true &
//! cargo run --release --example market_data_publisher -- --restart-at-ms 1500
//! ```

#[path = "feed/mod.rs"]
mod feed;

use std::error::Error;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use feed::{Args, FeedMsg, Generator, QUOTE_LEN};
use nakcast::proto::PublisherStats;
use nakcast::transport::idle::Idler;
use nakcast::{Channel, IdleStrategy, OfferError, Publisher, PublisherOptions};

const USAGE: &str = "\
market_data_publisher: a synthetic exchange feed on loopback multicast

Options (all optional):
  --group ADDR:PORT       multicast group and port        [239.255.9.1:40461]
  --interface IP          interface to send on            [127.0.0.1]
  --stream ID             stream id                       [9]
  --instruments N         instruments                     [300]
  --rate N                steady messages per second      [50000]
  --burst N               extra messages in each burst    [2000]
  --burst-every-ms MS     interval between bursts         [250]
  --snapshot-ms MS        full quote of every instrument every MS [500]
  --duration-ms MS        how long to publish             [3000]
  --restart-at-ms MS      simulate a crash and restart at MS (0 = never) [0]
  --send-rate BYTES       cap new data at BYTES/s (0 = none), to see RateLimited [0]
  --send-burst BYTES      burst allowance of that cap     [a tenth of it]
  --linger-ms MS          serve NAKs this long after the last message [300]
  --seed N                feed generator seed             [1]";

/// Options of one run.
struct Opts {
    channel: Channel,
    instruments: usize,
    rate: f64,
    burst: u64,
    burst_every: Duration,
    snapshot_every: Duration,
    duration: Duration,
    restart_at: Option<Duration>,
    send_rate: Option<u64>,
    send_burst: u64,
    linger: Duration,
    seed: u64,
}

/// Parse the command line into [`Opts`].
fn parse_opts() -> Result<Opts, Box<dyn Error>> {
    let mut a = Args::parse(USAGE);
    let group: String = a.get("group", "239.255.9.1:40461".to_string());
    let interface: String = a.get("interface", "127.0.0.1".to_string());
    let stream: u32 = a.get("stream", 9);
    let channel: Channel =
        format!("udp://{group}?interface={interface}&stream={stream}").parse()?;
    let ms = |v: u64| Duration::from_millis(v);
    let send_rate: u64 = a.get("send-rate", 0);
    let o = Opts {
        channel,
        instruments: a.get("instruments", 300usize).clamp(1, 1 << 16),
        rate: a.get("rate", 50_000f64).max(0.0),
        burst: a.get("burst", 2_000),
        burst_every: ms(a.get("burst-every-ms", 250u64).max(1)),
        snapshot_every: ms(a.get("snapshot-ms", 500u64).max(1)),
        duration: ms(a.get("duration-ms", 3_000)),
        restart_at: Some(ms(a.get("restart-at-ms", 0))).filter(|d| !d.is_zero()),
        send_rate: Some(send_rate).filter(|&r| r > 0),
        send_burst: a.get("send-burst", (send_rate / 10).max(1500)),
        linger: ms(a.get("linger-ms", 300)),
        seed: a.get("seed", 1),
    };
    a.finish();
    Ok(o)
}

/// Back-pressure and feed counters of this process (all sessions).
#[derive(Default)]
struct Counters {
    quotes: u64,
    trades: u64,
    snapshot_quotes: u64,
    /// `OfferError::BackPressure` answers (each followed by flush + poll + retry).
    back_pressure: u64,
    /// `OfferError::RateLimited` answers (each followed by polling until the instant given).
    rate_limited: u64,
    sessions: u64,
}

/// Offer one message, handling back-pressure: never drops it, never spins without driving
/// the publisher.
fn offer(p: &mut Publisher, msg: &[u8], c: &mut Counters) -> Result<(), Box<dyn Error>> {
    loop {
        match p.offer_deferred(msg) {
            Ok(_seq) => return Ok(()),
            Err(OfferError::BackPressure) => {
                // Unsent frames fill their allowance: send them, serve NAKs, retry.
                c.back_pressure += 1;
                p.flush();
                p.poll()?;
            }
            Err(OfferError::RateLimited(until)) => {
                // The configured send rate is used up until `until`: keep serving NAKs
                // and heartbeats meanwhile.
                c.rate_limited += 1;
                p.flush();
                while Instant::now() < until {
                    p.poll()?;
                    std::thread::yield_now();
                }
            }
            Err(e @ OfferError::MessageTooLarge) => {
                return Err(format!("{e}: the feed encoding is broken").into());
            }
            // Closed, or the 64-bit sequence space used up (a restart begins a new session).
            Err(e @ (OfferError::Closed | OfferError::SequenceSpaceExhausted)) => {
                return Err(e.into());
            }
        }
    }
}

/// Wall-clock nanoseconds: the exchange timestamp in every message.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Open a publisher (a new session) on `source_port` (0: ephemeral).
fn open(opts: &Opts, source_port: u16) -> Result<Publisher, Box<dyn Error>> {
    let mut po = PublisherOptions::new(opts.channel.clone());
    po.socket.source_port = source_port;
    po.protocol.send_rate = opts.send_rate;
    po.protocol.send_burst = opts.send_burst;
    Ok(Publisher::new(po)?)
}

/// Send a full quote of every instrument.
fn snapshot_round(
    p: &mut Publisher,
    feed: &mut Generator,
    buf: &mut [u8; QUOTE_LEN],
    c: &mut Counters,
) -> Result<(), Box<dyn Error>> {
    for id in 0..feed.len() {
        let m = feed.snapshot(id, now_ns());
        offer(p, m.encode(buf), c)?;
        c.snapshot_quotes += 1;
        c.quotes += 1;
    }
    p.flush();
    Ok(())
}

/// Add one session's publisher counters to the running totals.
fn accumulate(total: &mut PublisherStats, s: &PublisherStats) {
    total.messages += s.messages;
    total.data_frames += s.data_frames;
    total.naks_received += s.naks_received;
    total.retransmits += s.retransmits;
    total.retransmit_bytes += s.retransmit_bytes;
    total.unavailable_sent += s.unavailable_sent;
    total.heartbeats += s.heartbeats;
    total.back_pressure += s.back_pressure;
}

/// Publish for the configured duration, then report.
fn main() -> Result<(), Box<dyn Error>> {
    let opts = parse_opts()?;
    let mut publisher = open(&opts, 0)?;
    // A restart reuses the source port, so subscribers see the same source with a new
    // session (Event::Restarted) rather than a new publisher.
    let source_port = publisher.local_addr().port();
    let mut c = Counters {
        sessions: 1,
        ..Counters::default()
    };
    let mut totals = PublisherStats::default();
    let mut feed = Generator::new(opts.instruments, opts.seed);
    let mut buf = [0u8; QUOTE_LEN];
    println!(
        "publisher: {} instruments on {} from {} (session {:#x}), {} msgs/s + {} every {:?}, for {:?}",
        feed.len(),
        opts.channel.endpoint,
        publisher.local_addr(),
        publisher.session(),
        opts.rate,
        opts.burst,
        opts.burst_every,
        opts.duration
    );

    // A back-off idle strategy: this publisher paces itself, it need not burn a core.
    let idle = IdleStrategy::Backoff {
        spins: 100,
        yields: 100,
        max_sleep: Duration::from_micros(200),
    };
    let mut idler = Idler::default();
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut next_snapshot = Duration::ZERO;
    let mut next_report = Duration::from_secs(1);
    let mut restart_at = opts.restart_at;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= opts.duration {
            break;
        }
        if restart_at.is_some_and(|t| elapsed >= t) {
            restart_at = None;
            accumulate(&mut totals, publisher.stats());
            // A crash: no CLOSE frames, the ring is gone.
            drop(publisher);
            publisher = open(&opts, source_port)?;
            c.sessions += 1;
            // The new process starts its feed state from scratch (versions included).
            feed = Generator::new(opts.instruments, opts.seed.wrapping_add(c.sessions));
            next_snapshot = elapsed;
            println!(
                "publisher: restarted at {:.3}s as session {:#x}",
                elapsed.as_secs_f64(),
                publisher.session()
            );
        }
        let mut work = 0;
        if elapsed >= next_snapshot {
            snapshot_round(&mut publisher, &mut feed, &mut buf, &mut c)?;
            next_snapshot = elapsed + opts.snapshot_every;
            work += feed.len();
        }
        // Steady rate plus a burst at every burst interval.
        let bursts = (elapsed.as_nanos() / opts.burst_every.as_nanos()) as u64;
        let due = (opts.rate * elapsed.as_secs_f64()) as u64 + bursts * opts.burst;
        // At most 1024 per turn, so that NAKs are served between chunks of a burst.
        let n = due.saturating_sub(sent).min(1024);
        for _ in 0..n {
            let m = feed.next(now_ns());
            match m {
                FeedMsg::Quote(_) => c.quotes += 1,
                FeedMsg::Trade(_) => c.trades += 1,
            }
            offer(&mut publisher, m.encode(&mut buf), &mut c)?;
        }
        sent += n;
        if n > 0 {
            publisher.flush();
        }
        work += n as usize + publisher.poll()?;
        if elapsed >= next_report {
            next_report += Duration::from_secs(1);
            let s = publisher.stats();
            println!(
                "publisher: t={:.1}s messages={} rate={:.0} msgs/s naks_received={} retransmits={}",
                elapsed.as_secs_f64(),
                totals.messages + s.messages,
                (totals.messages + s.messages) as f64 / elapsed.as_secs_f64(),
                totals.naks_received + s.naks_received,
                totals.retransmits + s.retransmits
            );
        }
        idler.idle(idle, work);
    }
    // A last snapshot so late joiners and stale instruments end valid, then a clean close
    // that keeps serving NAKs for the linger.
    snapshot_round(&mut publisher, &mut feed, &mut buf, &mut c)?;
    let elapsed = start.elapsed();
    publisher.close(opts.linger)?;
    accumulate(&mut totals, publisher.stats());
    println!(
        "publisher: done: messages={} quotes={} trades={} snapshot_quotes={} in {:.3}s rate={:.0} msgs/s",
        totals.messages,
        c.quotes,
        c.trades,
        c.snapshot_quotes,
        elapsed.as_secs_f64(),
        totals.messages as f64 / elapsed.as_secs_f64()
    );
    println!(
        "publisher: back_pressure={} rate_limited={} sessions={} send_errors={}",
        c.back_pressure,
        c.rate_limited,
        c.sessions,
        publisher.send_errors()
    );
    println!(
        "publisher: repairs served: naks_received={} retransmits={} retransmit_bytes={} unavailable_sent={} heartbeats={}",
        totals.naks_received,
        totals.retransmits,
        totals.retransmit_bytes,
        totals.unavailable_sent,
        totals.heartbeats
    );
    Ok(())
}
