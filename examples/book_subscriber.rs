//! Consumes the `market_data_publisher` feed and keeps a top-of-book per instrument, doing
//! what a real consumer must do around the events nakcast reports:
//!
//! - `Event::Loss`: some messages will never arrive, and which instruments they were about
//!   is unknown, so every instrument is marked stale until its next full quote (the
//!   publisher's snapshot rounds bring them back);
//! - `Event::Restarted`: the publisher's new session starts its feed from scratch, so the
//!   whole book is dropped and rebuilt from the new session's full quotes;
//! - `Event::Closed` / `Event::Inactive`: the publisher is gone.
//!
//! Each quote carries a per-instrument version; a valid instrument whose next quote skips a
//! version would mean a message vanished without a `Loss` event. The summary counts those
//! (`inconsistent=`), and it stays 0.
//!
//! By default it runs on its own: a publisher thread in the same process sends the feed
//! (a compact version of `market_data_publisher`'s loop: steady rate, snapshot rounds, and
//! a simulated crash and restart half-way, on the same source port), and the subscriber
//! drops 1% of the datagrams it receives (`--loss`) and gives up on a gap at its first NAK
//! (`--loss-deadline-ms 0`, `ReceiverConfig::loss_deadline`) instead of waiting for the
//! repair, so that both the Loss/stale and the restart/rebuild paths run on loopback, where
//! nothing is lost otherwise. `--external true` only subscribes, to a separately started
//! publisher (then it exits 1 if none is heard within `--wait-ms`).
//!
//! ```sh
//! cargo run --release --example book_subscriber
//! # or against a separate publisher:
//! cargo run --release --example book_subscriber -- --external true &
//! cargo run --release --example market_data_publisher -- --restart-at-ms 1500
//! ```

#[path = "feed/mod.rs"]
mod feed;

use std::collections::HashMap;
use std::error::Error;
use std::time::{Duration, Instant};

use feed::{Args, Book, Generator, QUOTE_LEN, State, px};
use nakcast::{
    Channel, Event, JoinPolicy, OfferError, Publisher, PublisherOptions, SourceId, Subscriber,
    SubscriberOptions,
};

const USAGE: &str = "\
book_subscriber: top-of-book from the market_data_publisher feed

By default the feed runs in this process (a publisher thread that crashes and restarts
half-way) and 1% of the datagrams are dropped on receipt, so that losses and the restart
show. --external true subscribes to a separately started market_data_publisher instead.

Options (all optional):
  --external true|false   follow an external publisher, start none [false]
  --group ADDR:PORT       multicast group and port        [239.255.9.1:40461]
  --interface IP          interface to join on            [127.0.0.1]
  --stream ID             stream id                       [9]
  --instruments N         book size (grows if needed)     [300]
  --messages N            exit after N messages (0 = no limit) [0]
  --wait-ms MS            exit 1 if no message arrives within MS of starting
                          [30000 external, 5000 in-process]
  --idle-timeout-ms MS    exit after MS without a message, once messages flow [2000]
  --max-duration-ms MS    exit after MS in any case       [60000]
  --join first|oldest     JoinPolicy::FirstSeen / FromOldest [first]
  --loss P                drop this fraction of datagrams on receipt [0.01 in-process, 0 external]
  --loss-deadline-ms MS   ReceiverConfig::loss_deadline   [0 in-process, 2000 external]

In-process feed (ignored with --external true):
  --rate N                steady messages per second      [20000]
  --duration-ms MS        how long to publish             [3000]
  --restart-at-ms MS      simulate a crash and restart at MS (0 = never) [1500]
  --snapshot-ms MS        full quote of every instrument every MS [500]";

/// The in-process feed's settings.
struct FeedPlan {
    channel: Channel,
    instruments: usize,
    rate: f64,
    duration: Duration,
    restart_at: Option<Duration>,
    snapshot_every: Duration,
}

/// What the in-process publisher did, all sessions together.
#[derive(Default)]
struct FeedSummary {
    messages: u64,
    sessions: u64,
    naks_received: u64,
    retransmits: u64,
}

