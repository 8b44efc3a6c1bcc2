//! The market-data feed of `market_data_publisher` over multi-destination unicast, for
//! networks without multicast (most clouds): the publisher sends every frame to each
//! subscriber in turn, and NAK-based repair works exactly as with multicast.
//!
//! Two ways for the publisher to know its subscribers:
//! - registration (default): the channel's endpoint is the publisher's unicast address;
//!   each subscriber sends STATUS frames to it and is added as a destination (and dropped
//!   when it stops, after `PublisherConfig::destination_timeout`);
//! - static (`--static-destinations true`): each subscriber binds a known address
//!   (`SubscriberOptions::bind`) and the publisher lists them all
//!   (`PublisherOptions::destinations`), whether they register or not.
//!
//! One process on loopback: the publisher on the main thread, each subscriber on its own
//! thread keeping a top-of-book (`examples/feed/mod.rs`).
//!
//! ```sh
//! cargo run --release --example unicast_fanout
//! cargo run --release --example unicast_fanout -- --subscribers 4 --loss 0.01
//! ```

#[path = "feed/mod.rs"]
mod feed;

use std::error::Error;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use feed::{Args, Book, Generator, QUOTE_LEN};
use nakcast::transport::idle::Idler;
use nakcast::{
    Channel, Event, IdleStrategy, OfferError, Publisher, PublisherOptions, Subscriber,
    SubscriberOptions,
};

const USAGE: &str = "\
unicast_fanout: the market-data feed over multi-destination unicast (one process)

Options (all optional):
  --publisher IP:PORT     the publisher's unicast address [127.0.0.1:40463]
  --stream ID             stream id                       [9]
  --subscribers N         subscribers (one thread each)   [3]
  --static-destinations B true: the publisher lists the subscribers; false: they register [false]
  --instruments N         instruments                     [300]
  --rate N                messages per second             [20000]
  --duration-ms MS        how long to publish             [2000]
  --snapshot-ms MS        full quote of every instrument every MS [500]
  --loss P                drop this fraction of datagrams at each subscriber [0]";

/// What one subscriber thread saw.
struct SubReport {
    /// The address it was bound to (static mode).
    addr: Option<SocketAddr>,
    messages: u64,
    book: Book,
    loss_events: u64,
    closed: bool,
    recovered: u64,
    naks_sent: u64,
    status_sent: u64,
}

/// A subscriber thread: receive until the publisher closes (or `deadline`), keeping a book.
fn subscribe(
    mut sub: Subscriber,
    addr: Option<SocketAddr>,
    deadline: Instant,
) -> Result<SubReport, String> {
    let mut book = Book::new(300);
    let (mut messages, mut loss_events, mut closed) = (0u64, 0u64, false);
    while !closed && Instant::now() < deadline {
        let mut handler = |ev: Event<'_>| match ev {
            Event::Message { payload, .. } => {
                messages += 1;
                book.apply_payload(payload);
            }
            Event::Loss { .. } => {
                loss_events += 1;
                book.mark_all_stale();
            }
            Event::Restarted { .. } => book.rebuild(),
            Event::Closed { .. } | Event::Inactive { .. } => closed = true,
            Event::Joined { .. } => {}
        };
        sub.recv_timeout(&mut handler, Duration::from_millis(50))
            .map_err(|e| e.to_string())?;
    }
    let s = *sub.stats();
    Ok(SubReport {
        addr,
        messages,
        book,
        loss_events,
        closed,
        recovered: s.recovered,
        naks_sent: s.naks_sent,
        status_sent: s.status_sent,
    })
}

