//! Real-socket tests of the transport layer over loopback multicast.
//!
//! All traffic stays on 127.0.0.0/8, ::1 and the `lo` interface: sockets use
//! `IP_MULTICAST_IF 127.0.0.1` / `IPV6_MULTICAST_IF lo`, TTL 1, groups in
//! 239.255.0.0/16 and ff12::/16. Ports are picked free at run time and every
//! loop is bounded by a deadline.
#![cfg(unix)]

mod support;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use nakcast::transport::{
    Interface, OpenedSocket, RecvBatch, SendBatch, SocketConfig, SocketWarning, TransportError,
    Truncated, open_multicast_receiver, open_sender, open_unicast_receiver,
};

const DEADLINE: Duration = Duration::from_secs(20);

/// Cheap per-call pseudo-random 16 bits (pid, time, counter) to spread groups.
fn rand16() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static CTR: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let x = t ^ std::process::id().rotate_left(16) ^ CTR.fetch_add(0x9e37, Ordering::Relaxed);
    (x ^ (x >> 16)) as u16
}

/// A group in 239.255.0.0/16 unlikely to collide with a concurrent test.
fn group_v4() -> SocketAddr {
    let r: u16 = rand16();
    let ip = Ipv4Addr::new(239, 255, (r >> 8) as u8, (r as u8).max(1));
    SocketAddr::V4(SocketAddrV4::new(ip, support::free_port()))
}

