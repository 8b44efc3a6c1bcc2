//! The cost of a busy-polling subscriber's empty poll (real loopback sockets: one
//! `recvmsg` that finds nothing, plus the protocol's bookkeeping), following 1, 16 or 64
//! publishers. The loop period of a spinning subscriber: a datagram that arrives during
//! a poll waits for the next one, half a period on average.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nakcast::{Channel, Event, Publisher, PublisherOptions, Subscriber, SubscriberOptions};

/// A subscriber that has heard one message from each of `n` publishers (which then stay
/// silent: no heartbeat for 30 s), with the publishers kept alive.
fn following(n: usize) -> (Subscriber, Vec<Publisher>) {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let ch: Channel = format!("udp://239.255.97.3:{port}?interface=127.0.0.1")
        .parse()
        .expect("channel");
    let mut sub = Subscriber::new(SubscriberOptions::new(ch.clone())).expect("subscriber");
    let mut pubs: Vec<Publisher> = (0..n)
        .map(|_| {
            let mut o = PublisherOptions::new(ch.clone());
            o.protocol.heartbeat_min = Duration::from_secs(30);
            o.protocol.heartbeat_max = Duration::from_secs(30);
            Publisher::new(o).expect("publisher")
        })
        .collect();
    for p in &mut pubs {
        p.offer(b"hello").expect("offer");
    }
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while got < n {
        assert!(
            Instant::now() < deadline,
            "loopback multicast is not working"
        );
        let mut on = |e: Event<'_>| {
            if let Event::Message { .. } = e {
                got += 1;
            }
        };
        sub.poll(&mut on, 64).expect("poll");
    }
    (sub, pubs)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("subscriber");
    for n in [1usize, 16, 64] {
        let (mut sub, _pubs) = following(n);
        g.bench_with_input(BenchmarkId::new("empty poll, sources", n), &n, |b, _| {
            b.iter(|| sub.poll(&mut |_| {}, 64).expect("poll"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
