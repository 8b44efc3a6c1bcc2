//! Flow control over real UDP sockets on loopback multicast: a publisher faster than its
//! subscriber is held to the window the subscriber reports, so the subscriber's socket
//! buffer never overflows; and a subscriber that leaves or vanishes stops holding it back.
//!
//! Every test uses its own group and a free port, and is bounded in time.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nakcast::{
    Event, FlowControl, OfferError, Publisher, PublisherOptions, ReceiverConfig, Subscriber,
    SubscriberOptions,
};

mod support;

/// What a subscriber saw.
#[derive(Debug, Default)]
struct Seen {
    delivered: u64,
    next: u64,
    out_of_order: u64,
    lost: u64,
    gaps: u64,
    flow_reports: u64,
}

/// A subscriber with a small socket buffer (the kernel doubles 128 KiB to 256 KiB, and the
/// window it reports is half of that) that consumes slowly: four datagrams per poll,
/// then a sleep. Runs on its own thread until `n` messages were delivered or reported
/// lost, or `limit` passes.
fn slow_subscriber(
    sub: Subscriber,
    n: u64,
    limit: Duration,
    done: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Seen> {
    let mut sub = sub;
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut seen = Seen::default();
        while seen.delivered + seen.lost < n && start.elapsed() < limit {
            sub.poll(
                &mut |e| match e {
                    Event::Message { seq, .. } => {
                        if seq != seen.next {
                            seen.out_of_order += 1;
                        }
                        seen.next = seq + 1;
                        seen.delivered += 1;
                    }
                    Event::Loss { range, .. } => {
                        seen.lost += range.len();
                        seen.next = range.end;
                    }
                    _ => {}
                },
                4,
            )
            .unwrap();
            std::thread::sleep(Duration::from_micros(100));
        }
        seen.gaps = sub.stats().gaps;
        seen.flow_reports = sub.stats().flow_reports;
        done.store(true, Ordering::Release);
        seen
    })
}

fn small_buffer_subscriber(ch: &nakcast::Channel) -> Subscriber {
    let mut o = SubscriberOptions::new(ch.clone());
    o.socket.recv_buffer = 128 << 10;
    Subscriber::new(o).unwrap()
}

fn publisher(ch: &nakcast::Channel, mode: FlowControl, timeout: Duration) -> Publisher {
    let mut o = PublisherOptions::new(ch.clone());
    o.protocol.flow_control = mode;
    o.protocol.flow_timeout = timeout;
    Publisher::new(o).unwrap()
}

/// Offer `n` messages of 64 bytes as fast as the publisher takes them (polling through
/// back-pressure), flush, then keep polling until `done` or `limit`.
fn publish(p: &mut Publisher, n: u64, done: &AtomicBool, limit: Duration) -> Duration {
    let start = Instant::now();
    let msg = [7u8; 64];
    for _ in 0..n {
        loop {
            match p.offer_deferred(&msg) {
                Ok(_) => break,
                Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                    assert!(start.elapsed() < limit, "back-pressure did not clear");
                    p.poll().unwrap();
                }
                Err(e) => panic!("offer failed: {e}"),
            }
        }
    }
    p.flush();
    let sent = start.elapsed();
    while !done.load(Ordering::Acquire) && start.elapsed() < limit {
        p.poll().unwrap();
        std::thread::sleep(Duration::from_micros(20));
    }
    sent
}

/// Poll `p` until every offered message went out.
fn drain(p: &mut Publisher, limit: Duration) {
    let start = Instant::now();
    while !p.core().is_flushed() {
        assert!(start.elapsed() < limit, "not flushed: {:?}", p.stats());
        p.poll().unwrap();
    }
}

/// A `Min` publisher (with `timeout`) and a small-buffer subscriber on group octet `octet`
/// that joined it and reported.
fn joined_min_pair(octet: u8, timeout: Duration) -> (Subscriber, Publisher) {
    let ch = support::loopback_channel(octet);
    let mut sub = small_buffer_subscriber(&ch);
    let mut p = publisher(&ch, FlowControl::Min, timeout);
    joined(&mut p, &mut sub);
    (sub, p)
}

/// Wait until `sub` has joined `p`'s session and reported (so flow control counts it).
fn joined(p: &mut Publisher, sub: &mut Subscriber) {
    let deadline = Instant::now() + Duration::from_secs(5);
    p.offer(b"hello").unwrap();
    while p.stats().flow_added == 0 {
        assert!(Instant::now() < deadline, "no flow report arrived");
        sub.poll(&mut |_| {}, 64).unwrap();
        p.poll().unwrap();
    }
}

/// `n` messages from a publisher in `mode` to a slow subscriber with a small socket buffer
/// (on group octet `octet`): what the subscriber saw and the publisher's counters.
fn slow_run(octet: u8, mode: FlowControl, n: u64) -> (Seen, nakcast::proto::PublisherStats) {
    let ch = support::loopback_channel(octet);
    let sub = small_buffer_subscriber(&ch);
    let mut p = publisher(&ch, mode, Duration::from_secs(1));
    let done = Arc::new(AtomicBool::new(false));
    let rx = slow_subscriber(sub, n, Duration::from_secs(60), done.clone());
    publish(&mut p, n, &done, Duration::from_secs(60));
    (rx.join().unwrap(), *p.stats())
}