/// Offer with explicit back-pressure handling (see market_data_publisher for the details).
fn offer(p: &mut Publisher, msg: &[u8], back_pressure: &mut u64) -> Result<(), Box<dyn Error>> {
    loop {
        match p.offer_deferred(msg) {
            Ok(_) => return Ok(()),
            Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                *back_pressure += 1;
                p.flush();
                p.poll()?;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Wall-clock nanoseconds: the exchange timestamp in every message.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Start the subscribers, wait for registration, publish, report per subscriber.
fn main() -> Result<(), Box<dyn Error>> {
    let mut a = Args::parse(USAGE);
    let endpoint: SocketAddr = a.get("publisher", "127.0.0.1:40463".parse::<SocketAddr>()?);
    let stream: u32 = a.get("stream", 9);
    let n_subs: usize = a.get("subscribers", 3usize).clamp(1, 64);
    let static_dest: bool = a.get("static-destinations", false);
    let instruments: usize = a.get("instruments", 300);
    let rate: f64 = a.get("rate", 20_000.0);
    let duration = Duration::from_millis(a.get("duration-ms", 2_000));
    let snapshot_every = Duration::from_millis(a.get("snapshot-ms", 500u64).max(1));
    let loss: f64 = a.get("loss", 0.0);
    a.finish();
    if endpoint.ip().is_multicast() {
        return Err("--publisher must be a unicast address".into());
    }
    let channel: Channel = format!(
        "udp://{endpoint}?interface={}&stream={stream}",
        endpoint.ip()
    )
    .parse()?;

    // Static mode: choose each subscriber's address up front (free ports on that IP).
    let binds: Vec<Option<SocketAddr>> = (0..n_subs)
        .map(|_| {
            if static_dest {
                UdpSocket::bind((endpoint.ip(), 0))
                    .and_then(|s| s.local_addr())
                    .map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_, _>>()?;
    let mut po = PublisherOptions::new(channel.clone());
    po.destinations = binds.iter().flatten().copied().collect();
    let mut publisher = Publisher::new(po)?;

    let deadline = Instant::now() + duration + Duration::from_secs(10);
    let mut threads = Vec::new();
    for bind in &binds {
        let mut so = SubscriberOptions::new(channel.clone());
        so.bind = *bind;
        so.inject_loss = loss.clamp(0.0, 1.0);
        let sub = Subscriber::new(so)?;
        let bind = *bind;
        threads.push(std::thread::spawn(move || subscribe(sub, bind, deadline)));
    }

    // Registration is a STATUS round trip: wait for every subscriber before publishing.
    let t0 = Instant::now();
    while publisher.core().destinations().count() < n_subs {
        if t0.elapsed() > Duration::from_secs(5) {
            return Err(format!(
                "only {} of {n_subs} subscribers registered within 5 s",
                publisher.core().destinations().count()
            )
            .into());
        }
        publisher.poll()?;
        std::thread::sleep(Duration::from_micros(200));
    }
    println!(
        "fanout: publisher on {endpoint} (session {:#x}) to {} {} destinations after {:.1} ms",
        publisher.session(),
        publisher.core().destinations().count(),
        if static_dest { "static" } else { "registered" },
        t0.elapsed().as_secs_f64() * 1e3
    );

    let mut feed = Generator::new(instruments, 1);
    let mut buf = [0u8; QUOTE_LEN];
    let mut back_pressure = 0;
    let idle = IdleStrategy::Backoff {
        spins: 100,
        yields: 100,
        max_sleep: Duration::from_micros(200),
    };
    let mut idler = Idler::default();
    let start = Instant::now();
    let (mut sent, mut next_snapshot) = (0u64, Duration::ZERO);
    loop {
        let elapsed = start.elapsed();
        let last = elapsed >= duration;
        let mut work = 0;
        if elapsed >= next_snapshot || last {
            for id in 0..feed.len() {
                let m = feed.snapshot(id, now_ns());
                offer(&mut publisher, m.encode(&mut buf), &mut back_pressure)?;
            }
            next_snapshot = elapsed + snapshot_every;
            work += feed.len();
        }
        if last {
            break;
        }
        let n = ((rate * elapsed.as_secs_f64()) as u64)
            .saturating_sub(sent)
            .min(1024);
        for _ in 0..n {
            let m = feed.next(now_ns());
            offer(&mut publisher, m.encode(&mut buf), &mut back_pressure)?;
        }
        sent += n;
        publisher.flush();
        work += n as usize + publisher.poll()?;
        idler.idle(idle, work);
    }
    publisher.flush();
    let elapsed = start.elapsed();
    publisher.close(Duration::from_millis(300))?;

    let s = *publisher.stats();
    println!(
        "fanout: publisher messages={} data_frames={} rate={:.0} msgs/s back_pressure={back_pressure} fanout_drops={} naks_received={} retransmits={} status_received={} destinations_added={}",
        s.messages,
        s.data_frames,
        s.messages as f64 / elapsed.as_secs_f64(),
        publisher.fanout_drops(),
        s.naks_received,
        s.retransmits,
        s.status_received,
        s.destinations_added
    );
    let mut all_ok = true;
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().map_err(|_| "subscriber thread panicked")??;
        let (valid, stale, unknown) = r.book.counts();
        all_ok &= r.closed && r.messages + r.loss_events > 0;
        println!(
            "fanout: subscriber {i} ({}) messages={} valid={valid} stale={stale} unknown={unknown} inconsistent={} loss_events={} recovered={} naks_sent={} status_sent={} closed={}",
            r.addr.map_or("registered".to_string(), |a| a.to_string()),
            r.messages,
            r.book.inconsistent,
            r.loss_events,
            r.recovered,
            r.naks_sent,
            r.status_sent,
            r.closed
        );
    }
    if !all_ok {
        return Err("a subscriber did not see the publisher close".into());
    }
    Ok(())
}
