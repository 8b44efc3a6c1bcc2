//! The user-facing publisher: the protocol core on real sockets.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::batch::{RecvBatch, SendBatch};
use super::channel::Channel;
use super::error::Error;
use super::socket::{self, SocketConfig, SocketWarning};
use crate::proto::publisher::{OfferError, Publisher as Core, PublisherConfig, PublisherStats};
use crate::proto::transmit::Destination;

/// Most datagrams one [`Publisher::poll`] receives (two receive batches): a NAK flood
/// then costs each poll a bounded amount of work, and the rest waits in the socket buffer
/// (or is dropped by the kernel when that is full).
pub const MAX_RECEIVED_PER_POLL: usize = 64;

/// Everything a [`Publisher`] needs; plain data with defaults, loadable from TOML/JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherOptions {
    /// Where to publish.
    pub channel: Channel,
    /// Socket settings (interface, TTL, buffers, source port).
    #[serde(default)]
    pub socket: SocketConfig,
    /// Protocol settings (ring, batching, pacing, heartbeats). Its `stream` is replaced by
    /// the channel's.
    #[serde(default)]
    pub protocol: PublisherConfig,
    /// Unicast mode only: receivers to send to whether or not they register (each
    /// subscriber also registers itself with STATUS frames).
    #[serde(default)]
    pub destinations: Vec<SocketAddr>,
}

impl PublisherOptions {
    /// Options for `channel` with every default.
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            socket: SocketConfig::default(),
            protocol: PublisherConfig::default(),
            destinations: Vec::new(),
        }
    }
}

/// Publishes messages on one channel and serves repairs for them.
///
/// Not thread-safe by design (one owner, no locks on the hot path): drive it from one
/// thread. [`offer`](Self::offer) sends at once; between offers, call
/// [`poll`](Self::poll) regularly (a busy loop, or every few hundred microseconds) so NAKs
/// are answered and heartbeats go out.
///
/// ```no_run
/// use nakcast::{Channel, Publisher, PublisherOptions};
/// let channel: Channel = "udp://239.255.0.1:40456?interface=127.0.0.1&stream=7".parse()?;
/// let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
/// let seq = publisher.offer(b"hello")?;
/// publisher.poll()?;
/// publisher.close(std::time::Duration::from_millis(100))?;
/// # let _ = seq;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Publisher {
    core: Core,
    data: UdpSocket,
    /// Multicast mode: the socket NAKs arrive on (the connected data socket cannot receive
    /// them). Unicast mode: `None`, the data socket is unconnected and receives everything.
    replies: Option<UdpSocket>,
    multicast: bool,
    local_addr: SocketAddr,
    send: SendBatch,
    recv: RecvBatch,
    frame: Vec<u8>,
    warnings: Vec<SocketWarning>,
    send_errors: u64,
    fanout_drops: u64,
}

impl Publisher {
    /// Open the sockets and start a new session (a random session id).
    pub fn new(opts: PublisherOptions) -> Result<Self, Error> {
        let mut socket_cfg = opts.socket.clone();
        socket_cfg.interface = opts.channel.interface.clone();
        let multicast = opts.channel.is_multicast();
        let (data, replies) = if multicast {
            let data = socket::open_sender(opts.channel.endpoint, &socket_cfg)?;
            let replies = socket::open_reply_receiver(&data, &socket_cfg)?;
            (data, Some(replies))
        } else {
            // Unicast: listen on the endpoint for STATUS and NAKs, send to each receiver.
            (
                socket::open_unicast_receiver(opts.channel.endpoint, &socket_cfg)?,
                None,
            )
        };
        let mut warnings = data.warnings.clone();
        warnings.extend(replies.iter().flat_map(|r| r.warnings.iter().cloned()));
        for w in &warnings {
            log_warning(w);
        }
        let mut cfg = opts.protocol.clone();
        cfg.stream = opts.channel.stream;
        let mut core = Core::new(cfg, random_session(), Instant::now());
        for &d in &opts.destinations {
            core.add_destination(d);
        }
        let mtu = core.config().mtu;
        Ok(Self {
            core,
            local_addr: data.local_addr,
            data: data.socket,
            replies: replies.map(|r| r.socket),
            multicast,
            send: SendBatch::new(32, mtu),
            recv: RecvBatch::new(32, 2048),
            frame: vec![0; mtu],
            warnings,
            send_errors: 0,
            fanout_drops: 0,
        })
    }

    /// Queue `msg` and send it (with anything else due) at once. Returns its sequence
    /// number, or back-pressure (nothing queued) when the unsent allowance or the send
    /// rate is exhausted.
    pub fn offer(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
        let now = Instant::now();
        let seq = match self.core.offer(now, msg) {
            Err(OfferError::BackPressure) => {
                // Send what is queued, then try once more.
                self.transmit(now);
                self.core.offer(now, msg)?
            }
            other => other?,
        };
        self.transmit(now);
        Ok(seq)
    }