#[test]
fn a_slow_subscriber_is_not_overrun_with_flow_control() {
    let n = 200_000;
    let (seen, s) = slow_run(140, FlowControl::Max, n);
    assert_eq!((seen.delivered, seen.lost), (n, 0), "{seen:?} {s:?}");
    assert_eq!(seen.out_of_order, 0, "{seen:?}");
    // Not one datagram overflowed the socket: no gap was ever opened, nothing repaired.
    assert_eq!(seen.gaps, 0, "{seen:?} {s:?}");
    assert_eq!(s.retransmits, 0, "{s:?}");
    assert!(s.flow_blocked > 0, "the publisher was held back: {s:?}");
    assert_eq!(s.flow_added, 1, "{s:?}");
    assert!(seen.flow_reports > 10, "{seen:?}");
}

#[test]
fn without_flow_control_the_same_subscriber_is_overrun() {
    // The scenario above really overflows the socket when nothing holds the publisher
    // back: gaps open, and they are repaired or reported lost, never silently dropped.
    let n = 50_000;
    let (seen, s) = slow_run(141, FlowControl::None, n);
    assert_eq!(seen.delivered + seen.lost, n, "{seen:?} {s:?}");
    assert!(seen.gaps > 0, "{seen:?} {s:?}");
    assert_eq!(s.flow_blocked, 0, "{s:?}");
}

#[test]
fn a_vanished_subscriber_holds_the_publisher_only_until_flow_timeout() {
    let (sub, mut p) = joined_min_pair(142, Duration::from_millis(300));
    // A crash: the process is gone without a word (no LEAVING report).
    std::mem::forget(sub);
    let never = AtomicBool::new(true);
    let start = Instant::now();
    // Far more than the window (128 KiB) and the unsent allowance (8 MiB): the publisher
    // must wait for the timeout, then go on.
    publish(&mut p, 200_000, &never, Duration::from_secs(20));
    let took = start.elapsed();
    let s = *p.stats();
    assert_eq!(s.flow_expired, 1, "{s:?}");
    assert_eq!(p.core().flow_receivers(), 0);
    assert!(s.flow_blocked > 0, "{s:?}");
    assert!(took >= Duration::from_millis(250), "held {took:?}");
    drain(&mut p, Duration::from_secs(5));
}

#[test]
fn a_subscriber_that_leaves_releases_the_publisher_at_once() {
    // A timeout far longer than the test: only the LEAVING report can release it.
    let (sub, mut p) = joined_min_pair(143, Duration::from_secs(30));
    drop(sub); // leaves: a last flow report with the LEAVING flag
    let never = AtomicBool::new(true);
    let start = Instant::now();
    publish(&mut p, 200_000, &never, Duration::from_secs(10));
    let s = *p.stats();
    assert_eq!((s.flow_left, s.flow_expired), (1, 0), "{s:?}");
    drain(&mut p, Duration::from_secs(5));
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn subscribers_report_no_flow_with_a_zero_window() {
    let ch = support::loopback_channel(144);
    let mut o = SubscriberOptions::new(ch.clone());
    o.protocol = ReceiverConfig {
        flow_window: 0,
        ..ReceiverConfig::default()
    };
    let mut sub = Subscriber::new(o).unwrap();
    let mut p = publisher(&ch, FlowControl::Max, Duration::from_secs(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    p.offer(b"hello").unwrap();
    while sub.stats().messages == 0 {
        assert!(Instant::now() < deadline);
        sub.poll(&mut |_| {}, 64).unwrap();
        p.poll().unwrap();
    }
    std::thread::sleep(Duration::from_millis(5));
    p.poll().unwrap();
    assert_eq!(sub.stats().flow_reports, 0);
    assert_eq!(p.stats().flow_added, 0);
}

#[test]
fn the_reported_window_is_capped_at_half_the_socket_buffer() {
    let ch = support::loopback_channel(145);
    // 128 KiB requested: Linux reports 256 KiB, so the window is at most 128 KiB.
    let sub = small_buffer_subscriber(&ch);
    let reported = reported_recv_buffer(128 << 10);
    assert_eq!(sub.core().config().flow_window as usize, reported / 2);
    assert!(reported / 2 < ReceiverConfig::default().flow_window as usize);
    // A window below the cap is kept.
    let mut o = SubscriberOptions::new(ch.clone());
    o.protocol.flow_window = 4096;
    let small = Subscriber::new(o).unwrap();
    assert_eq!(small.core().config().flow_window, 4096);
}

/// What the kernel reports for a UDP socket's receive buffer once `request` was set (Linux:
/// twice the request, within `rmem_max`), as the subscriber reads it for its data socket.
fn reported_recv_buffer(request: usize) -> usize {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    s.set_recv_buffer_size(request).unwrap();
    s.recv_buffer_size().unwrap()
}
