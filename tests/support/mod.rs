//! Helpers shared by the real-socket integration tests (`mod support;` in each).
#![allow(dead_code)] // Each test crate uses its own subset.

use std::net::{SocketAddr, UdpSocket};

use nakcast::{Channel, Interface};

/// A UDP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port free on ::1 right now.
pub fn free_port_v6() -> u16 {
    UdpSocket::bind("[::1]:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback channel (stream 7) on group `239.255.OCTET.x` and a free port: give each test
/// its own `octet` so that tests running in parallel never share a group.
pub fn loopback_channel(octet: u8) -> Channel {
    let port = free_port();
    let endpoint: SocketAddr = format!("239.255.{octet}.{}:{port}", port % 250 + 1)
        .parse()
        .unwrap();
    Channel::new(endpoint)
        .with_interface(Interface::Addr("127.0.0.1".parse().unwrap()))
        .with_stream(7)
}
