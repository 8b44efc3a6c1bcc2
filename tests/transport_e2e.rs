//! End to end over real UDP sockets on loopback multicast.
//!
//! Every test uses its own group and a free port, and is bounded in time.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nakcast::proto::wire::SeqRange;
use nakcast::transport::{SocketWarning, TransportError};
use nakcast::{
    Channel, Error, Event, Interface, JoinPolicy, LossReason, OfferError, Publisher,
    PublisherOptions, SocketConfig, Subscriber, SubscriberOptions,
};

mod support;
use support::free_port;

/// A channel on a group unique to this test and a free port, on loopback.
fn channel(group_byte: u8) -> Channel {
    support::loopback_channel(100 + group_byte)
}

fn payload_byte(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u8 ^ (i as u8).wrapping_mul(31)
}

/// Mixed sizes, a function of the sequence number so receivers can check each length:
/// mostly small market-data-like messages, 1 in 500 large enough to fragment (3 to 9 KB
/// over a 1,472-byte mtu).
fn size_of(seq: u64) -> usize {
    if seq % 500 == 499 {
        3000 + (seq % 7) as usize * 1000
    } else {
        8 + (seq * 37 % 200) as usize
    }
}

fn message(seq: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| payload_byte(seq, i)).collect()
}

/// What one subscriber saw, checked as it arrives.
#[derive(Default, Debug)]
struct Collector {
    messages: u64,
    next: HashMap<u64, u64>,
    last_seq: HashMap<u64, u64>,
    losses: Vec<(SeqRange, LossReason)>,
    joined: Vec<(u64, u64)>,
    restarts: u64,
    closed: u64,
    errors: Vec<String>,
}

impl Collector {
    fn on(&mut self, ev: Event<'_>) {
        match ev {
            Event::Message {
                session,
                seq,
                payload,
                ..
            } => {
                if let Some(&last) = self.last_seq.get(&session)
                    && seq <= last
                {
                    self.errors.push(format!("seq {seq} after {last}"));
                }
                self.last_seq.insert(session, seq);
                if payload.len() != size_of(seq) {
                    self.errors.push(format!(
                        "payload of {seq} has {} bytes, not {}",
                        payload.len(),
                        size_of(seq)
                    ));
                } else if payload
                    .iter()
                    .enumerate()
                    .any(|(i, &b)| b != payload_byte(seq, i))
                {
                    self.errors.push(format!("payload of {seq} corrupted"));
                }
                *self.next.entry(session).or_default() += 1;
                self.messages += 1;
            }
            Event::Loss { range, reason, .. } => self.losses.push((range, reason)),
            Event::Joined {
                session, start_seq, ..
            } => self.joined.push((session, start_seq)),
            Event::Restarted { .. } => self.restarts += 1,
            Event::Closed { .. } => self.closed += 1,
            Event::Inactive { .. } => {}
        }
    }
}

fn subscriber(ch: &Channel, f: impl FnOnce(&mut SubscriberOptions)) -> Subscriber {
    let mut o = SubscriberOptions::new(ch.clone());
    f(&mut o);
    Subscriber::new(o).unwrap()
}

fn publisher(ch: &Channel, f: impl FnOnce(&mut PublisherOptions)) -> Publisher {
    let mut o = PublisherOptions::new(ch.clone());
    f(&mut o);
    Publisher::new(o).unwrap()
}

/// Whether an offer failed for back-pressure (send queue or rate limit), to be retried after
/// a poll; any other error is a bug in the test.
fn is_back_pressure(e: &OfferError) -> bool {
    matches!(e, OfferError::BackPressure | OfferError::RateLimited(_))
}

/// `offer_deferred` `msg`, polling `p` through back-pressure until `deadline`.
fn offer_deferred_until(p: &mut Publisher, msg: &[u8], deadline: Instant) -> u64 {
    loop {
        match p.offer_deferred(msg) {
            Ok(seq) => return seq,
            Err(e) if is_back_pressure(&e) => {
                assert!(
                    Instant::now() < deadline,
                    "back-pressure did not clear: {e}"
                );
                p.poll().unwrap();
            }
            Err(e) => panic!("offer failed: {e}"),
        }
    }
}

fn poll_all(subs: &mut [(Subscriber, Collector)]) -> usize {
    subs.iter_mut()
        .map(|(s, c)| s.poll(&mut |e| c.on(e), usize::MAX).unwrap())
        .sum()
}

