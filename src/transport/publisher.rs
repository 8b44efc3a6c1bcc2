//! The user-facing publisher: the protocol core on real sockets.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::batch::{self, MAX_GATHER, RecvBatch, SendBatch};
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
///
/// ```
/// use nakcast::{Publisher, PublisherOptions};
/// let opts: PublisherOptions = toml::from_str(
///     "[channel]\nendpoint = \"239.255.0.1:40456\"\ninterface = \"127.0.0.1\"\n[protocol]\nmtu = 1400",
/// )?;
/// assert_eq!((opts.protocol.mtu, opts.socket.multicast_ttl), (1400, 1)); // the rest: defaults
/// # let opts = PublisherOptions { channel: nakcast::transport::doc_channel(), ..opts };
/// let publisher = Publisher::new(opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut opts = PublisherOptions::new(channel);
    /// opts.protocol.heartbeat_max = std::time::Duration::from_millis(50);
    /// opts.socket.multicast_ttl = 4; // cross up to 3 routers
    /// let publisher = Publisher::new(opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
/// End a session with [`close`](Self::close). Dropping a publisher without it is a crash
/// as far as subscribers can tell: no CLOSE goes out, nothing more is repaired, and frames
/// still unsent (queued, or held back by flow control) are never sent, so subscribers
/// learn of the end only after `inactivity_timeout` and cannot report what they never
/// heard of.
///
/// ```
/// use nakcast::{Channel, Publisher, PublisherOptions};
/// let channel: Channel = "udp://239.255.0.1:40456?interface=127.0.0.1&stream=7".parse()?;
/// # let channel = nakcast::transport::doc_channel();
/// let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
/// let seq = publisher.offer(b"hello")?;
/// publisher.poll()?;
/// publisher.close(std::time::Duration::from_millis(10))?;
/// # assert_eq!(seq, 0);
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
    /// The latest time read from the clock.
    now: Instant,
    /// `offer` reads the clock after its `send`, not before: the protocol needs no fresh
    /// time to send a message at once when `linger` is zero and no `send_rate` is set.
    clock_after_send: bool,
    warnings: Vec<SocketWarning>,
    buffer_clamps: u64,
    send_errors: u64,
    fanout_drops: u64,
}