/// Offer one message, waiting out back-pressure by driving the publisher (see
/// `market_data_publisher` for the case-by-case handling).
fn offer(p: &mut Publisher, msg: &[u8]) -> Result<(), String> {
    loop {
        match p.offer_deferred(msg) {
            Ok(_) => return Ok(()),
            Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                p.flush();
                p.poll().map_err(|e| e.to_string())?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The in-process publisher thread: a compact version of `market_data_publisher`'s loop.
/// It sends feed messages at a steady rate and a full quote of every instrument every
/// `snapshot_every`; at `restart_at` it drops its publisher without closing it (a crash)
/// and opens a new one on the same source port, which the subscriber sees as
/// `Event::Restarted`. At the end a last snapshot round, then a clean close.
fn run_feed(plan: FeedPlan) -> Result<FeedSummary, String> {
    let open = |source_port: u16| {
        let mut po = PublisherOptions::new(plan.channel.clone());
        po.socket.source_port = source_port;
        Publisher::new(po).map_err(|e| e.to_string())
    };
    let mut p = open(0)?;
    let source_port = p.local_addr().port();
    let mut summary = FeedSummary {
        sessions: 1,
        ..FeedSummary::default()
    };
    let add_stats = |p: &Publisher, summary: &mut FeedSummary| {
        let s = p.stats();
        summary.messages += s.messages;
        summary.naks_received += s.naks_received;
        summary.retransmits += s.retransmits;
    };
    let mut feed = Generator::new(plan.instruments, 1);
    let mut buf = [0u8; QUOTE_LEN];
    println!(
        "publisher: in-process feed of {} instruments from {} (session {:#x}), {} msgs/s for {:?}",
        feed.len(),
        p.local_addr(),
        p.session(),
        plan.rate,
        plan.duration
    );
    let start = Instant::now();
    let mut restart_at = plan.restart_at;
    let mut next_snapshot = Duration::ZERO;
    let mut sent: u64 = 0;
    loop {
        let elapsed = start.elapsed();
        if elapsed >= plan.duration {
            break;
        }
        if restart_at.is_some_and(|t| elapsed >= t) {
            restart_at = None;
            add_stats(&p, &mut summary);
            // A crash: no CLOSE frames, the ring is gone.
            drop(p);
            p = open(source_port)?;
            summary.sessions += 1;
            // The new process starts its feed state from scratch (versions included).
            feed = Generator::new(plan.instruments, summary.sessions);
            next_snapshot = elapsed;
            println!(
                "publisher: crashed and restarted at {:.3}s as session {:#x}",
                elapsed.as_secs_f64(),
                p.session()
            );
        }
        let ts = elapsed.as_nanos() as u64;
        if elapsed >= next_snapshot {
            for id in 0..feed.len() {
                offer(&mut p, feed.snapshot(id, ts).encode(&mut buf))?;
            }
            next_snapshot = elapsed + plan.snapshot_every;
        }
        // At most 1024 per turn, so that NAKs are served between chunks.
        let due = (plan.rate * elapsed.as_secs_f64()) as u64;
        let n = due.saturating_sub(sent).min(1024);
        for _ in 0..n {
            offer(&mut p, feed.next(ts).encode(&mut buf))?;
        }
        sent += n;
        p.flush();
        let work = p.poll().map_err(|e| e.to_string())?;
        if n == 0 && work == 0 {
            // Paced, not spinning: the subscriber may need the other core.
            std::thread::sleep(Duration::from_micros(500));
        }
    }
    // A last snapshot round so that stale instruments come back, then a clean close that
    // serves NAKs for a while.
    let ts = start.elapsed().as_nanos() as u64;
    for id in 0..feed.len() {
        offer(&mut p, feed.snapshot(id, ts).encode(&mut buf))?;
    }
    p.flush();
    p.close(Duration::from_millis(300))
        .map_err(|e| e.to_string())?;
    add_stats(&p, &mut summary);
    Ok(summary)
}

/// What happened to the publishers, for the summary.
#[derive(Default)]
struct Sessions {
    /// Publishers currently followed, with their session.
    live: HashMap<SourceId, u64>,
    joins: u64,
    closed: u64,
    inactive: u64,
    loss_events: u64,
    lost_seqs: u64,
    restarts: u64,
}

/// Follow the feed (started in-process unless `--external true`) until the publisher
/// closes, the message limit, or a timeout.
fn main() -> Result<(), Box<dyn Error>> {
    let mut a = Args::parse(USAGE);
    let external: bool = a.get("external", false);
    let group: String = a.get("group", "239.255.9.1:40461".to_string());
    let interface: String = a.get("interface", "127.0.0.1".to_string());
    let stream: u32 = a.get("stream", 9);
    let instruments: usize = a.get("instruments", 300);
    let max_messages: u64 = a.get("messages", 0);
    let idle_timeout = Duration::from_millis(a.get("idle-timeout-ms", 2_000));
    let wait = Duration::from_millis(a.get("wait-ms", if external { 30_000 } else { 5_000 }));
    let max_duration = Duration::from_millis(a.get("max-duration-ms", 60_000));
    let join: String = a.get("join", "first".to_string());
    let loss: f64 = a.get("loss", if external { 0.0 } else { 0.01 });
    let loss_deadline =
        Duration::from_millis(a.get("loss-deadline-ms", if external { 2_000 } else { 0 }));
    let rate: f64 = a.get("rate", 20_000.0);
    let duration = Duration::from_millis(a.get("duration-ms", 3_000));
    let restart_at = Duration::from_millis(a.get("restart-at-ms", 1_500));
    let snapshot_every = Duration::from_millis(a.get("snapshot-ms", 500u64).max(1));
    a.finish();

    let channel: Channel =
        format!("udp://{group}?interface={interface}&stream={stream}").parse()?;
    let mut opts = SubscriberOptions::new(channel.clone());
    opts.protocol.join = match join.as_str() {
        "first" => JoinPolicy::FirstSeen,
        "oldest" => JoinPolicy::FromOldest,
        other => return Err(format!("--join {other:?}: expected first or oldest").into()),
    };
    opts.protocol.loss_deadline = loss_deadline;
    opts.inject_loss = loss.clamp(0.0, 1.0);
    let mut sub = Subscriber::new(opts)?;
    // Tests wait for this line before starting an external publisher.
    println!(
        "book: listening on {group} via {interface}, stream {stream}{}",
        if external {
            String::new()
        } else {
            format!(
                "; in-process feed, dropping {:.1}% of datagrams on receipt",
                loss * 100.0
            )
        }
    );
    // The subscriber is joined to the group first, so it hears the feed from its start.
    let feed_thread = if external {
        None
    } else {
        let plan = FeedPlan {
            channel,
            instruments,
            rate,
            duration,
            restart_at: Some(restart_at).filter(|d| !d.is_zero()),
            snapshot_every,
        };
        Some(
            std::thread::Builder::new()
                .name("publisher".into())
                .spawn(move || run_feed(plan))?,
        )
    };

    let mut book = Book::new(instruments);
    let mut sessions = Sessions::default();
    let mut messages: u64 = 0;
    let start = Instant::now();
    let mut last_message = start;
    let mut next_report = Duration::from_secs(1);
    let reason = loop {
        let before = messages;
        let mut handler = |ev: Event<'_>| match ev {
            Event::Message { payload, .. } => {
                messages += 1;
                book.apply_payload(payload);
            }
            Event::Loss { range, reason, .. } => {
                sessions.loss_events += 1;
                sessions.lost_seqs += range.len();
                // Unavailable, Timeout, PublisherRestarted, ...: all the same here.
                book.mark_all_stale();
                if sessions.loss_events <= 3 {
                    let (valid, stale, _) = book.counts();
                    println!(
                        "book: lost {range} ({reason:?}): {stale} instruments stale until their \
                         next full quote, {valid} valid{}",
                        if sessions.loss_events == 3 {
                            " (further losses: in the summary)"
                        } else {
                            ""
                        }
                    );
                }
            }
            Event::Restarted {
                source,
                old_session,
                new_session,
            } => {
                sessions.restarts += 1;
                sessions.live.insert(source, new_session);
                book.rebuild();
                println!(
                    "book: publisher {source} restarted (session {old_session:#x} -> \
                     {new_session:#x}): book dropped, rebuilding from full quotes"
                );
            }
            Event::Joined {
                source, session, ..
            } => {
                sessions.joins += 1;
                sessions.live.insert(source, session);
            }
            Event::Closed { source, .. } => {
                sessions.closed += 1;
                sessions.live.remove(&source);
            }
            Event::Inactive { source, .. } => {
                // Its gaps were reported lost first; the book is stale until it returns.
                sessions.inactive += 1;
                sessions.live.remove(&source);
                book.mark_all_stale();
            }
        };
        // Block in the kernel until a datagram or a protocol timer is due.
        sub.recv_timeout(&mut handler, Duration::from_millis(50))?;
        let now = Instant::now();
        if messages > before {
            last_message = now;
        }
        let elapsed = now - start;
        if elapsed >= next_report {
            next_report += Duration::from_secs(1);
            let (valid, stale, unknown) = book.counts();
            println!(
                "book: t={:.1}s messages={messages} valid={valid} stale={stale} unknown={unknown}",
                elapsed.as_secs_f64()
            );
        }
        if max_messages > 0 && messages >= max_messages {
            break "message limit";
        }
        if sessions.closed > 0 && sessions.live.is_empty() {
            break "publisher closed";
        }
        if messages == 0 && elapsed >= wait {
            break "no publisher";
        }
        if messages > 0 && now - last_message >= idle_timeout {
            break "idle timeout";
        }
        if elapsed >= max_duration {
            break "max duration";
        }
    };

    let (valid, stale, unknown) = book.counts();
    let s = sub.stats();
    let rl = sub.repair_latency();
    let us = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| {
            format!("{:.1}us", d.as_secs_f64() * 1e6)
        })
    };
    println!(
        "book: done ({reason}) after {:.3}s",
        start.elapsed().as_secs_f64()
    );
    println!(
        "book: messages={messages} quotes={} snapshot_quotes={} trades={} ignored={} bad={}",
        book.quotes, book.snapshot_quotes, book.trades, book.ignored, book.bad_messages
    );
    println!(
        "book: instruments valid={valid} stale={stale} unknown={unknown} inconsistent={}",
        book.inconsistent
    );
    println!(
        "book: loss_events={} lost_seqs={} stale_marks={} recovered_instruments={} restarts={} rebuilds={} joins={} closed={} inactive={}",
        sessions.loss_events,
        sessions.lost_seqs,
        book.stale_marks,
        book.recovered,
        sessions.restarts,
        book.rebuilds,
        sessions.joins,
        sessions.closed,
        sessions.inactive
    );
    println!(
        "book: transport: injected_drops={} gaps={} naks_sent={} recovered={} repair_p50={} repair_p99={}",
        sub.injected_drops(),
        s.gaps,
        s.naks_sent,
        s.recovered,
        us(rl.quantile(0.5)),
        us(rl.quantile(0.99))
    );
    for id in 0..3 {
        if let Some(l) = book.level(id).filter(|l| l.state == State::Valid) {
            println!(
                "book: #{id:<3} {} x {} / {} x {}  last {} vol {}",
                l.bid_qty,
                px(l.bid_px),
                px(l.ask_px),
                l.ask_qty,
                px(l.last_px),
                l.volume
            );
        }
    }
    if let Some(t) = feed_thread {
        let f = t.join().map_err(|_| "the publisher thread panicked")??;
        println!(
            "publisher: done: messages={} sessions={} naks_received={} retransmits={}",
            f.messages, f.sessions, f.naks_received, f.retransmits
        );
    }
    if reason == "no publisher" {
        return Err(format!(
            "no message from a publisher on {group} via {interface} within {wait:?}{}",
            if external {
                " (start market_data_publisher with the same --group, or drop --external)"
            } else {
                " (loopback multicast is not working: run `nakcast doctor --interface 127.0.0.1`)"
            }
        )
        .into());
    }
    Ok(())
}