fn lo_cfg() -> SocketConfig {
    SocketConfig {
        interface: Interface::Addr(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ..SocketConfig::default()
    }
}

/// Deterministic payload for sequence number `seq`: 4-byte seq then pattern.
fn payload(seq: u32, buf: &mut [u8]) -> usize {
    let len = 8 + (seq as usize * 37) % 1400;
    buf[..4].copy_from_slice(&seq.to_le_bytes());
    for (j, b) in buf[4..len].iter_mut().enumerate() {
        *b = (seq as usize).wrapping_mul(31).wrapping_add(j) as u8;
    }
    len
}

fn check_payload(p: &[u8]) -> u32 {
    let seq = u32::from_le_bytes(p[..4].try_into().unwrap());
    let mut expect = [0u8; 2048];
    let n = payload(seq, &mut expect);
    assert_eq!(p, &expect[..n], "payload of seq {seq} corrupted");
    seq
}

struct Tally {
    seen: Vec<bool>,
    got: usize,
    dups: usize,
}

impl Tally {
    fn new(n: usize) -> Self {
        Tally {
            seen: vec![false; n],
            got: 0,
            dups: 0,
        }
    }
}

/// Drains everything queued on `rx`, checking source and payload.
fn drain(rx: &OpenedSocket, batch: &mut RecvBatch, source: SocketAddr, t: &mut Tally) {
    loop {
        match batch.recv(&rx.socket) {
            Ok(_) => {
                for d in batch.iter() {
                    let d = d.expect("no datagram should be truncated");
                    assert_eq!(d.source, source, "source address");
                    let seq = check_payload(d.payload) as usize;
                    if std::mem::replace(&mut t.seen[seq], true) {
                        t.dups += 1;
                    } else {
                        t.got += 1;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("recv: {e}"),
        }
    }
}

/// Sends `total` datagrams through `tx` in SendBatch batches, draining the
/// receivers between batches (retrying on WouldBlock), then waits for the
/// stragglers. Returns the tallies.
fn fan_out(tx: &OpenedSocket, rxs: &[&OpenedSocket], total: u32) -> Vec<Tally> {
    let mut sb = SendBatch::new(32, 2048);
    let mut rb = RecvBatch::new(32, 2048);
    let mut tallies: Vec<Tally> = rxs.iter().map(|_| Tally::new(total as usize)).collect();
    let start = Instant::now();
    let mut next = 0u32;
    while next < total || !sb.is_empty() {
        assert!(
            start.elapsed() < DEADLINE,
            "send loop timed out at seq {next}"
        );
        while next < total && !sb.is_full() {
            sb.push_with(None, |buf| payload(next, buf)).unwrap();
            next += 1;
        }
        sb.send(&tx.socket).expect("send");
        for (rx, t) in rxs.iter().zip(tallies.iter_mut()) {
            drain(rx, &mut rb, tx.local_addr, t);
        }
    }
    while tallies.iter().any(|t| t.got < total as usize) && start.elapsed() < DEADLINE {
        std::thread::sleep(Duration::from_millis(1));
        for (rx, t) in rxs.iter().zip(tallies.iter_mut()) {
            drain(rx, &mut rb, tx.local_addr, t);
        }
    }
    // A short grace period to catch duplicates.
    std::thread::sleep(Duration::from_millis(20));
    for (rx, t) in rxs.iter().zip(tallies.iter_mut()) {
        drain(rx, &mut rb, tx.local_addr, t);
    }
    tallies
}

#[test]
fn v4_sender_to_two_reuseport_receivers() {
    let group = group_v4();
    let cfg = lo_cfg();
    let rx1 = open_multicast_receiver(group, &cfg).unwrap();
    let rx2 = open_multicast_receiver(group, &cfg).unwrap();
    let tx = open_sender(group, &cfg).unwrap();
    assert_eq!(tx.local_addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST));
    assert_ne!(tx.local_addr.port(), 0);
    assert_eq!(tx.local_addr, tx.socket.local_addr().unwrap());
    for s in [&rx1, &rx2, &tx] {
        assert!(
            s.warnings.is_empty(),
            "unexpected warnings: {:?}",
            s.warnings
        );
    }

    const N: u32 = 10_000;
    let tallies = fan_out(&tx, &[&rx1, &rx2], N);
    for (k, t) in tallies.iter().enumerate() {
        let missing: Vec<usize> = (0..N as usize).filter(|&i| !t.seen[i]).take(10).collect();
        assert_eq!(t.got, N as usize, "receiver {k}: first missing {missing:?}");
        assert_eq!(t.dups, 0, "receiver {k} saw duplicates");
    }
}

#[test]
fn unicast_receiver_and_explicit_destination() {
    let cfg = lo_cfg();
    let urx = open_unicast_receiver("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
    // A sender connected to a multicast group can still address a unicast
    // peer explicitly per datagram.
    let group = group_v4();
    let tx = open_sender(group, &cfg).unwrap();
    let mut sb = SendBatch::new(4, 64);
    sb.push(b"to-unicast", Some(urx.local_addr)).unwrap();
    assert_eq!(sb.send(&tx.socket).unwrap(), 1);
    // And a unicast-mode sender connected to the unicast receiver.
    let utx = open_sender(urx.local_addr, &cfg).unwrap();
    sb.push(b"connected-unicast", None).unwrap();
    assert_eq!(sb.send(&utx.socket).unwrap(), 1);

    // The sockets plug into mio: wait for readiness, then drain in batches.
    let local = urx.local_addr;
    let mut sock = mio::net::UdpSocket::from_std(urx.socket);
    let mut poll = mio::Poll::new().unwrap();
    let mut events = mio::Events::with_capacity(4);
    poll.registry()
        .register(&mut sock, mio::Token(0), mio::Interest::READABLE)
        .unwrap();
    let mut rb = RecvBatch::new(4, 64);
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 2 && start.elapsed() < DEADLINE {
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .unwrap();
        match rb.recv(&sock) {
            Ok(_) => {
                for d in rb.iter() {
                    let d = d.unwrap();
                    got.push((d.source, d.payload.to_vec()));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_ne!(local.port(), 0);
    assert_eq!(
        got,
        vec![
            (tx.local_addr, b"to-unicast".to_vec()),
            (utx.local_addr, b"connected-unicast".to_vec())
        ]
    );
}

#[test]
fn buffer_clamp_is_reported_consistently_with_sysctl() {
    let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .expect("read rmem_max")
        .trim()
        .parse()
        .unwrap();
    let wmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/wmem_max")
        .expect("read wmem_max")
        .trim()
        .parse()
        .unwrap();
    const BIG: usize = 64 << 20;
    let cfg = SocketConfig {
        recv_buffer: BIG,
        send_buffer: BIG,
        ..lo_cfg()
    };
    let rx = open_multicast_receiver(group_v4(), &cfg).unwrap();
    println!(
        "rmem_max={rmem_max} wmem_max={wmem_max} warnings={:?}",
        rx.warnings
    );
    for w in &rx.warnings {
        println!("warning: {w}");
    }
    let expect = |max: usize, sysctl: &'static str| {
        (max < BIG).then_some(SocketWarning::BufferClamp {
            requested: BIG,
            granted: max,
            sysctl,
        })
    };
    let expected: Vec<SocketWarning> = [
        expect(rmem_max, "net.core.rmem_max"),
        expect(wmem_max, "net.core.wmem_max"),
    ]
    .into_iter()
    .flatten()
    .collect();
    assert_eq!(rx.warnings, expected);
    assert_eq!(rx.buffers.recv, rmem_max.min(BIG));
    assert_eq!(rx.buffers.send, wmem_max.min(BIG));

    // A request under the cap is granted exactly and reported clean.
    let small = (rmem_max.min(wmem_max) / 2).max(64 << 10);
    let cfg = SocketConfig {
        recv_buffer: small,
        send_buffer: small,
        ..lo_cfg()
    };
    let tx = open_sender(group_v4(), &cfg).unwrap();
    assert!(tx.warnings.is_empty(), "{:?}", tx.warnings);
    assert_eq!(tx.buffers.recv, small);
    assert_eq!(tx.buffers.send, small);
}

fn recv_all(
    rx: &OpenedSocket,
    rb: &mut RecvBatch,
    n: usize,
    each: bool,
) -> Vec<(SocketAddr, Result<Vec<u8>, Truncated>)> {
    let mut out = Vec::new();
    let start = Instant::now();
    while out.len() < n && start.elapsed() < DEADLINE {
        let r = if each {
            rb.recv_each(&rx.socket)
        } else {
            rb.recv(&rx.socket)
        };
        match r {
            Ok(_) => {
                for d in rb.iter() {
                    out.push(match d {
                        Ok(d) => (d.source, Ok(d.payload.to_vec())),
                        Err(t) => (t.source, Err(t)),
                    });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => panic!("{e}"),
        }
    }
    out
}

#[test]
fn truncated_datagrams_are_reported_not_passed_on() {
    let group = group_v4();
    let cfg = lo_cfg();
    let rx = open_multicast_receiver(group, &cfg).unwrap();
    let tx = open_sender(group, &cfg).unwrap();
    let mut rb = RecvBatch::new(8, 100);
    for each in [false, true] {
        let mut sb = SendBatch::new(8, 2048);
        for len in [50usize, 300, 100, 101] {
            sb.push(&vec![len as u8; len], None).unwrap();
        }
        assert_eq!(sb.send(&tx.socket).unwrap(), 4);
        let before = rb.truncated_total();
        let got = recv_all(&rx, &mut rb, 4, each);
        let src = tx.local_addr;
        let trunc = |len| {
            Err(Truncated {
                source: src,
                len,
                capacity: 100,
            })
        };
        assert_eq!(
            got,
            vec![
                (src, Ok(vec![50u8; 50])),
                (src, trunc(300)),
                (src, Ok(vec![100u8; 100])),
                (src, trunc(101)),
            ],
            "recv_each={each}"
        );
        assert_eq!(rb.truncated_total() - before, 2);
        println!("{}", trunc(300).unwrap_err());
    }
}

#[test]
fn setup_errors_are_typed_and_helpful() {
    // An interface address that is not local (TEST-NET-2; nothing is sent:
    // the address is rejected while resolving the interface).
    let bogus = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    let cfg = SocketConfig {
        interface: Interface::Addr(bogus),
        ..SocketConfig::default()
    };
    let e = open_multicast_receiver(group_v4(), &cfg).unwrap_err();
    println!("{e}");
    assert!(matches!(e, TransportError::InterfaceAddressNotFound { addr } if addr == bogus));
    let msg = e.to_string();
    assert!(
        msg.contains("198.51.100.1") && msg.contains("ip -br addr"),
        "{msg}"
    );
    let e = open_sender(group_v4(), &cfg).unwrap_err();
    assert!(
        matches!(e, TransportError::InterfaceAddressNotFound { .. }),
        "{e}"
    );

    // Unknown interface name.
    let cfg = SocketConfig {
        interface: Interface::Name("nakcast-nope0".into()),
        ..SocketConfig::default()
    };
    let e = open_multicast_receiver(group_v4(), &cfg).unwrap_err();
    println!("{e}");
    assert!(matches!(e, TransportError::InterfaceNotFound { .. }), "{e}");
    assert!(e.to_string().contains("nakcast-nope0"));

    // Not a multicast group.
    let e = open_multicast_receiver("127.0.0.1:9".parse().unwrap(), &lo_cfg()).unwrap_err();
    println!("{e}");
    assert!(matches!(e, TransportError::NotMulticast { .. }), "{e}");

    // IPv6 group with an IPv4 interface address.
    let g6 = SocketAddr::V6(SocketAddrV6::new("ff12::1234".parse().unwrap(), 9, 0, 0));
    let e = open_multicast_receiver(g6, &lo_cfg()).unwrap_err();
    println!("{e}");
    assert!(matches!(e, TransportError::InterfaceFamily { .. }), "{e}");

    // Binding a unicast socket to a non-local address (no traffic is sent).
    let addr = SocketAddr::new(bogus, support::free_port());
    let e = open_unicast_receiver(addr, &lo_cfg()).unwrap_err();
    println!("{e}");
    match &e {
        TransportError::Bind { addr: a, source } => {
            assert_eq!(*a, addr);
            assert_eq!(source.raw_os_error(), Some(libc::EADDRNOTAVAIL));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(e.to_string().contains("not assigned to a local interface"));

    // The join failure message carries the troubleshooting hint.
    let e = TransportError::Join {
        group: "239.1.2.3".parse().unwrap(),
        interface: "127.0.0.1".into(),
        source: io::Error::from_raw_os_error(libc::ENODEV),
    };
    let msg = e.to_string();
    assert!(
        msg.starts_with("join 239.1.2.3 on 127.0.0.1 failed"),
        "{msg}"
    );
    assert!(msg.contains("ip route add 224.0.0.0/4 dev IFACE"), "{msg}");
}

#[test]
fn v6_loopback_multicast() {
    let cfg = SocketConfig {
        interface: Interface::Name("lo".into()),
        ..SocketConfig::default()
    };
    let r: u16 = rand16();
    let ip = Ipv6Addr::new(0xff12, 0, 0, 0, 0, 0, 0x6e61, r.max(1));
    let group = SocketAddr::V6(SocketAddrV6::new(ip, support::free_port_v6(), 0, 0));
    // The kernel may refuse IPv6 multicast on `lo` (it has no MULTICAST flag
    // and no ff00::/8 route there). Skip only on that specific refusal.
    let skip = |what: &str, e: &TransportError| -> bool {
        if matches!(e, TransportError::Connect { source, .. }
            if source.raw_os_error() == Some(libc::ENETUNREACH))
        {
            println!("SKIPPED v6_loopback_multicast: kernel refuses {what} on lo: {e}");
            true
        } else {
            false
        }
    };
    let rx1 = open_multicast_receiver(group, &cfg).unwrap();
    let rx2 = open_multicast_receiver(group, &cfg).unwrap();
    let tx = match open_sender(group, &cfg) {
        Ok(tx) => tx,
        Err(e) if skip("sender connect", &e) => return,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(tx.local_addr.ip(), IpAddr::V6(Ipv6Addr::LOCALHOST));
    const N: u32 = 2_000;
    let tallies = fan_out(&tx, &[&rx1, &rx2], N);
    for (k, t) in tallies.iter().enumerate() {
        assert_eq!(t.got, N as usize, "receiver {k}");
        assert_eq!(t.dups, 0, "receiver {k} saw duplicates");
    }
}

/// Micro-measurement: receive cost of `recvmmsg` batches vs one `recvmsg` per
/// datagram (and send cost of `sendmmsg` vs `sendto`) for 64-byte datagrams
/// over loopback multicast. Each round queues `PER_ROUND` datagrams into the
/// receiver's socket buffer, then times only the drain; modes alternate per
/// round to cancel drift. Bounded: fixed rounds plus the global deadline.
///
/// `cargo test --test transport_socket -- --ignored --nocapture measure_`
#[test]
#[ignore = "micro-measurement; run explicitly with --ignored --nocapture"]
fn measure_recvmmsg_vs_recv_64b() {
    const PER_ROUND: usize = 4_000;
    const ROUNDS: usize = 60;
    let group = group_v4();
    let cfg = lo_cfg();
    let rx = open_multicast_receiver(group, &cfg).unwrap();
    let tx = open_sender(group, &cfg).unwrap();
    let mut sb = SendBatch::new(32, 64);
    let mut rb = RecvBatch::new(32, 2048);
    let start = Instant::now();
    // [recv batch, recv each], [send batch, send each]: (datagrams, seconds)
    let mut recv_stats = [(0usize, 0f64); 2];
    let mut send_stats = [(0usize, 0f64); 2];
    let mut lost = 0usize;
    for round in 0..ROUNDS * 2 {
        assert!(start.elapsed() < DEADLINE * 3, "measurement timed out");
        let mode = round % 2;
        // Fill the receive queue, alternating the send mode independently.
        let smode = (round / 2) % 2;
        let t0 = Instant::now();
        let mut queued = 0;
        while queued < PER_ROUND {
            while !sb.is_full() && queued + sb.len() < PER_ROUND {
                sb.push(&[0xab; 64], None).unwrap();
            }
            let n = if smode == 0 {
                sb.send(&tx.socket).unwrap()
            } else {
                sb.send_each(&tx.socket).unwrap()
            };
            queued += n;
            if n == 0 {
                std::thread::yield_now();
            }
        }
        let st = t0.elapsed().as_secs_f64();
        send_stats[smode].0 += PER_ROUND;
        send_stats[smode].1 += st;
        std::thread::sleep(Duration::from_millis(2));
        // Timed drain.
        let t0 = Instant::now();
        let mut got = 0;
        loop {
            let r = if mode == 0 {
                rb.recv(&rx.socket)
            } else {
                rb.recv_each(&rx.socket)
            };
            match r {
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let rt = t0.elapsed().as_secs_f64();
        recv_stats[mode].0 += got;
        recv_stats[mode].1 += rt;
        lost += PER_ROUND - got.min(PER_ROUND);
    }
    let line = |what: &str, (n, s): (usize, f64)| {
        println!(
            "{what:<28} {n:>8} dgrams {:>8.1} ns/dgram {:>6.2} Mdgram/s",
            s * 1e9 / n as f64,
            n as f64 / s / 1e6
        )
    };
    println!(
        "64-byte datagrams, loopback multicast, batch 32, {ROUNDS} rounds x {PER_ROUND} per mode"
    );
    line("recv: recvmmsg (batch 32)", recv_stats[0]);
    line("recv: recvmsg per datagram", recv_stats[1]);
    line("send: sendmmsg (batch 32)", send_stats[0]);
    line("send: sendto per datagram", send_stats[1]);
    println!("not in queue at drain time (dropped or late): {lost}");
    let speedup =
        (recv_stats[1].1 / recv_stats[1].0 as f64) / (recv_stats[0].1 / recv_stats[0].0 as f64);
    println!("recvmmsg speed-up: {speedup:.2}x");
}

/// Partial sends and WouldBlock keep the unsent datagrams queued, in order.
/// Uses an AF_UNIX datagram socketpair: unlike UDP over loopback, its sender
/// blocks when the peer queue (net.unix.max_dgram_qlen) is full, which makes
/// back-pressure deterministic without any network traffic.
#[test]
fn send_batch_keeps_unsent_datagrams_on_would_block() {
    for per_datagram in [false, true] {
        would_block_round(per_datagram);
    }
}

fn would_block_round(per_datagram: bool) {
    use std::os::unix::net::UnixDatagram;
    let (a, b) = UnixDatagram::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    const TOTAL: u32 = 2_000;
    let mut sb = SendBatch::new(32, 16);
    let mut rb = RecvBatch::new(32, 16);
    let (mut next, mut expect) = (0u32, 0u32);
    let mut saw_partial = false;
    let start = Instant::now();
    while expect < TOTAL {
        assert!(start.elapsed() < DEADLINE, "timed out at {expect}");
        while next < TOTAL && !sb.is_full() {
            sb.push(&next.to_le_bytes(), None).unwrap();
            next += 1;
        }
        let before = sb.len();
        let sent = if per_datagram {
            sb.send_each(&a).unwrap()
        } else {
            sb.send(&a).unwrap()
        };
        assert_eq!(sb.len(), before - sent);
        saw_partial |= sent < before;
        // Only drain once the sender is blocked (or done), so the peer queue
        // really fills up.
        if sb.is_empty() && next < TOTAL {
            continue;
        }
        loop {
            match rb.recv(&b) {
                Ok(_) => {
                    for d in rb.iter() {
                        let d = d.unwrap();
                        assert_eq!(d.payload, expect.to_le_bytes(), "order");
                        expect += 1;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
    }
    assert!(sb.is_empty());
    assert!(
        saw_partial,
        "expected at least one partial send / WouldBlock"
    );
}

/// `recv_at_most` never hands over more than asked, whether it is in its single-datagram
/// or its batch mode, and leaves the rest queued in the socket.
#[test]
fn recv_at_most_leaves_the_rest_in_the_socket() {
    let cfg = lo_cfg();
    let rx = open_unicast_receiver("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
    let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..20u8 {
        tx.send_to(&[i; 8], rx.local_addr).unwrap();
    }
    let mut rb = RecvBatch::new(16, 64);
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < 15 && start.elapsed() < DEADLINE {
        match rb.recv_at_most(&rx.socket, 5.min(15 - got.len())) {
            Ok(n) => {
                assert!(n <= 5, "{n}");
                got.extend(rb.iter().map(|d| d.unwrap().payload[0]));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(got, (0..15).collect::<Vec<u8>>());
    // The last five are still there, in order.
    let mut rest = Vec::new();
    while let Ok(n) = rb.recv(&rx.socket) {
        assert!(n >= 1);
        rest.extend(rb.iter().map(|d| d.unwrap().payload[0]));
    }
    assert_eq!(rest, (15..20).collect::<Vec<u8>>());
}

/// `send_slices` sends borrowed slices as datagrams, in order, without a batch.
#[test]
fn send_slices_gathers_datagrams_from_borrowed_memory() {
    let cfg = lo_cfg();
    let rx = open_unicast_receiver("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
    let tx = open_sender(rx.local_addr, &cfg).unwrap();
    let store: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
    let frames: Vec<&[u8]> = store.iter().map(|v| v.as_slice()).collect();
    assert_eq!(
        nakcast::transport::batch::send_slices(&tx.socket, &[]).unwrap(),
        0
    );
    // At most MAX_GATHER per call.
    let n = nakcast::transport::batch::send_slices(&tx.socket, &frames).unwrap();
    assert_eq!(n, nakcast::transport::batch::MAX_GATHER);
    let n2 = nakcast::transport::batch::send_slices(&tx.socket, &frames[n..]).unwrap();
    assert_eq!(n + n2, 40);
    let mut rb = RecvBatch::new(64, 128);
    let mut got: Vec<Vec<u8>> = Vec::new();
    let start = Instant::now();
    while got.len() < 40 && start.elapsed() < DEADLINE {
        if rb.recv(&rx.socket).is_ok() {
            got.extend(rb.iter().map(|d| d.unwrap().payload.to_vec()));
        }
    }
    assert_eq!(got, store);
}

/// Frames of mixed lengths: runs of equal lengths, a shorter one ending a run, lone ones.
fn mixed_frames() -> Vec<Vec<u8>> {
    let lens = [
        100, 100, 100, 100, 100, 60, 200, 200, 200, 150, 150, 1472, 1472, 1472, 1472, 9, 30, 30,
        30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 30, 31,
    ];
    lens.iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
        .collect()
}

/// Receive `n` datagrams from `rx` (bounded by DEADLINE).
fn recv_n(rx: &OpenedSocket, n: usize) -> Vec<Vec<u8>> {
    recv_n_with(rx, n, &mut RecvBatch::new(64, 2048)).0
}

/// Receive `n` datagrams from `rx` into `rb`; also returns how many buffers they took.
fn recv_n_with(rx: &OpenedSocket, n: usize, rb: &mut RecvBatch) -> (Vec<Vec<u8>>, usize) {
    let mut got: Vec<Vec<u8>> = Vec::new();
    let mut buffers = 0;
    let start = Instant::now();
    while got.len() < n && start.elapsed() < DEADLINE {
        if let Ok(k) = rb.recv(&rx.socket) {
            assert_eq!(k, rb.len());
            assert_eq!(rb.iter().len(), k);
            buffers += rb.buffers_used();
            got.extend(rb.iter().map(|d| d.unwrap().payload.to_vec()));
        }
    }
    (got, buffers)
}

/// A receiver joined to a fresh loopback group and a sender to it.
fn group_pair() -> (OpenedSocket, OpenedSocket) {
    let cfg = lo_cfg();
    let group = group_v4();
    let rx = open_multicast_receiver(group, &cfg).unwrap();
    (rx, open_sender(group, &cfg).unwrap())
}

/// Send all of `frames` with `send_slices_segmented`, segmentation requested; returns
/// whether it stayed on.
fn send_all_segmented(tx: &OpenedSocket, frames: &[&[u8]]) -> bool {
    let mut segment = true;
    let mut sent = 0;
    while sent < frames.len() {
        sent += nakcast::transport::batch::send_slices_segmented(
            &tx.socket,
            &frames[sent..],
            &mut segment,
        )
        .unwrap();
    }
    segment
}

/// Set the `SOL_SOCKET` boolean option `name` on `s`.
fn set_socket_flag(s: &OpenedSocket, name: libc::c_int) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on a live socket with a pointer to an int and its size.
    let r = unsafe {
        libc::setsockopt(
            s.socket.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "setsockopt {name}: {}", io::Error::last_os_error());
}

/// Segmentation offload (UDP GSO): runs of equal-sized frames leave as one send each and
/// arrive as the same separate datagrams, in order, over loopback multicast.
#[test]
fn segmented_sends_arrive_as_separate_datagrams() {
    let (rx, tx) = group_pair();
    assert!(nakcast::transport::batch::segmentation_supported(
        &tx.socket
    ));
    let store = mixed_frames();
    let frames: Vec<&[u8]> = store.iter().map(|v| v.as_slice()).collect();
    let segment = send_all_segmented(&tx, &frames);
    assert!(segment, "loopback supports UDP GSO: segmentation stays on");
    assert_eq!(recv_n(&rx, store.len()), store);

    // The same through a SendBatch, with two datagrams to an explicit destination in the
    // middle of a run of equal lengths (a run never spans two destinations).
    let uni = open_unicast_receiver("127.0.0.1:0".parse().unwrap(), &lo_cfg()).unwrap();
    let mut sb = SendBatch::new(64, 2048);
    sb.set_segmentation(true);
    for (i, f) in store.iter().enumerate() {
        let dest = (i == 2 || i == 3).then_some(uni.local_addr);
        sb.push(f, dest).unwrap();
    }
    while !sb.is_empty() {
        sb.send(&tx.socket).unwrap();
    }
    assert!(sb.segmentation());
    let mut expect = store.clone();
    let to_uni: Vec<Vec<u8>> = expect.drain(2..4).collect();
    assert_eq!(recv_n(&rx, expect.len()), expect);
    assert_eq!(recv_n(&uni, 2), to_uni);
}

/// A socket the kernel will not segment for (`SO_NO_CHECK`: GSO needs the UDP checksum)
/// refuses the first segmented send: segmentation turns itself off and every frame still
/// goes, one datagram each.
#[test]
fn segmentation_falls_back_when_the_kernel_refuses_it() {
    let (rx, tx) = group_pair();
    set_socket_flag(&tx, libc::SO_NO_CHECK);
    let store = mixed_frames();
    let frames: Vec<&[u8]> = store.iter().map(|v| v.as_slice()).collect();
    let segment = send_all_segmented(&tx, &frames);
    assert!(!segment, "the kernel refused GSO on this socket");
    let mut sb = SendBatch::new(64, 2048);
    sb.set_segmentation(true);
    for f in &store {
        sb.push(f, None).unwrap();
    }
    while !sb.is_empty() {
        sb.send(&tx.socket).unwrap();
    }
    assert!(!sb.segmentation());
    let mut expect = store.clone();
    expect.extend(store.iter().cloned());
    assert_eq!(recv_n(&rx, expect.len()), expect);
}

/// Receive coalescing (UDP GRO): segmented runs arrive several to a buffer and are handed
/// out as the same separate datagrams, in order; lone datagrams are unaffected.
#[test]
fn coalesced_receives_hand_out_the_same_datagrams() {
    use nakcast::transport::batch::COALESCED_CAPACITY;
    let (rx, tx) = group_pair();
    let mut rb = RecvBatch::new(8, COALESCED_CAPACITY);
    rb.set_coalescing(&rx.socket, true).unwrap();
    assert!(rb.coalescing());
    // Another option's control message (a 32-byte timestamp) comes before the segment
    // size: the receive control buffer must hold both.
    set_socket_flag(&rx, libc::SO_TIMESTAMPNS);
    let store = mixed_frames();
    let frames: Vec<&[u8]> = store.iter().map(|v| v.as_slice()).collect();
    assert!(send_all_segmented(&tx, &frames));
    let (got, buffers) = recv_n_with(&rx, store.len(), &mut rb);
    assert_eq!(got, store);
    assert!(
        buffers < store.len() / 2,
        "{} datagrams took {buffers} buffers: not coalesced",
        store.len()
    );
    // Lone datagrams, one per buffer.
    for f in &frames[..3] {
        tx.socket.send(f).unwrap();
    }
    let (got, buffers) = recv_n_with(&rx, 3, &mut rb);
    assert_eq!((got.as_slice(), buffers), (&store[..3], 3));
}
