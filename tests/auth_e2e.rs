//! Authenticated frames end to end over real UDP sockets on loopback multicast.
//!
//! A publisher and two subscribers share a key; one subscriber drops 5% of what it
//! receives, so sealed NAKs and sealed repairs are exercised. A forger on the same group
//! (it sniffs the genuine frames, so it knows the session) sends frames sealed with the
//! wrong secret, under an unknown key id, without a trailer, and genuine frames with a byte
//! changed; it NAKs the publisher without the key, and replays genuine frames from its own
//! address. Every forged datagram must be counted and dropped, and every genuine message
//! delivered intact. Group 239.255.172.x, free ports; bounded in time.

mod support;
use support::free_port;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use nakcast::proto::auth::AuthConfig;
use nakcast::proto::wire::{self, FrameType, Header, SeqRange};
use nakcast::transport::{open_multicast_receiver, open_sender};
use nakcast::{
    Channel, Event, Interface, LossReason, Publisher, PublisherConfig, PublisherOptions,
    SocketConfig, Subscriber, SubscriberOptions,
};

const KEY: [u8; 32] = *b"nakcast end-to-end test key 0001";

fn loopback() -> SocketConfig {
    SocketConfig {
        interface: Interface::Addr("127.0.0.1".parse().unwrap()),
        ..SocketConfig::default()
    }
}

fn payload(k: u64) -> Vec<u8> {
    let len = 16 + (k * 37 % 300) as usize;
    let mut m = vec![0u8; len];
    m[..8].copy_from_slice(&k.to_le_bytes());
    for (i, b) in m.iter_mut().enumerate().skip(8) {
        *b = (k as u8).wrapping_mul(31) ^ i as u8;
    }
    m
}

#[derive(Default)]
struct Seen {
    messages: u64,
    bad: Vec<String>,
    losses: Vec<(SeqRange, LossReason)>,
    joins: u64,
}

impl Seen {
    fn on(&mut self, ev: Event<'_>) {
        match ev {
            Event::Message { payload: p, .. } => {
                let k = u64::from_le_bytes(p[..8].try_into().unwrap());
                if k != self.messages || p != payload(k).as_slice() {
                    self.bad.push(format!("message {k} at {}", self.messages));
                }
                self.messages += 1;
            }
            Event::Loss { range, reason, .. } => self.losses.push((range, reason)),
            Event::Joined { .. } => self.joins += 1,
            _ => {}
        }
    }
}

/// Frames a forger builds for the genuine `session`: one message each, sealed as `auth`
/// says (or not at all).
fn forged(session: u64, stream: u32, auth: AuthConfig) -> Vec<u8> {
    let now = Instant::now();
    let cfg = PublisherConfig {
        stream,
        auth,
        ..PublisherConfig::default()
    };
    let mut p = nakcast::proto::Publisher::new(cfg, session, now);
    p.offer(now, &payload(0)).unwrap();
    let mut buf = vec![0u8; 2048];
    let n = p.poll_transmit(now, &mut buf).unwrap().len;
    buf.truncate(n);
    buf
}