/// Publish `n` messages, polling the subscribers as we go, then drive everything until
/// each subscriber has `expect` messages or `deadline` passes.
fn run(
    publishers: &mut [Publisher],
    subs: &mut [(Subscriber, Collector)],
    n: u64,
    expect: u64,
    deadline: Duration,
) {
    let start = Instant::now();
    for k in 0..n {
        for p in publishers.iter_mut() {
            let seq = p.core().next_seq();
            let msg = message(seq, size_of(seq));
            // Batch most messages (throughput); every 64th goes out at once (latency path).
            loop {
                let r = if k % 64 == 0 {
                    p.offer(&msg)
                } else {
                    p.offer_deferred(&msg)
                };
                match r {
                    Ok(s) => {
                        assert_eq!(s, seq);
                        break;
                    }
                    Err(e) if is_back_pressure(&e) => {
                        assert!(start.elapsed() < deadline, "back-pressure did not clear");
                        p.poll().unwrap();
                        poll_all(subs);
                    }
                    Err(e) => panic!("offer of {seq} failed: {e}"),
                }
            }
            if k % 32 == 31 {
                p.flush();
            }
        }
        if k % 32 == 31 {
            poll_all(subs);
            for p in publishers.iter_mut() {
                p.poll().unwrap();
            }
        }
        assert!(start.elapsed() < deadline, "publishing took too long");
    }
    for p in publishers.iter_mut() {
        p.flush();
    }
    while subs
        .iter()
        .any(|(_, c)| c.messages + lost_messages(c) < expect)
    {
        assert!(
            start.elapsed() < deadline,
            "timed out: {:?}",
            subs.iter()
                .map(|(s, c)| (c.messages, s.stats()))
                .collect::<Vec<_>>()
        );
        for p in publishers.iter_mut() {
            p.poll().unwrap();
        }
        if poll_all(subs) == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

fn lost_messages(c: &Collector) -> u64 {
    c.losses.iter().map(|(r, _)| r.len()).sum()
}

#[test]
fn million_messages_to_three_subscribers_in_process() {
    let ch = channel(1);
    let mut subs: Vec<_> = (0..3)
        .map(|_| (subscriber(&ch, |_| {}), Collector::default()))
        .collect();
    let mut pubs = vec![publisher(&ch, |_| {})];
    let n = 1_000_000;
    run(&mut pubs, &mut subs, n, n, Duration::from_secs(120));
    for (s, c) in &subs {
        assert!(
            c.errors.is_empty(),
            "{:?}",
            &c.errors[..c.errors.len().min(5)]
        );
        assert_eq!(c.messages, n);
        assert!(c.losses.is_empty(), "{:?}", c.losses);
        assert_eq!(s.stats().duplicates, 0);
        assert_eq!(s.stats().message_bytes, pubs[0].stats().message_bytes);
        println!("subscriber: {:?}", s.stats());
    }
    println!("publisher: {:?}", pubs[0].stats());
}

#[test]
fn two_publishers_on_one_group_and_stream() {
    let ch = channel(2);
    let mut subs: Vec<_> = (0..2)
        .map(|_| (subscriber(&ch, |_| {}), Collector::default()))
        .collect();
    let mut pubs = vec![publisher(&ch, |_| {}), publisher(&ch, |_| {})];
    run(
        &mut pubs,
        &mut subs,
        20_000,
        40_000,
        Duration::from_secs(60),
    );
    for (_, c) in &subs {
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.joined.len(), 2);
        assert_eq!(
            c.next.values().copied().collect::<Vec<_>>(),
            [20_000, 20_000]
        );
    }
}

#[test]
fn ten_percent_injected_loss_is_fully_recovered() {
    let ch = channel(3);
    let mut subs = vec![
        (
            subscriber(&ch, |o| o.inject_loss = 0.10),
            Collector::default(),
        ),
        (subscriber(&ch, |_| {}), Collector::default()),
    ];
    let mut pubs = vec![publisher(&ch, |_| {})];
    let n = 50_000;
    run(&mut pubs, &mut subs, n, n, Duration::from_secs(60));
    let (lossy, c) = &subs[0];
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.messages, n);
    assert!(c.losses.is_empty());
    let s = lossy.stats();
    println!(
        "lossy subscriber: injected drops {}, {s:?}",
        lossy.injected_drops()
    );
    assert!(lossy.injected_drops() > 0);
    assert!(s.naks_sent > 0 && s.recovered > 0, "{s:?}");
    assert!(pubs[0].stats().retransmits > 0);
    assert_eq!(subs[1].1.messages, n);
}