    /// Queue `msg` without sending: it shares a frame with the messages offered after it,
    /// until [`flush`](Self::flush) or [`poll`](Self::poll). For throughput.
    pub fn offer_deferred(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
        let now = Instant::now();
        match self.core.offer(now, msg) {
            Err(OfferError::BackPressure) => {
                self.transmit(now);
                self.core.offer(now, msg)
            }
            other => other,
        }
    }

    /// Send everything queued now.
    pub fn flush(&mut self) {
        self.core.flush();
        self.transmit(Instant::now());
    }

    /// One duty cycle: receive NAKs (at most [`MAX_RECEIVED_PER_POLL`]), send repairs,
    /// heartbeats and anything queued. Returns the work done (datagrams received plus sent),
    /// for idle strategies.
    pub fn poll(&mut self) -> Result<usize, Error> {
        let now = Instant::now();
        let mut work = 0;
        // Bounded: NAKs arriving faster than they are handled (a flood) must not keep this
        // call from returning, or the application could never offer again.
        while work < MAX_RECEIVED_PER_POLL {
            match self.recv.recv(self.replies.as_ref().unwrap_or(&self.data)) {
                Ok(n) => {
                    work += n;
                    for d in self.recv.iter().flatten() {
                        self.core.handle_datagram(now, d.source, d.payload);
                    }
                    if n < self.recv.capacity() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        work += self.transmit(now);
        Ok(work)
    }

    /// Move frames from the core to the socket until the core has nothing due or the
    /// kernel pushes back; returns how many datagrams were sent.
    fn transmit(&mut self, now: Instant) -> usize {
        let mut sent = 0;
        loop {
            while !self.send.is_full() {
                let Some(t) = self.core.poll_transmit(now, &mut self.frame) else {
                    break;
                };
                let frame = &self.frame[..t.len];
                match t.destination {
                    Destination::Group if self.multicast => {
                        self.send
                            .push(frame, None)
                            .expect("slot holds an MTU frame");
                    }
                    Destination::Group => {
                        // Unicast fan-out: one copy per registered receiver.
                        for d in self.core.destinations() {
                            if self.send.is_full() {
                                sent +=
                                    send_batch(&mut self.send, &self.data, &mut self.send_errors);
                            }
                            if self.send.push(frame, Some(d)).is_err() {
                                // The kernel keeps pushing back: this copy is lost to this
                                // receiver, which will NAK it.
                                self.fanout_drops += 1;
                            }
                        }
                    }
                    Destination::Unicast(a) => {
                        self.send
                            .push(frame, Some(a))
                            .expect("slot holds an MTU frame");
                    }
                }
            }
            if self.send.is_empty() {
                return sent;
            }
            sent += send_batch(&mut self.send, &self.data, &mut self.send_errors);
            if !self.send.is_empty() {
                return sent;
            }
        }
    }

    /// Close cleanly: send what is queued, then CLOSE frames, serving NAKs for `linger`
    /// (blocking the calling thread meanwhile, polling every 50 µs).
    pub fn close(&mut self, linger: Duration) -> Result<(), Error> {
        let start = Instant::now();
        self.core.close(start);
        while start.elapsed() < linger {
            if self.poll()? == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Ok(())
    }

    /// Counters of the protocol core.
    pub fn stats(&self) -> &PublisherStats {
        self.core.stats()
    }

    /// Datagrams the kernel refused to send (dropped and counted).
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Unicast copies not sent because the kernel pushed back during a fan-out.
    pub fn fanout_drops(&self) -> u64 {
        self.fanout_drops
    }

    /// The session id of this publisher.
    pub fn session(&self) -> u64 {
        self.core.session()
    }

    /// The source address receivers see (and send NAKs to).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Warnings from socket set-up (e.g. buffer sizes clamped by the kernel).
    pub fn warnings(&self) -> &[SocketWarning] {
        &self.warnings
    }

    /// The protocol core, for inspection.
    pub fn core(&self) -> &Core {
        &self.core
    }
}

/// Send what the batch holds; a datagram the kernel refuses (e.g. EPERM from a firewall)
/// is dropped and counted, and receivers will NAK it.
fn send_batch(batch: &mut SendBatch, socket: &UdpSocket, errors: &mut u64) -> usize {
    match batch.send(socket) {
        Ok(n) => n,
        Err(_) => {
            batch.pop_front();
            *errors += 1;
            0
        }
    }
}

/// A random 64-bit session id from the operating system's RNG.
pub(crate) fn random_session() -> u64 {
    use rand::TryRngCore;
    rand::rngs::OsRng.try_next_u64().unwrap_or_else(|_| {
        // No OS entropy: fall back to the clock, still distinct per start.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
    })
}

pub(crate) fn log_warning(w: &SocketWarning) {
    eprintln!("nakcast: warning: {w}");
}