fn nak(session: u64, stream: u32, auth: &AuthConfig) -> Vec<u8> {
    let mut buf = vec![0u8; 2048];
    let range = [SeqRange::new(0, 1 << 20)];
    let n = wire::emit_ranges(&mut buf, FrameType::Nak, stream, session, &range).unwrap();
    let n = nakcast::proto::Keyring::new(auth)
        .seal(&mut buf, n)
        .unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn authenticated_stream_is_delivered_and_every_forged_frame_is_counted_and_dropped() {
    let port = free_port();
    let endpoint: SocketAddr = format!("239.255.172.{}:{port}", port % 250 + 1)
        .parse()
        .unwrap();
    let ch = Channel::new(endpoint)
        .with_interface(Interface::Addr("127.0.0.1".parse().unwrap()))
        .with_stream(9);
    let auth = AuthConfig::with_key(7, KEY);

    let sub = |loss: f64| {
        let mut o = SubscriberOptions::new(ch.clone());
        o.protocol.auth = auth.clone();
        o.inject_loss = loss;
        Subscriber::new(o).unwrap()
    };
    let mut subs = [(sub(0.05), Seen::default()), (sub(0.0), Seen::default())];
    let mut po = PublisherOptions::new(ch.clone());
    po.protocol.auth = auth.clone();
    let mut publisher = Publisher::new(po).unwrap();

    // The forger: sniffs the group, sends to it, and NAKs the publisher.
    let sniffer = open_multicast_receiver(endpoint, &loopback())
        .unwrap()
        .socket;
    sniffer.set_nonblocking(true).unwrap();
    let to_group = open_sender(endpoint, &loopback()).unwrap().socket;
    let to_publisher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let mut forged_to_group = 0u64;
    let mut replayed = 0u64;
    let mut forged_naks = 0u64;

    let poll = |subs: &mut [(Subscriber, Seen)], publisher: &mut Publisher| {
        publisher.poll().unwrap();
        for (s, seen) in subs.iter_mut() {
            s.poll(&mut |e| seen.on(e), usize::MAX).unwrap();
        }
    };

    let n = 3000u64;
    let start = Instant::now();
    for k in 0..n {
        publisher.offer(&payload(k)).unwrap();
        poll(&mut subs, &mut publisher);
        let mut buf = [0u8; 2048];
        while let Ok(len) = sniffer.recv(&mut buf) {
            if captured.len() < 64 {
                captured.push(buf[..len].to_vec());
            }
        }
        if k % 100 == 50 && !captured.is_empty() {
            let genuine = &captured[captured.len() / 2];
            let session = Header::parse(genuine).unwrap().session;
            let mut modified = genuine.clone();
            modified[40] ^= 0x01;
            wire::finish_frame(&mut modified);
            for f in [
                forged(session, 9, AuthConfig::with_key(7, [0xEE; 32])), // wrong secret
                forged(session, 9, AuthConfig::with_key(8, KEY)),        // unknown key id
                forged(session, 9, AuthConfig::default()),               // no trailer
                modified,                                                // tampered
            ] {
                to_group.send(&f).unwrap();
                forged_to_group += 1;
            }
            // An authentic frame, replayed from the forger's own address.
            to_group.send(&captured[0]).unwrap();
            replayed += 1;
            // NAKs for everything: without the key, and with the wrong secret.
            let target = publisher.local_addr();
            for a in [AuthConfig::default(), AuthConfig::with_key(7, [0xEE; 32])] {
                to_publisher.send_to(&nak(session, 9, &a), target).unwrap();
                forged_naks += 1;
            }
        }
        if k % 8 == 0 {
            std::thread::sleep(Duration::from_micros(50));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while subs.iter().any(|(_, s)| s.messages < n) && Instant::now() < deadline {
        poll(&mut subs, &mut publisher);
    }
    // Let the last forged datagrams land.
    let settle = Instant::now() + Duration::from_millis(200);
    while Instant::now() < settle {
        poll(&mut subs, &mut publisher);
    }
    println!("run took {:?}", start.elapsed());

    assert!(forged_to_group >= 100 && forged_naks >= 50 && replayed >= 25);
    for (i, (s, seen)) in subs.iter().enumerate() {
        let st = s.stats();
        println!("subscriber {i}: {st:?}");
        assert_eq!(seen.messages, n, "subscriber {i} delivered everything");
        assert!(seen.bad.is_empty(), "subscriber {i}: {:?}", seen.bad);
        assert!(seen.losses.is_empty(), "subscriber {i}: {:?}", seen.losses);
        assert_eq!(seen.joins, 1, "the forger never became a publisher");
        let injected = s.injected_drops();
        if injected == 0 {
            assert_eq!(st.auth_failures, forged_to_group, "subscriber {i}");
            assert_eq!(st.duplicate_sessions, replayed, "subscriber {i}");
        } else {
            // Injected loss drops forged datagrams too, before the protocol sees them.
            assert!(st.auth_failures > 0 && st.auth_failures <= forged_to_group);
            assert!(
                st.recovered > 0,
                "sealed NAKs were answered with sealed repairs"
            );
        }
    }
    let ps = publisher.stats();
    println!("publisher: {ps:?}");
    assert_eq!(ps.auth_failures, forged_naks);
    assert!(ps.naks_received > 0 && ps.retransmits > 0);
    // Every forged NAK asked for the whole ring; none was served: repairs are what the
    // lossy subscriber's genuine NAKs asked for, a handful per NAK.
    assert!(ps.retransmits <= ps.naks_received * 8, "{ps:?}");
}

/// The configuration file form docs/SECURITY.md shows.
#[test]
fn options_files_configure_authentication() {
    let text = r#"
        [channel]
        endpoint = "239.255.172.1:40456"

        [protocol.auth]
        key = { id = 2, secret = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f" }
        accept = [{ id = 1, secret = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff" }]
    "#;
    let o: SubscriberOptions = toml::from_str(text).unwrap();
    let auth = &o.protocol.auth;
    assert!(auth.is_required());
    assert_eq!(auth.key.as_ref().unwrap().id, 2);
    assert_eq!(auth.key.as_ref().unwrap().secret.0[31], 0x1f);
    assert_eq!(auth.accept[0].id, 1);
    let p: PublisherOptions = toml::from_str(text).unwrap();
    assert_eq!(&p.protocol.auth, auth);
    // Without the table, authentication is off; a malformed secret is an error.
    let plain: PublisherOptions =
        toml::from_str("[channel]\nendpoint = \"239.255.172.1:1\"\n").unwrap();
    assert!(!plain.protocol.auth.is_on());
    assert!(
        toml::from_str::<PublisherOptions>(
            "[channel]\nendpoint = \"239.255.172.1:1\"\n[protocol.auth]\nkey = { id = 1, secret = \"abc\" }\n"
        )
        .is_err()
    );
}