impl Publisher {
    /// Open the sockets and start a new session (a random session id that grows with the
    /// start time, [`crate::proto::session::session_id`]).
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// println!("subscribers send NAKs to {}", publisher.local_addr());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
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
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let session = crate::proto::session::session_id(since_epoch, random_session());
        let mut core = Core::new(cfg, session, Instant::now());
        core.prefault();
        for &d in &opts.destinations {
            core.add_destination(d);
        }
        let mtu = core.config().mtu;
        let clock_after_send = core.config().linger.is_zero() && core.config().send_rate.is_none();
        let segment =
            opts.socket.segmentation_offload && batch::segmentation_supported(&data.socket);
        let mut send = SendBatch::new(32, mtu);
        send.set_segmentation(segment);
        Ok(Self {
            core,
            local_addr: data.local_addr,
            data: data.socket,
            replies: replies.map(|r| r.socket),
            multicast,
            send,
            recv: RecvBatch::new(32, 2048),
            frame: vec![0; mtu],
            now: Instant::now(),
            clock_after_send,
            buffer_clamps: socket::buffer_clamps(&warnings),
            warnings,
            send_errors: 0,
            fanout_drops: 0,
        })
    }

    /// Queue `msg` and send it (with anything else due) at once. Returns its sequence
    /// number, or back-pressure (nothing queued) when the unsent allowance or the send
    /// rate is exhausted.
    ///
    /// ```
    /// # use nakcast::{OfferError, Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// match publisher.offer(b"tick") {
    ///     Ok(seq) => println!("sent as {seq}"),
    ///     Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
    ///         publisher.poll()?; // drain, then offer again
    ///     }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offer(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
        if self.clock_after_send && self.multicast && self.send.is_empty() {
            // The lone-message path: nothing else waits, so the message gets a frame of
            // its own, sealed at once and sent straight from the ring with one `send`.
            if let Some((seq, frame)) = self.core.offer_lone(self.now, msg) {
                let Some(sent) = send_from_ring(&self.data, frame, &mut self.send_errors) else {
                    // The kernel pushes back: the frame waits in the core, unsent, and
                    // `transmit` retries it or queues it for the next poll.
                    self.transmit(self.now, true);
                    return Ok(seq);
                };
                self.core.data_sent(self.now, 1);
                let now = self.clock();
                if sent > 0 {
                    self.core.sent_at(now);
                }
                // What the general path's pass after the send would find: a heartbeat or
                // an expiry due (rarely, while messages flow), now that the datagram is out.
                if self.core.poll_timeout() <= now {
                    self.transmit(now, true);
                }
                return Ok(seq);
            }
        }
        if self.clock_after_send {
            // The latency path: no clock read between the offer and the `send` (~30 ns on
            // a VM). Frames are built and sent with the time of the previous call, which
            // nothing here needs to be fresh (zero linger, no send-rate limit); the clock
            // is read once the datagram is out, and the heartbeat schedule is re-dated to
            // it (`Core::sent_at`).
            let seq = self.offer_at(self.now, msg)?;
            let sent = self.transmit(self.now, true);
            let now = self.clock();
            if sent > 0 {
                self.core.sent_at(now);
            }
            return Ok(seq);
        }
        let now = self.clock();
        let seq = self.offer_at(now, msg)?;
        self.transmit(self.now, true);
        Ok(seq)
    }

    /// `msg` to the core at `now`; on back-pressure, send what is queued and try once more.
    fn offer_at(&mut self, now: Instant, msg: &[u8]) -> Result<u64, OfferError> {
        match self.core.offer(now, msg) {
            Err(OfferError::BackPressure) => {
                let now = self.clock();
                self.transmit(now, true);
                self.core.offer(now, msg)
            }
            other => other,
        }
    }

    /// Queue `msg` to share a frame with the messages offered after it (natural batching):
    /// full frames go out 32 at a time (one `sendmmsg`), the rest at the next
    /// [`flush`](Self::flush) or [`poll`](Self::poll). For throughput: an application
    /// that offers everything it has, then flushes, sends full frames under load and a
    /// lone message at once when idle.
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// for price in [101u32, 102, 103] {
    ///     publisher.offer_deferred(&price.to_le_bytes())?; // shares one frame
    /// }
    /// publisher.flush(); // sends the frame now
    /// # assert_eq!((publisher.stats().messages, publisher.stats().data_frames), (3, 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn offer_deferred(&mut self, msg: &[u8]) -> Result<u64, OfferError> {
        // One clock read per frame, not per message: while a frame is open, the time of
        // the previous call is recent enough (it only dates the frame and the rate limit).
        let now = if self.core.has_open_frame() {
            self.now
        } else {
            self.clock()
        };
        let seq = self.offer_at(now, msg)?;
        if self.core.full_frames() >= FULL_FRAMES_PER_SEND {
            let now = self.clock();
            self.transmit(now, false);
        }
        Ok(seq)
    }

    /// Send everything queued now.
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// publisher.offer_deferred(b"queued")?;
    /// publisher.flush();
    /// assert_eq!(publisher.stats().data_frames, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&mut self) {
        self.core.flush();
        let now = self.clock();
        self.transmit(now, true);
    }

    /// Read the clock; every entry point goes through here, so the time handed to the core
    /// never runs backwards.
    fn clock(&mut self) -> Instant {
        self.now = Instant::now();
        self.now
    }

    /// One duty cycle: receive NAKs (at most [`MAX_RECEIVED_PER_POLL`], and no more than
    /// the control-rate allowance, `max_control_rate`), send repairs, heartbeats and
    /// anything queued. Returns the work done (datagrams received plus sent), for idle
    /// strategies.
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # use std::time::{Duration, Instant};
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// let deadline = Instant::now() + Duration::from_millis(2);
    /// while Instant::now() < deadline {
    ///     // The duty cycle: serve NAKs, send heartbeats and anything queued.
    ///     if publisher.poll()? == 0 {
    ///         std::hint::spin_loop(); // or yield, sleep, ...: see IdleStrategy
    ///     }
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll(&mut self) -> Result<usize, Error> {
        let now = self.clock();
        let work = self.receive_control(now)?;
        Ok(work + self.transmit(now, true))
    }

    /// Receive NAKs and STATUS frames into the core; returns how many.
    fn receive_control(&mut self, now: Instant) -> Result<usize, Error> {
        let mut work = 0;
        // Bounded twice: per call, so that NAKs arriving faster than they are handled (a
        // flood) cannot keep this call from returning; and per second, so that a flood
        // costs this thread a bounded share of its time. What is left unread stays in the
        // socket, and the kernel drops what overflows it.
        let allowance = self.core.control_allowance(now, MAX_RECEIVED_PER_POLL);
        while work < allowance {
            let socket = self.replies.as_ref().unwrap_or(&self.data);
            match self.recv.recv_at_most(socket, allowance - work) {
                Ok(n) => {
                    work += n;
                    for d in self.recv.iter().flatten() {
                        self.core.handle_datagram(now, d.source, d.payload);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Ok(work)
    }

    /// Move frames from the core to the socket until the core has nothing due or the
    /// kernel pushes back; returns how many datagrams were sent. Without `seal_open`, the
    /// open frame stays open (only full frames go). If flow control holds frames back,
    /// the receivers' latest reports are read first and sending resumes as far as they
    /// allow: `offer` and `flush` keep a flow-controlled stream moving even when the
    /// application calls [`poll`](Self::poll) rarely. (A control-socket error is left for
    /// `poll` to report.)
    fn transmit(&mut self, now: Instant, seal_open: bool) -> usize {
        let sent = self.transmit_frames(now, seal_open);
        if self.core.flow_blocked() && self.receive_control(now).is_ok_and(|n| n > 0) {
            return sent + self.transmit_frames(now, seal_open);
        }
        sent
    }

    /// [`transmit`](Self::transmit) without the flow-control catch-up.
    fn transmit_frames(&mut self, now: Instant, seal_open: bool) -> usize {
        let next = |core: &mut Core, buf: &mut [u8]| {
            if seal_open {
                core.poll_transmit(now, buf)
            } else {
                core.poll_transmit_full(now, buf)
            }
        };
        let mut sent = 0;
        if self.multicast && self.send.is_empty() && self.core.full_frames() > 0 {
            // Full frames are waiting (the application offers faster than they go): they
            // and the open frame, if due, leave together straight from the ring, rather
            // than the first with its own `send` and the rest copied into the batch.
            if seal_open {
                self.core.seal_lingered(now);
            }
            sent += self.send_full_frames_from_ring(now);
        }
        if self.multicast
            && self.send.is_empty()
            && seal_open
            && self.core.full_frames() == 0
            && self.core.has_open_frame()
            && let Some(n) = self.send_lone_from_ring(now)
        {
            sent += n;
        }
        if self.multicast && self.send.is_empty() {
            // The first frame goes out at once with one plain `send` straight from the
            // frame buffer (no copy into the batch, no `sendmmsg` header set-up); anything
            // after it takes the batch.
            let Some(first) = next(&mut self.core, &mut self.frame) else {
                return sent;
            };
            sent += self.send_now(first.len, first.destination);
        }
        if self.multicast {
            // Frames are encoded straight into the send batch (no intermediate copy) and
            // go out `sendmmsg` by `sendmmsg`.
            loop {
                if self.send.is_full() {
                    sent += send_batch(&mut self.send, &self.data, &mut self.send_errors);
                    if self.send.is_full() {
                        return sent; // The kernel pushes back: the rest waits in the core.
                    }
                }
                let core = &mut self.core;
                let queued = self
                    .send
                    .push_from(|slot| {
                        next(core, slot).map(|t| {
                            let dest = match t.destination {
                                Destination::Group => None,
                                Destination::Unicast(a) => Some(a),
                            };
                            (t.len, dest)
                        })
                    })
                    .expect("a batch with room holds an MTU frame");
                if !queued {
                    break;
                }
            }
            if !self.send.is_empty() {
                sent += send_batch(&mut self.send, &self.data, &mut self.send_errors);
            }
            return sent;
        }
        loop {
            while !self.send.is_full() {
                let Some(t) = next(&mut self.core, &mut self.frame) else {
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

    /// The throughput path: full frames go out straight from the retransmit ring, up to
    /// [`MAX_GATHER`] per `sendmmsg`, with no copy into the send batch (when the core has
    /// nothing to send before them and no trailer to add; otherwise this sends nothing
    /// and the caller's path does it all). Stops when the kernel pushes back.
    fn send_full_frames_from_ring(&mut self, now: Instant) -> usize {
        let mut sent = 0;
        loop {
            let mut frames: [&[u8]; MAX_GATHER] = [&[]; MAX_GATHER];
            let mut n = 0;
            for (slot, f) in frames.iter_mut().zip(self.core.unsent_data()) {
                *slot = f;
                n += 1;
            }
            if n == 0 {
                return sent;
            }
            // One segmentation flag for the socket, kept by the send batch: a refusal on
            // either path turns it off for both.
            let mut segment = self.send.segmentation();
            let r = batch::send_slices_segmented(&self.data, &frames[..n], &mut segment);
            if !segment {
                self.send.set_segmentation(false);
            }
            let done = match r {
                Ok(k) => k,
                Err(_) => {
                    // Refused (e.g. EPERM from a firewall): the first is dropped and
                    // counted; receivers will NAK it.
                    self.send_errors += 1;
                    self.core.data_sent(now, 1);
                    continue;
                }
            };
            self.core.data_sent(now, done);
            sent += done;
            if done < n {
                return sent; // The kernel pushes back: the rest waits in the core.
            }
        }
    }

    /// The latency path: seal the open frame and send it straight from the ring with one
    /// plain `send`, when nothing has to go before it (no repair, no notice, no trailer to
    /// add): no copy, and no other duty of `poll_transmit` on the way to the `send`.
    /// Returns how many datagrams went out (0: refused, dropped and counted), or `None`
    /// if the frame is not done with (the kernel pushes back, or something must go
    /// first): the general path then takes it.
    fn send_lone_from_ring(&mut self, now: Instant) -> Option<usize> {
        self.core.seal_lingered(now);
        let frame = self.core.unsent_data().next()?;
        let sent = send_from_ring(&self.data, frame, &mut self.send_errors)?;
        self.core.data_sent(now, 1);
        Some(sent)
    }

    /// Queue the frame in `frame` for the batch (multicast mode, batch empty).
    fn queue_multicast(&mut self, len: usize, dest: Destination) {
        let frame = &self.frame;
        let dest = match dest {
            Destination::Group => None,
            Destination::Unicast(a) => Some(a),
        };
        self.send
            .push(&frame[..len], dest)
            .expect("an empty batch has room for an MTU frame");
    }

    /// Send the frame in `frame` at once; when the kernel pushes back, queue it instead.
    fn send_now(&mut self, len: usize, dest: Destination) -> usize {
        let to = match dest {
            Destination::Group => None,
            Destination::Unicast(a) => Some(a),
        };
        match send_retrying(&self.data, &self.frame[..len], to) {
            Ok(_) => 1,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                self.queue_multicast(len, dest);
                0
            }
            Err(_) => {
                // Refused (e.g. EPERM from a firewall): dropped and counted; receivers
                // will NAK it.
                self.send_errors += 1;
                0
            }
        }
    }

    /// Close cleanly: send what is queued, then CLOSE frames, serving NAKs for `linger`
    /// (blocking the calling thread meanwhile, polling every 50 µs). Frames that flow
    /// control holds back go at the receivers' pace for the first half of `linger`, then
    /// regardless ([`Core::release_flow`]), so every message offered is sent before CLOSE.
    ///
    /// ```
    /// # use nakcast::{OfferError, Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # use std::time::Duration;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// publisher.offer(b"last words")?;
    /// publisher.close(Duration::from_millis(10))?; // CLOSE frames, NAKs served for 10 ms
    /// assert!(matches!(publisher.offer(b"too late"), Err(OfferError::Closed)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn close(&mut self, linger: Duration) -> Result<(), Error> {
        let start = self.clock();
        self.core.close(start);
        while start.elapsed() < linger {
            if start.elapsed() >= linger / 2 && !self.core.is_flushed() {
                // Frames flow control still holds had half the linger to go at the
                // receivers' pace. Now everything offered goes, so that none is left
                // unsent and unannounced: receivers recover what they could not take, or
                // report it lost.
                self.core.release_flow();
            }
            if self.poll()? == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Ok(())
    }

    /// Counters of the protocol core.
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// publisher.offer(b"hello")?;
    /// let stats = publisher.stats();
    /// assert_eq!((stats.messages, stats.message_bytes), (1, 5));
    /// println!("{} NAKs received, {} repairs sent", stats.naks_received, stats.retransmits);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> &PublisherStats {
        self.core.stats()
    }

    /// Datagrams the kernel refused to send (dropped and counted).
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// publisher.offer(b"hello")?;
    /// assert_eq!(publisher.send_errors(), 0); // e.g. a firewall's EPERM would count here
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_errors(&self) -> u64 {
        self.send_errors
    }

    /// Unicast copies not sent because the kernel pushed back during a fan-out.
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// publisher.offer(b"hello")?;
    /// assert_eq!(publisher.fanout_drops(), 0); // always 0 in multicast mode
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn fanout_drops(&self) -> u64 {
        self.fanout_drops
    }

    /// The session id of this publisher.
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let first = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// let second = Publisher::new(PublisherOptions::new(channel))?;
    /// assert_ne!(first.session(), second.session()); // each start is a new session
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn session(&self) -> u64 {
        self.core.session()
    }

    /// The source address receivers see (and send NAKs to).
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// // The interface's address (127.0.0.1 here) and an ephemeral port, unless
    /// // `SocketConfig::source_port` fixes it (e.g. for a firewall rule).
    /// assert!(publisher.local_addr().ip().is_loopback());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Warnings from socket set-up (e.g. buffer sizes clamped by the kernel).
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// for warning in publisher.warnings() {
    ///     eprintln!("{warning}"); // says which sysctl to raise
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn warnings(&self) -> &[SocketWarning] {
        &self.warnings
    }

    /// Socket buffers the kernel granted smaller than requested (each is also in
    /// [`warnings`](Self::warnings), and was logged when the publisher was created).
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut opts = PublisherOptions::new(channel);
    /// opts.socket.send_buffer = 1 << 30; // far above a usual net.core.wmem_max
    /// let publisher = Publisher::new(opts)?;
    /// if publisher.buffer_clamps() > 0 {
    ///     eprintln!("smaller buffers than requested: {:?}", publisher.warnings());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn buffer_clamps(&self) -> u64 {
        self.buffer_clamps
    }

    /// Whether bursts of frames still go out with segmentation offload (UDP GSO): `false`
    /// when [`SocketConfig::segmentation_offload`](super::SocketConfig::segmentation_offload)
    /// is off, or once the kernel refused a segmented send on this path (every frame then
    /// goes as its own datagram, as it would without GSO).
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut opts = PublisherOptions::new(channel);
    /// opts.socket.segmentation_offload = false;
    /// let publisher = Publisher::new(opts)?;
    /// assert!(!publisher.segmentation_offload());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn segmentation_offload(&self) -> bool {
        self.send.segmentation()
    }

    /// The protocol core, for inspection.
    ///
    /// ```
    /// # use nakcast::{Publisher, PublisherOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel))?;
    /// let seq = publisher.offer(b"hello")?;
    /// assert_eq!(publisher.core().next_seq(), seq + 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn core(&self) -> &Core {
        &self.core
    }
}

/// `offer_deferred` sends full frames once this many are waiting (one `sendmmsg`); the
/// rest go at the next `flush` or `poll`.
const FULL_FRAMES_PER_SEND: usize = 32;

/// Send what the batch holds; a datagram the kernel refuses (e.g. EPERM from a firewall)
/// is dropped and counted, and receivers will NAK it.
/// One `send` of `frame` (to the connected group, or `send_to` `to`), retried while a
/// signal interrupts it.
fn send_retrying(
    socket: &UdpSocket,
    frame: &[u8],
    to: Option<SocketAddr>,
) -> std::io::Result<usize> {
    loop {
        let r = match to {
            None => socket.send(frame),
            Some(a) => socket.send_to(frame, a),
        };
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// One `send` of a frame from the ring to the group: `Some(1)` if it went out, `Some(0)`
/// if the kernel refused it (e.g. EPERM from a firewall: dropped and counted in
/// `send_errors`; receivers will NAK it), `None` if the kernel pushes back (the frame
/// stays unsent). Either way but the last, the caller reports it to the core with
/// `data_sent`.
fn send_from_ring(socket: &UdpSocket, frame: &[u8], send_errors: &mut u64) -> Option<usize> {
    match send_retrying(socket, frame, None) {
        Ok(_) => Some(1),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
        Err(_) => {
            *send_errors += 1;
            Some(0)
        }
    }
}

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
