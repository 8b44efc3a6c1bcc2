//! Helpers for the runnable examples in this crate's documentation (hidden from the docs).
//!
//! Doctests cannot see `tests/support`, and an example on a fixed group and port would
//! collide with anything else on the host using it; these give each example a loopback
//! channel of its own and a bounded way to wait for traffic.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::channel::Channel;
use super::socket::Interface;
use super::subscriber::Subscriber;

/// A loopback multicast channel for an example: a group in 239.255.220.0–239.255.239.255
/// (unused by the test suites) that differs between processes and between calls, a port
/// free on 127.0.0.1 right now, interface 127.0.0.1, stream 7.
pub fn doc_channel() -> Channel {
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("a free UDP port on 127.0.0.1")
        .port();
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    let third = 220 + ((pid ^ (call >> 8)) % 20) as u8;
    let fourth = ((pid.wrapping_mul(31).wrapping_add(call)) % 254 + 1) as u8;
    let endpoint = SocketAddr::from(([239, 255, third, fourth], port));
    Channel::new(endpoint)
        .with_interface(Interface::Addr(Ipv4Addr::LOCALHOST.into()))
        .with_stream(7)
}

/// Drive `sub` (discarding its events) until `done` holds; panics after 5 seconds.
pub fn doc_poll_until(sub: &mut Subscriber, mut done: impl FnMut(&Subscriber) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done(sub) {
        assert!(Instant::now() < deadline, "example timed out");
        sub.recv_timeout(&mut |_| {}, Duration::from_millis(10))
            .expect("subscriber poll");
    }
}