#[test]
fn late_joiners_and_a_restarted_publisher() {
    let ch = channel(4);
    let source_port = free_port();
    let fixed_port = |o: &mut PublisherOptions| {
        o.socket = SocketConfig {
            source_port,
            ..SocketConfig::default()
        };
    };
    let mut early = vec![(subscriber(&ch, |_| {}), Collector::default())];
    let mut pubs = vec![publisher(&ch, fixed_port)];
    run(&mut pubs, &mut early, 1000, 1000, Duration::from_secs(30));

    // Two late joiners: one from the first message it sees (the session is older than its
    // reorder window, so it does not go back to the session's start), one recovering the
    // backlog.
    let mut late = vec![
        (
            subscriber(&ch, |o| o.protocol.reorder_window = 256),
            Collector::default(),
        ),
        (
            subscriber(&ch, |o| o.protocol.join = JoinPolicy::FromOldest),
            Collector::default(),
        ),
    ];
    run(&mut pubs, &mut late, 500, 500, Duration::from_secs(30));
    assert_eq!(late[0].1.messages, 500);
    assert!(
        late[0].1.joined[0].1 > 0,
        "first-seen joiner starts at live data"
    );
    // The backlog joiner got all 1500 messages: the 1000 before it joined, then live.
    let deadline = Instant::now() + Duration::from_secs(10);
    while late[1].1.messages < 1500 {
        assert!(
            Instant::now() < deadline,
            "backlog not recovered: {}",
            late[1].1.messages
        );
        pubs[0].poll().unwrap();
        poll_all(&mut late);
    }
    assert_eq!(late[1].1.joined[0].1, 0);
    assert!(late[1].1.losses.is_empty());

    // Restart: the same source address, a new session.
    let old = pubs.pop().unwrap();
    let old_session = old.session();
    drop(old);
    let mut pubs = vec![publisher(&ch, fixed_port)];
    assert_ne!(pubs[0].session(), old_session);
    let mut all: Vec<_> = early.into_iter().chain(late).collect();
    for (_, c) in all.iter_mut() {
        c.messages = 0;
    }
    run(&mut pubs, &mut all, 200, 200, Duration::from_secs(30));
    for (_, c) in &all {
        assert_eq!(c.restarts, 1);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.next[&pubs[0].session()], 200);
    }
}

/// Messages a child subscriber reports progress after (a `PROGRESS` line).
const CHILD_PROGRESS_EVERY: u64 = 256;

/// Child side of the multi-process test: a subscriber in its own process. It prints
/// `NAKCAST_CHILD READY` once it has joined the group, `NAKCAST_CHILD PROGRESS n` every
/// [`CHILD_PROGRESS_EVERY`] messages, and a `NAKCAST_CHILD DONE` summary at the end.
#[test]
fn child_subscriber_process() {
    let Ok(ch) = std::env::var("NAKCAST_E2E_CHILD_CHANNEL") else {
        return;
    };
    let n: u64 = std::env::var("NAKCAST_E2E_CHILD_COUNT")
        .unwrap()
        .parse()
        .unwrap();
    let ch: Channel = ch.parse().unwrap();
    let mut sub = subscriber(&ch, |_| {});
    let mut c = Collector::default();
    let deadline = Instant::now() + Duration::from_secs(150);
    println!("NAKCAST_CHILD READY");
    let mut reported = 0;
    while c.messages < n && c.closed == 0 && Instant::now() < deadline {
        sub.recv_timeout(&mut |e| c.on(e), Duration::from_millis(10))
            .unwrap();
        if c.messages >= reported + CHILD_PROGRESS_EVERY {
            reported = c.messages;
            println!("NAKCAST_CHILD PROGRESS {reported}");
        }
    }
    println!(
        "NAKCAST_CHILD DONE messages={} losses={} errors={} first_errors={:?} {:?}",
        c.messages,
        c.losses.len(),
        c.errors.len(),
        &c.errors[..c.errors.len().min(3)],
        sub.stats()
    );
}

/// Child processes, killed if the test fails before they exit.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// What the parent reads from one child's stdout (on a thread of its own).
#[derive(Default)]
struct ChildProgress {
    ready: AtomicBool,
    messages: AtomicU64,
    done: AtomicBool,
}

