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
//! To see loss handling on loopback (where nothing is lost), `--loss 0.01` drops 1% of the
//! datagrams on receipt and `--loss-deadline-ms 0` gives up on a gap at its first NAK
//! instead of waiting for the repair (`ReceiverConfig::loss_deadline`).
//!
//! ```sh
//! cargo run --release --example book_subscriber &
//! cargo run --release --example market_data_publisher
//! ```

#[path = "feed/mod.rs"]
mod feed;

use std::collections::HashMap;
use std::error::Error;
use std::time::{Duration, Instant};

use feed::{Args, Book, State, px};
use nakcast::{Channel, Event, JoinPolicy, SourceId, Subscriber, SubscriberOptions};

const USAGE: &str = "\
book_subscriber: top-of-book from the market_data_publisher feed

Options (all optional):
  --group ADDR:PORT       multicast group and port        [239.255.9.1:40461]
  --interface IP          interface to join on            [127.0.0.1]
  --stream ID             stream id                       [9]
  --instruments N         book size (grows if needed)     [300]
  --messages N            exit after N messages (0 = no limit) [0]
  --wait-ms MS            exit if no message arrives within MS of starting [30000]
  --idle-timeout-ms MS    exit after MS without a message, once messages flow [2000]
  --max-duration-ms MS    exit after MS in any case       [60000]
  --join first|oldest     JoinPolicy::FirstSeen / FromOldest [first]
  --loss P                drop this fraction of datagrams on receipt (demo) [0]
  --loss-deadline-ms MS   ReceiverConfig::loss_deadline   [2000]";

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

/// Follow the feed until the publisher closes, the message limit, or a timeout.
fn main() -> Result<(), Box<dyn Error>> {
    let mut a = Args::parse(USAGE);
    let group: String = a.get("group", "239.255.9.1:40461".to_string());
    let interface: String = a.get("interface", "127.0.0.1".to_string());
    let stream: u32 = a.get("stream", 9);
    let instruments: usize = a.get("instruments", 300);
    let max_messages: u64 = a.get("messages", 0);
    let idle_timeout = Duration::from_millis(a.get("idle-timeout-ms", 2_000));
    let wait = Duration::from_millis(a.get("wait-ms", 30_000));
    let max_duration = Duration::from_millis(a.get("max-duration-ms", 60_000));
    let join: String = a.get("join", "first".to_string());
    let loss: f64 = a.get("loss", 0.0);
    let loss_deadline = Duration::from_millis(a.get("loss-deadline-ms", 2_000));
    a.finish();

    let channel: Channel =
        format!("udp://{group}?interface={interface}&stream={stream}").parse()?;
    let mut opts = SubscriberOptions::new(channel);
    opts.protocol.join = match join.as_str() {
        "first" => JoinPolicy::FirstSeen,
        "oldest" => JoinPolicy::FromOldest,
        other => return Err(format!("--join {other:?}: expected first or oldest").into()),
    };
    opts.protocol.loss_deadline = loss_deadline;
    opts.inject_loss = loss.clamp(0.0, 1.0);
    let mut sub = Subscriber::new(opts)?;
    // Tests wait for this line before starting the publisher.
    println!("book: listening on {group} via {interface}, stream {stream}");

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
                let _ = reason; // Unavailable, Timeout, PublisherRestarted, ...: all the same here.
                book.mark_all_stale();
            }
            Event::Restarted {
                source,
                new_session,
                ..
            } => {
                sessions.restarts += 1;
                sessions.live.insert(source, new_session);
                book.rebuild();
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
    Ok(())
}