/// Read `child`'s stdout line by line into `progress`; returns the whole output.
fn read_child(child: &mut Child, progress: Arc<ChildProgress>) -> std::thread::JoinHandle<String> {
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        let mut text = String::new();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Markers, not whole lines: libtest may print its own text ahead of one.
            if line.contains("NAKCAST_CHILD READY") {
                progress.ready.store(true, Ordering::Release);
            } else if let Some((_, n)) = line.split_once("NAKCAST_CHILD PROGRESS ") {
                progress
                    .messages
                    .store(n.trim().parse().unwrap(), Ordering::Release);
            } else if line.contains("NAKCAST_CHILD DONE") {
                progress.done.store(true, Ordering::Release);
            }
            text.push_str(&line);
            text.push('\n');
        }
        // The pipe closed: the child exited (normally after DONE).
        progress.done.store(true, Ordering::Release);
        text
    })
}

/// Test 2: test 1 across separate processes. Three child processes (this test binary, run
/// as `child_subscriber_process`) join the same group and port with `SO_REUSEPORT`; each
/// checks every message's order, length and bytes.
///
/// The publisher stays within a window of the slowest child's reported progress: on a
/// loaded 2-core machine, four processes cannot all run at once, and an unbounded sender
/// would only measure how much the kernel's socket buffers absorb (loss there is recovered
/// by NAK, and counted; unrecovered loss fails the test).
#[test]
fn subscribers_in_separate_processes_share_the_port() {
    const CHILDREN: usize = 3;
    const WINDOW: u64 = 8 * CHILD_PROGRESS_EVERY;
    let ch = channel(5);
    let n = 1_000_000u64;
    let exe = std::env::current_exe().unwrap();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(180);
    let mut children = Children(Vec::new());
    let mut readers = Vec::new();
    let mut progress = Vec::new();
    for _ in 0..CHILDREN {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "child_subscriber_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("NAKCAST_E2E_CHILD_CHANNEL", ch.to_string())
            .env("NAKCAST_E2E_CHILD_COUNT", n.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let p = Arc::new(ChildProgress::default());
        readers.push(read_child(&mut child, p.clone()));
        progress.push(p);
        children.0.push(child);
    }
    // Publish only once every child has joined the group.
    while !progress.iter().all(|p| p.ready.load(Ordering::Acquire)) {
        assert!(
            Instant::now() < deadline,
            "children not ready: {}",
            progress
                .iter()
                .filter(|p| !p.ready.load(Ordering::Acquire))
                .count()
        );
        assert!(
            !progress.iter().any(|p| p.done.load(Ordering::Acquire)),
            "a child exited before it was ready"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let slowest = |progress: &[Arc<ChildProgress>]| {
        progress
            .iter()
            .map(|p| p.messages.load(Ordering::Acquire))
            .min()
            .unwrap()
    };
    let mut p = publisher(&ch, |_| {});
    for k in 0..n {
        if k % CHILD_PROGRESS_EVERY == 0 {
            p.flush();
            while k >= slowest(&progress) + WINDOW {
                assert!(
                    Instant::now() < deadline,
                    "children stalled at {} of {k}",
                    slowest(&progress)
                );
                if p.poll().unwrap() == 0 {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
        }
        let seq = p.core().next_seq();
        let msg = message(seq, size_of(seq));
        assert_eq!(offer_deferred_until(&mut p, &msg, deadline), seq);
        if k % 16 == 15 {
            p.flush();
            p.poll().unwrap();
        }
    }
    p.flush();
    // Serve NAKs until every child has everything, then close.
    while !progress.iter().all(|p| p.done.load(Ordering::Acquire)) {
        assert!(Instant::now() < deadline, "children did not finish");
        if p.poll().unwrap() == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    p.close(Duration::from_millis(10)).unwrap();
    for (child, reader) in children.0.iter_mut().zip(readers) {
        let status = child.wait().unwrap();
        let text = reader.join().unwrap();
        assert!(
            status.success()
                && text.contains(&format!(
                    "NAKCAST_CHILD DONE messages={n} losses=0 errors=0 "
                )),
            "child {status}, output: {text}"
        );
    }
    println!(
        "{n} messages to {CHILDREN} processes in {:?}; publisher: {:?}",
        start.elapsed(),
        p.stats()
    );
}

#[test]
fn background_drivers_and_event_iterator() {
    use nakcast::{IdleStrategy, OwnedEvent};
    let ch = channel(6);
    let (tx, rx) = std::sync::mpsc::channel();
    let sub = subscriber(&ch, |o| o.inject_loss = 0.05);
    let running = sub.spawn(IdleStrategy::DEFAULT_BACKOFF, move |e| {
        if let Event::Message { seq, .. } = e {
            tx.send(seq).unwrap();
        }
    });
    let mut second = subscriber(&ch, |_| {});
    let shared = publisher(&ch, |_| {}).spawn(IdleStrategy::DEFAULT_BACKOFF);
    let deadline = Instant::now() + Duration::from_secs(30);
    for k in 0..2000u64 {
        let msg = message(k, 40);
        loop {
            match shared.offer(&msg) {
                Ok(seq) => {
                    assert_eq!(seq, k);
                    break;
                }
                Err(e) if is_back_pressure(&e) => {
                    assert!(Instant::now() < deadline, "back-pressure did not clear");
                    std::thread::yield_now();
                }
                Err(e) => panic!("offer of {k} failed: {e}"),
            }
        }
    }
    let got: Vec<u64> = (0..2000)
        .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
        .collect();
    assert_eq!(got, (0..2000).collect::<Vec<_>>());
    let sub = running.stop().unwrap();
    assert!(sub.stats().recovered > 0);
    let seqs: Vec<u64> = second
        .events(Duration::from_millis(300))
        .filter_map(|e| match e {
            OwnedEvent::Message { seq, payload, .. } => {
                assert_eq!(payload, message(seq, 40));
                Some(seq)
            }
            _ => None,
        })
        .collect();
    assert_eq!(seqs, (0..2000).collect::<Vec<_>>());
    shared.close(Duration::from_millis(10)).unwrap();
}

#[test]
fn options_load_from_toml() {
    let text = r#"
        inject_loss = 0.01
        [channel]
        endpoint = "239.255.0.1:40456"
        interface = "127.0.0.1"
        stream = 7
        [socket]
        recv_buffer = 8388608
        [protocol]
        join = "from_oldest"
        max_sources = 8
    "#;
    let o: SubscriberOptions = toml::from_str(text).unwrap();
    assert_eq!(
        o.channel,
        "udp://239.255.0.1:40456?interface=127.0.0.1&stream=7"
            .parse()
            .unwrap()
    );
    assert_eq!(o.socket.recv_buffer, 8 << 20);
    assert!(o.socket.reuse_port, "unset fields keep their defaults");
    assert_eq!(o.protocol.join, JoinPolicy::FromOldest);
    assert_eq!(o.protocol.max_sources, 8);
    let p: PublisherOptions =
        toml::from_str("[channel]\nendpoint = \"239.255.0.1:1\"\n[protocol]\nmtu = 1400\n")
            .unwrap();
    assert_eq!(p.protocol.mtu, 1400);
    assert_eq!(
        p.protocol.ring_bytes,
        nakcast::PublisherConfig::default().ring_bytes
    );
}

#[test]
fn options_round_trip_through_toml() {
    let o = SubscriberOptions::new(channel(7));
    let text = toml::to_string(&o).unwrap();
    let back: SubscriberOptions = toml::from_str(&text).unwrap();
    assert_eq!(back, o, "{text}");
}

fn unicast_channel() -> Channel {
    Channel::new(format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .with_interface(Interface::Addr("127.0.0.1".parse().unwrap()))
        .with_stream(7)
}

#[test]
fn unicast_subscribers_register_themselves() {
    let ch = unicast_channel();
    let mut pubs = vec![publisher(&ch, |_| {})];
    let mut subs: Vec<_> = (0..3)
        .map(|_| (subscriber(&ch, |_| {}), Collector::default()))
        .collect();
    // Registration is a STATUS round trip: let it happen before publishing.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pubs[0].core().destinations().count() < 3 {
        assert!(Instant::now() < deadline, "subscribers did not register");
        pubs[0].poll().unwrap();
    }
    let n = 100_000;
    run(&mut pubs, &mut subs, n, n, Duration::from_secs(60));
    for (s, c) in &subs {
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.messages, n);
        assert!(c.losses.is_empty());
        assert_eq!(s.stats().duplicates, 0);
    }
    // A dropped subscriber leaves (a LEAVING STATUS): the publisher stops sending to it at
    // once rather than after `destination_timeout`.
    drop(subs.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while pubs[0].core().destinations().count() > 2 {
        assert!(
            Instant::now() < deadline,
            "the leaving subscriber is still a destination"
        );
        pubs[0].poll().unwrap();
    }
    assert_eq!(pubs[0].stats().destinations_left, 1);
}

#[test]
fn static_unicast_destinations_with_loss() {
    let ch = unicast_channel();
    let addrs: Vec<SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
        .collect();
    let mut subs: Vec<_> = addrs
        .iter()
        .map(|&a| {
            (
                subscriber(&ch, |o| {
                    o.bind = Some(a);
                    o.inject_loss = 0.05;
                }),
                Collector::default(),
            )
        })
        .collect();
    let mut pubs = vec![publisher(&ch, |o| o.destinations = addrs.clone())];
    let n = 50_000;
    run(&mut pubs, &mut subs, n, n, Duration::from_secs(60));
    for (s, c) in &subs {
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.messages, n);
        assert!(c.losses.is_empty());
        assert!(s.stats().recovered > 0);
    }
}

/// Item of issue 4: a datagram larger than `max_datagram` is counted as truncated and never
/// reaches the protocol; a subscriber with room for it gets the message.
#[test]
fn datagrams_larger_than_max_datagram_are_truncated_not_delivered() {
    let ch = channel(8);
    let mut subs = vec![
        (
            subscriber(&ch, |o| o.max_datagram = 2048),
            Collector::default(),
        ),
        (
            subscriber(&ch, |o| o.max_datagram = 9000),
            Collector::default(),
        ),
    ];
    assert_eq!(subs[0].0.max_datagram(), 2048);
    assert_eq!(subs[1].0.max_datagram(), 9000);
    // Seq 498 is small; seq 499 is one 5,000-byte message, in one datagram (mtu 8000).
    let mut p = publisher(&ch, |o| {
        o.protocol.mtu = 8000;
        o.protocol.initial_seq = 498;
    });
    assert_eq!(size_of(499), 5000);
    assert_eq!(p.offer(&message(498, size_of(498))).unwrap(), 498);
    assert_eq!(p.offer(&message(499, size_of(499))).unwrap(), 499);
    let deadline = Instant::now() + Duration::from_secs(10);
    while subs[1].1.messages < 2 || subs[0].0.truncated() == 0 {
        assert!(Instant::now() < deadline, "timed out");
        if poll_all(&mut subs) == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let (narrow, c) = &subs[0];
    assert_eq!(narrow.truncated(), 1);
    assert_eq!(c.messages, 1, "only the message that fits is delivered");
    assert_eq!(c.last_seq.values().copied().collect::<Vec<_>>(), [498]);
    assert_eq!(
        narrow.stats().datagrams,
        1,
        "the truncated datagram never reached the core"
    );
    let (wide, c) = &subs[1];
    assert_eq!(wide.truncated(), 0);
    assert_eq!(c.last_seq.values().copied().collect::<Vec<_>>(), [499]);
    for (_, c) in &subs {
        assert!(c.errors.is_empty(), "{:?}", c.errors);
    }
}

/// `net.core.NAME` (e.g. `rmem_max`) if this kernel exposes it.
fn core_sysctl(name: &str) -> Option<usize> {
    std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Item of issue 4: every socket buffer the kernel clamps is listed and counted, the
/// subscriber's control (NAK) socket's included. Linux grants `min(requested, *mem_max)`,
/// so the expected count follows from the sysctls.
#[test]
fn kernel_clamped_buffers_are_counted() {
    let (Some(rmem_max), Some(wmem_max)) = (core_sysctl("rmem_max"), core_sysctl("wmem_max"))
    else {
        println!("SKIPPED kernel_clamped_buffers_are_counted: no /proc/sys/net/core/*mem_max");
        return;
    };
    let clamped = |recv: &[usize], send: &[usize]| {
        (recv.iter().filter(|&&r| r > rmem_max).count()
            + send.iter().filter(|&&s| s > wmem_max).count()) as u64
    };
    let in_warnings = |w: &[SocketWarning]| {
        w.iter()
            .filter(|w| matches!(w, SocketWarning::BufferClamp { .. }))
            .count() as u64
    };
    let ch = channel(9);
    let huge = rmem_max.saturating_mul(2).max(1 << 20);
    let default = SocketConfig::default().send_buffer;
    // The subscriber's control socket asks for 64 KiB to receive and 256 KiB to send.
    let (control_recv, control_send) = (64 << 10, 256 << 10);

    let sub = subscriber(&ch, |o| o.socket.recv_buffer = huge);
    assert_eq!(
        sub.buffer_clamps(),
        clamped(&[huge, control_recv], &[default, control_send]),
        "{:?}",
        sub.warnings()
    );
    assert_eq!(sub.buffer_clamps(), in_warnings(sub.warnings()));
    assert!(sub.warnings().iter().any(|w| matches!(
        w,
        SocketWarning::BufferClamp {
            sysctl: "net.core.rmem_max",
            ..
        }
    )));

    // The publisher's data socket and its NAK socket.
    let p = publisher(&ch, |o| o.socket.recv_buffer = huge);
    assert_eq!(
        p.buffer_clamps(),
        clamped(&[huge, huge], &[default, default]),
        "{:?}",
        p.warnings()
    );
    assert_eq!(p.buffer_clamps(), in_warnings(p.warnings()));

    let modest = subscriber(&ch, |o| {
        o.socket.recv_buffer = 64 << 10;
        o.socket.send_buffer = 64 << 10;
    });
    assert_eq!(
        modest.buffer_clamps(),
        clamped(&[64 << 10, control_recv], &[64 << 10, control_send]),
        "{:?}",
        modest.warnings()
    );
}

/// Item of issue 4: IPv6 end to end over unicast `[::1]` (no multicast route needed).
#[test]
fn ipv6_unicast_end_to_end() {
    let ch = Channel::new(
        format!("[::1]:{}", support::free_port_v6())
            .parse()
            .unwrap(),
    )
    .with_interface(Interface::Addr(Ipv6Addr::LOCALHOST.into()))
    .with_stream(7);
    let mut pubs = vec![publisher(&ch, |_| {})];
    let mut subs: Vec<_> = (0..2)
        .map(|_| {
            (
                subscriber(&ch, |o| o.inject_loss = 0.02),
                Collector::default(),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while pubs[0].core().destinations().count() < 2 {
        assert!(Instant::now() < deadline, "subscribers did not register");
        pubs[0].poll().unwrap();
    }
    assert!(pubs[0].core().destinations().all(|d| d.is_ipv6()));
    let n = 20_000;
    run(&mut pubs, &mut subs, n, n, Duration::from_secs(60));
    for (s, c) in &subs {
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.messages, n);
        assert!(c.losses.is_empty());
        assert!(s.stats().recovered > 0, "{:?}", s.stats());
    }
}

/// Whether `e` is the kernel refusing IPv6 multicast on this interface (no route, or no
/// multicast on `lo`): the only reasons the multicast test skips.
fn refused_ipv6_multicast(e: &Error) -> bool {
    let Error::Socket(e) = e else { return false };
    matches!(
        e,
        TransportError::Connect { .. } | TransportError::Join { .. } | TransportError::Bind { .. }
    ) && matches!(
        e.io_error().and_then(|e| e.raw_os_error()),
        Some(libc::ENETUNREACH | libc::EADDRNOTAVAIL)
    )
}

/// Item of issue 4: IPv6 multicast on `lo`, interface-local (`ff12::`, scope 2 of a
/// transient group) and link-local (`ff02::`). Skips a group, saying why, only if the
/// kernel refuses multicast there (`lo` has no MULTICAST flag on many hosts).
#[test]
fn ipv6_multicast_on_lo_end_to_end() {
    let mut ran = 0;
    for first in [0xff12, 0xff02] {
        let port = support::free_port_v6();
        let group = Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0x6e61, port);
        let ch = Channel::new(SocketAddrV6::new(group, port, 0, 0).into())
            .with_interface(Interface::Name("lo".into()))
            .with_stream(7);
        let opened = Subscriber::new(SubscriberOptions::new(ch.clone()))
            .and_then(|s| Publisher::new(PublisherOptions::new(ch.clone())).map(|p| (s, p)));
        let (sub, p) = match opened {
            Ok(pair) => pair,
            Err(e) if refused_ipv6_multicast(&e) => {
                println!("SKIPPED IPv6 multicast {group} on lo: the kernel refuses it here: {e}");
                continue;
            }
            Err(e) => panic!("IPv6 multicast {group} on lo: {e}"),
        };
        let mut subs = vec![(sub, Collector::default())];
        let mut pubs = vec![p];
        let n = 20_000;
        run(&mut pubs, &mut subs, n, n, Duration::from_secs(60));
        let (s, c) = &subs[0];
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        assert_eq!(c.messages, n);
        assert!(c.losses.is_empty());
        assert_eq!(s.stats().duplicates, 0);
        ran += 1;
    }
    println!("IPv6 multicast on lo: {ran} of 2 groups ran");
}

/// Dropping every handle of a spawned publisher without `close` ends its background
/// thread and frees the publisher (the thread used to hold it alive and spin forever): its
/// source address can be bound again.
#[test]
fn dropping_a_shared_publisher_ends_its_thread() {
    let shared = Publisher::new(PublisherOptions::new(support::loopback_channel(120)))
        .unwrap()
        .spawn(nakcast::IdleStrategy::DEFAULT_BACKOFF);
    shared.offer(b"x").unwrap();
    let addr = shared.with(|p| p.local_addr());
    assert!(
        UdpSocket::bind(addr).is_err(),
        "in use while the publisher lives"
    );
    let other = shared.clone();
    drop(shared);
    drop(other);
    let deadline = Instant::now() + Duration::from_secs(5);
    while UdpSocket::bind(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the publisher outlived its handles"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A subscriber registers its data socket for blocking waits only at its first blocking
/// call (a busy-polling one never does: registered sockets make every datagram take the
/// epoll locks). A datagram queued before that call must still wake it at once: the
/// publisher below sends nothing after it, so a missed readiness would sleep the whole
/// timeout. After registering, blocking keeps waking on new data.
#[test]
fn the_first_blocking_call_sees_datagrams_queued_before_it() {
    let ch = channel(10);
    let mut waiter = subscriber(&ch, |_| {});
    let mut p = publisher(&ch, |_| {});
    p.offer(b"early").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let t = Instant::now();
    assert!(waiter.wait(Duration::from_secs(3)).unwrap());
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());

    // On a fresh channel: the first blocking call registers and times out empty, then a
    // publisher starts and its first message wakes the blocked call.
    let ch = channel(11);
    let mut receiver = subscriber(&ch, |_| {});
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut ignore = |_: Event<'_>| {};
    assert_eq!(
        receiver
            .recv_timeout(&mut ignore, Duration::from_millis(20))
            .unwrap(),
        0
    );
    let mut p = publisher(&ch, |_| {});
    p.offer(b"late").unwrap();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let mut on = |e: Event<'_>| {
            if let Event::Message { payload, .. } = e {
                got.push(payload.to_vec());
            }
        };
        receiver
            .recv_timeout(&mut on, Duration::from_secs(3))
            .unwrap();
        if !got.is_empty() {
            break;
        }
    }
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(got, [b"late".to_vec()]);
}

/// `offer` reads the clock after its `send` (the latency path), building the frame with
/// the time of the previous call. After an idle spell that time is old: the heartbeat
/// schedule must still count from the real send time, so the message is not followed at
/// once by a heartbeat, and the heartbeat does come `heartbeat_min` after it.
#[test]
fn a_message_after_an_idle_spell_is_not_chased_by_a_heartbeat() {
    let ch = channel(12);
    let mut p = publisher(&ch, |o| {
        o.protocol.heartbeat_min = Duration::from_millis(50);
        o.protocol.heartbeat_max = Duration::from_secs(10);
    });
    let before = p.stats().heartbeats;
    std::thread::sleep(Duration::from_millis(200));
    p.offer(b"after a pause").unwrap();
    p.poll().unwrap();
    assert_eq!(p.stats().data_frames, 1);
    assert_eq!(
        p.stats().heartbeats,
        before,
        "a heartbeat right behind the data: dated from before the pause"
    );
    std::thread::sleep(Duration::from_millis(80));
    p.poll().unwrap();
    assert_eq!(
        p.stats().heartbeats,
        before + 1,
        "heartbeat_min after the data"
    );
}

/// A busy-polling subscriber skips the timer work on polls that receive nothing until its
/// next deadline; NAK timers must still fire on those empty polls. The publisher here
/// sends nothing after the message that reveals the gap (no heartbeat for a second), so
/// only the subscriber's own timer can ask for the missed message.
#[test]
fn nak_timers_fire_on_polls_that_receive_nothing() {
    let ch = channel(13);
    let mut p = publisher(&ch, |o| {
        o.protocol.heartbeat_min = Duration::from_secs(1);
        o.protocol.heartbeat_max = Duration::from_secs(10);
    });
    p.offer(b"zero").unwrap(); // before the subscriber joins the group: it misses it
    let mut sub = subscriber(&ch, |_| {});
    p.offer(b"one").unwrap(); // a young session: the subscriber joins at "zero" and NAKs it
    let t = Instant::now();
    let mut got: Vec<Vec<u8>> = Vec::new();
    while got.len() < 2 {
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "no repair: got {got:?}, {:?}",
            sub.stats()
        );
        let mut on = |e: Event<'_>| {
            if let Event::Message { payload, .. } = e {
                got.push(payload.to_vec());
            }
        };
        sub.poll(&mut on, 64).unwrap();
        p.poll().unwrap();
    }
    assert_eq!(got, [b"zero".to_vec(), b"one".to_vec()]);
    assert!(sub.stats().naks_sent >= 1 && p.stats().heartbeats == 0);
}
