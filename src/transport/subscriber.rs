//! The user-facing subscriber: the receiver core on real sockets.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::batch::{COALESCED_CAPACITY, RecvBatch, SendBatch};
use super::channel::Channel;
use super::error::Error;
use super::publisher::{log_warning, random_session};
use super::socket::{self, SocketConfig, SocketWarning};
use crate::proto::receiver::{Event, Receiver, ReceiverConfig, ReceiverStats};
use crate::proto::transmit::Destination;
use crate::proto::wire;

/// Everything a [`Subscriber`] needs; plain data with defaults, loadable from TOML/JSON.
///
/// ```
/// # use nakcast::{Subscriber, SubscriberOptions};
/// let opts: SubscriberOptions = toml::from_str(r#"
///     inject_loss = 0.01
///     channel = { endpoint = "239.255.0.1:40456", interface = "127.0.0.1", stream = 7 }
///     protocol = { join = "from_oldest" }
/// "#)?;
/// # let opts = SubscriberOptions { channel: nakcast::transport::doc_channel(), ..opts };
/// let sub = Subscriber::new(opts)?; // unset fields have their defaults
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubscriberOptions {
    /// What to subscribe to. Only the channel's stream is delivered.
    pub channel: Channel,
    /// Socket settings (interface, buffers, SO_REUSEPORT).
    #[serde(default)]
    pub socket: SocketConfig,
    /// Protocol settings (join policy, NAK timing, limits). Its `stream` is replaced by the
    /// channel's.
    #[serde(default)]
    pub protocol: ReceiverConfig,
    /// Drop this fraction of received datagrams before the protocol sees them (0 = off):
    /// real loss for demos and tests over real sockets.
    #[serde(default)]
    pub inject_loss: f64,
    /// Largest datagram accepted, in bytes, and the size of each of a subscriber's 32
    /// receive buffers (64 KiB each instead with [`SocketConfig::receive_offload`]). Larger
    /// datagrams are counted as truncated ([`Subscriber::truncated`]) and dropped. Set it to at least the publishers' `mtu`; it is clamped to
    /// [`MIN_DATAGRAM`]..=[`MAX_DATAGRAM`]. Default: 2048.
    #[serde(default = "default_max_datagram")]
    pub max_datagram: usize,
    /// Unicast mode only: the local address to receive on (default: the interface's
    /// address, or the wildcard, with an ephemeral port). The publisher learns it from this
    /// subscriber's STATUS frames, or lists it in its static destinations.
    #[serde(default)]
    pub bind: Option<SocketAddr>,
}

fn default_max_datagram() -> usize {
    2048
}

/// The smallest receive buffer a subscriber uses (see [`SubscriberOptions::max_datagram`]):
/// the default publisher `mtu`.
pub const MIN_DATAGRAM: usize = 1472;

/// The largest receive buffer a subscriber uses: the largest frame the wire format allows
/// (the largest UDP payload over IPv4).
pub const MAX_DATAGRAM: usize = wire::MAX_FRAME_LEN;

/// The receive buffer size for a configured `max_datagram`.
fn datagram_slot(max_datagram: usize) -> usize {
    max_datagram.clamp(MIN_DATAGRAM, MAX_DATAGRAM)
}

/// Buffer size of a subscriber with receive coalescing: room for a coalesced burst
/// ([`COALESCED_CAPACITY`]), rounded up to 64 KiB plus one cache line so that the 32
/// buffers' first lines fall in different cache sets (a stride of exactly 64 KiB would
/// put them all in one).
const COALESCING_SLOT: usize = (64 << 10) + 64;

/// The receive batch for `socket`: 32 coalescing buffers when `receive_offload` is on and
/// the kernel has UDP GRO, else 32 buffers of `max_datagram`.
/// Send what `core` has due (NAKs, STATUS, flow reports) from `control`, through `send`
/// with `frame` as scratch; returns how many datagrams went out. A free function so that
/// it can run while the receive batch is borrowed.
fn transmit(
    core: &mut Receiver,
    frame: &mut [u8],
    send: &mut SendBatch,
    control: &UdpSocket,
    now: Instant,
    only_flow_reports: bool,
) -> usize {
    let mut sent = 0;
    loop {
        let next = if only_flow_reports {
            core.poll_flow_report(now, frame)
        } else {
            core.poll_transmit(now, frame)
        };
        let Some(t) = next else { break };
        let dest = match t.destination {
            Destination::Unicast(a) => a,
            Destination::Group => continue,
        };
        if send.push(&frame[..t.len], Some(dest)).is_err() {
            break;
        }
        if send.is_full() {
            sent += flush_sends(send, control);
        }
    }
    sent + flush_sends(send, control)
}

fn flush_sends(send: &mut SendBatch, control: &UdpSocket) -> usize {
    match send.send(control) {
        Ok(n) => n,
        Err(_) => {
            // An unreachable publisher: drop the NAK; the retry timer covers it.
            send.pop_front();
            0
        }
    }
}

fn receive_batch(socket: &std::net::UdpSocket, opts: &SubscriberOptions) -> RecvBatch {
    if opts.socket.receive_offload {
        let mut batch = RecvBatch::new(32, COALESCING_SLOT.max(COALESCED_CAPACITY));
        if batch.set_coalescing(socket, true).is_ok() {
            return batch;
        }
    }
    RecvBatch::new(32, datagram_slot(opts.max_datagram))
}

impl SubscriberOptions {
    /// Options for `channel` with every default.
    ///
    /// ```
    /// # use nakcast::{JoinPolicy, Subscriber, SubscriberOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut opts = SubscriberOptions::new(channel);
    /// opts.protocol.join = JoinPolicy::FromOldest; // recover what the publisher still holds
    /// opts.socket.recv_buffer = 8 << 20;
    /// let sub = Subscriber::new(opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(channel: Channel) -> Self {
        Self {
            channel,
            socket: SocketConfig::default(),
            protocol: ReceiverConfig::default(),
            inject_loss: 0.0,
            max_datagram: default_max_datagram(),
            bind: None,
        }
    }
}

/// Receives one channel: delivers messages in order per publisher, recovers losses with
/// NAKs, and reports what cannot be recovered.
///
/// Drive it from one thread: [`poll`](Self::poll) in a busy loop for the lowest latency, or
/// [`recv_timeout`](Self::recv_timeout) to block until something arrives.
///
/// ```
/// use nakcast::{Channel, Event, Subscriber, SubscriberOptions};
/// let channel: Channel = "udp://239.255.0.1:40456?interface=127.0.0.1&stream=7".parse()?;
/// # let channel = nakcast::transport::doc_channel();
/// # let for_publisher = channel.clone();
/// let mut sub = Subscriber::new(SubscriberOptions::new(channel))?;
/// # let mut publisher = nakcast::Publisher::new(nakcast::PublisherOptions::new(for_publisher))?;
/// # publisher.offer(b"hello")?;
/// # let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
/// let mut done = false;
/// while !done {
///     sub.poll(&mut |event| match event {
///         Event::Message { seq, payload, .. } => { println!("{seq}: {payload:?}"); done = true }
///         Event::Loss { range, reason, .. } => eprintln!("lost {range}: {reason:?}"),
///         _ => {}
///     }, 64)?;
/// #   assert!(std::time::Instant::now() < deadline);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Subscriber {
    core: Receiver,
    data: UdpSocket,
    control: UdpSocket,
    recv: RecvBatch,
    send: SendBatch,
    frame: Vec<u8>,
    loss: Option<(f64, SmallRng)>,
    injected_drops: u64,
    truncated: u64,
    /// Datagrams longer than this are counted in `truncated` and dropped.
    max_datagram: usize,
    poller: Poll,
    events: Events,
    /// The data socket is registered with `poller`. Not until the first blocking call:
    /// while a socket is registered, every datagram the kernel queues on it also takes the
    /// epoll wait-queue locks to wake a possible waiter, a cost a busy-polling subscriber
    /// never needs (on loopback it falls on the sender: about 2.4% of a 1 KiB publisher's
    /// time, measured with `perf`).
    registered: bool,
    /// Nothing is due in the core before this (its `poll_timeout` after the last poll that
    /// ran timers and transmitted), and it has not changed since: a poll that receives
    /// nothing before then skips the timer checks and the NAK scan, each a walk over the
    /// tracked publishers. `None`: unknown, do the full work.
    quiet_until: Option<Instant>,
    /// The last receive ended in `WouldBlock`: nothing is queued, blocking is safe.
    drained: bool,
    warnings: Vec<SocketWarning>,
    buffer_clamps: u64,
}

const DATA: Token = Token(0);

impl Subscriber {
    /// Open the sockets (join the group) and start receiving.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// let sub = Subscriber::new(SubscriberOptions::new(channel))?; // joined: receiving from now on
    /// assert_eq!(sub.stats().joins, 0); // no publisher seen yet
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(opts: SubscriberOptions) -> Result<Self, Error> {
        let mut socket_cfg = opts.socket.clone();
        socket_cfg.interface = opts.channel.interface.clone();
        let any: SocketAddr = match opts.channel.endpoint {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let mut cfg = opts.protocol.clone();
        cfg.stream = Some(opts.channel.stream);
        let (data, control, control_warnings) = if opts.channel.is_multicast() {
            let data = socket::open_multicast_receiver(opts.channel.endpoint, &socket_cfg)?;
            let control = socket::open_unicast_receiver(
                any,
                &SocketConfig {
                    recv_buffer: 64 << 10,
                    send_buffer: 256 << 10,
                    ..socket_cfg.clone()
                },
            )?;
            (data, control.socket, control.warnings)
        } else {
            // Unicast: one socket receives the data and sends STATUS and NAKs, so the
            // publisher learns where to send from the STATUS source address.
            let local = match (opts.bind, socket::resolve_interface(&socket_cfg.interface)?) {
                (Some(b), _) => b,
                (None, iface) => match opts.channel.endpoint {
                    SocketAddr::V4(_) => (iface.ipv4.unwrap_or(Ipv4Addr::UNSPECIFIED), 0).into(),
                    SocketAddr::V6(_) => (iface.ipv6.unwrap_or(Ipv6Addr::UNSPECIFIED), 0).into(),
                },
            };
            let data = socket::open_unicast_receiver(local, &socket_cfg)?;
            let control = data.socket.try_clone()?;
            cfg.status_to = vec![opts.channel.endpoint];
            (data, control, Vec::new())
        };
        // Flow reports promise publishers no more than the data socket can queue: half of
        // what the kernel reports (twice the size set; it charges each datagram's overhead
        // to it). Windows count that overhead as `DATAGRAM_COST`; the half is the margin
        // for what that estimate misses (allocator rounding, another kernel).
        if let Ok(n) = socket2::SockRef::from(&data.socket).recv_buffer_size() {
            let cap = u32::try_from(n / 2).unwrap_or(u32::MAX);
            cfg.flow_window = cfg.flow_window.min(cap);
        }
        let warnings = setup_warnings([data.warnings, control_warnings]);
        let poller = Poll::new()?;
        let loss = (opts.inject_loss > 0.0).then(|| {
            (
                opts.inject_loss.min(1.0),
                SmallRng::seed_from_u64(random_session()),
            )
        });
        let recv = receive_batch(&data.socket, &opts);
        let max_datagram = datagram_slot(opts.max_datagram);
        let mut sub = Self {
            core: Receiver::new(cfg, random_session()),
            data: data.socket,
            control,
            recv,
            max_datagram,
            send: SendBatch::new(8, 2048),
            frame: vec![0; 2048],
            loss,
            injected_drops: 0,
            truncated: 0,
            poller,
            events: Events::with_capacity(4),
            registered: false,
            quiet_until: None,
            drained: true,
            buffer_clamps: socket::buffer_clamps(&warnings),
            warnings,
        };
        // Unicast mode: register with the publisher at once.
        sub.transmit(Instant::now());
        Ok(sub)
    }

    /// One duty cycle without blocking: receive datagrams (32 buffers per system call,
    /// until `limit` datagrams were handled or none is left; `limit` is checked between
    /// receives, and with receive coalescing one receive can hold up to 64 datagrams per
    /// buffer), hand every event to `handler` (messages in order per publisher, payload
    /// valid during the call), run timers and send due NAKs. Returns the work done
    /// (datagrams received plus NAKs sent), for idle strategies.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// # publisher.offer(b"hello")?;
    /// # let deadline = Instant::now() + Duration::from_secs(5);
    /// let mut received = Vec::new();
    /// while received.is_empty() { // a busy-poll loop: the lowest latency
    ///     sub.poll(&mut |e| if let Event::Message { seq, .. } = e { received.push(seq) }, 64)?;
    /// #   assert!(Instant::now() < deadline);
    /// }
    /// assert_eq!(received, [0]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn poll<F: FnMut(Event<'_>)>(
        &mut self,
        handler: &mut F,
        limit: usize,
    ) -> Result<usize, Error> {
        let now = Instant::now();
        let mut work = 0;
        self.drained = false;
        while work < limit.max(1) {
            match self.recv.recv(&self.data) {
                Ok(n) => {
                    work += n;
                    for d in self.recv.iter() {
                        let d = match d {
                            Ok(d) if d.payload.len() <= self.max_datagram => d,
                            _ => {
                                self.truncated += 1;
                                continue;
                            }
                        };
                        if let Some((p, rng)) = &mut self.loss
                            && rng.random_bool(*p)
                        {
                            self.injected_drops += 1;
                            continue;
                        }
                        self.core.handle_datagram(now, d.source, d.payload, handler);
                        if self.core.flow_report_due() {
                            // At once, not after the batch: one receive can bring megabytes
                            // (32 coalesced buffers), and a publisher held back by flow
                            // control waits for this report. Only the report: a NAK due
                            // now waits for the rest of the batch, which may fill its gap.
                            work += transmit(
                                &mut self.core,
                                &mut self.frame,
                                &mut self.send,
                                &self.control,
                                now,
                                true,
                            );
                        }
                    }
                    if self.recv.buffers_used() < self.recv.capacity() {
                        // Likely drained; not certain (the adaptive receive takes a lone
                        // datagram first): `wait` checks `drained` before it blocks. Not
                        // trying again here keeps a syscall off the latency path.
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.drained = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // The core changes only through the calls below and `handle_datagram`: with no
        // datagram and no deadline reached, they would find nothing to do.
        if work > 0 || self.quiet_until.is_none_or(|t| t <= now) {
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now, handler);
            }
            work += self.transmit(now);
            self.quiet_until = if self.send.is_empty() {
                // No deadline at all: nothing is due until a datagram arrives.
                Some(
                    self.core
                        .poll_timeout()
                        .unwrap_or(now + Duration::from_secs(3600)),
                )
            } else {
                None // NAKs the kernel refused for now: try again at the next poll.
            };
        }
        Ok(work)
    }

    fn transmit(&mut self, now: Instant) -> usize {
        transmit(
            &mut self.core,
            &mut self.frame,
            &mut self.send,
            &self.control,
            now,
            false,
        )
    }

    /// Block until a datagram arrives, a timer is due, or `timeout` passes; then run one
    /// duty cycle. Returns the work done (0 on timeout).
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// let work = sub.recv_timeout(&mut |e| println!("{e:?}"), Duration::from_millis(1))?;
    /// assert_eq!(work, 0); // nothing published: timed out after 1 ms
    /// # publisher.offer(b"hello")?;
    /// let mut got = None;
    /// # let deadline = Instant::now() + Duration::from_secs(5);
    /// while got.is_none() {
    ///     let mut on_event = |e: Event<'_>| if let Event::Message { seq, .. } = e { got = Some(seq) };
    ///     sub.recv_timeout(&mut on_event, Duration::from_millis(100))?; // blocks up to 100 ms
    /// #   assert!(Instant::now() < deadline);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout<F: FnMut(Event<'_>)>(
        &mut self,
        handler: &mut F,
        timeout: Duration,
    ) -> Result<usize, Error> {
        let work = self.poll(handler, usize::MAX)?;
        if work > 0 || !self.drained {
            return Ok(work);
        }
        self.register()?;
        let now = Instant::now();
        let mut wait = timeout;
        if let Some(t) = self.core.poll_timeout() {
            wait = wait.min(t.saturating_duration_since(now));
        }
        match self.poller.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        self.poll(handler, usize::MAX)
    }

    /// Block until a datagram is waiting, a protocol timer is due, or `timeout` passes,
    /// without receiving anything (for callers that run their own duty cycle and idle by
    /// blocking). Returns whether the socket is readable.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// # publisher.offer(b"hello")?;
    /// if sub.wait(Duration::from_secs(1))? {
    ///     sub.poll(&mut |e| println!("{e:?}"), 64)?; // your own duty cycle
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, Error> {
        if !self.drained {
            // The last poll may have left datagrams queued: readiness is edge-triggered,
            // so blocking now could sleep past them.
            return Ok(true);
        }
        self.register()?;
        let mut wait = timeout;
        if let Some(t) = self.core.poll_timeout() {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        match self.poller.poll(&mut self.events, Some(wait)) {
            Ok(()) => Ok(!self.events.is_empty()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Tell the publishers this subscriber is going away: a last flow report with the
    /// LEAVING flag to each publisher followed (flow control stops counting it at once,
    /// not after `flow_timeout`) and, in unicast mode, a LEAVING STATUS (the publisher
    /// stops sending to it). Sent once, best effort (a datagram the kernel refuses is not
    /// retried); dropping the subscriber does it too. Receiving goes on as before.
    ///
    /// ```
    /// # use nakcast::{Subscriber, SubscriberOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut sub = Subscriber::new(SubscriberOptions::new(channel))?;
    /// sub.leave();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn leave(&mut self) {
        if self.core.is_leaving() {
            return;
        }
        self.core.leave();
        self.transmit(Instant::now());
    }

    /// Register the data socket with the poller, once, before the first blocking wait.
    /// Readiness is edge-triggered, but registering reports a socket that is already
    /// readable, so datagrams queued before it are not slept past.
    fn register(&mut self) -> Result<(), Error> {
        if !self.registered {
            self.poller.registry().register(
                &mut SourceFd(&self.data.as_raw_fd()),
                DATA,
                Interest::READABLE,
            )?;
            self.registered = true;
        }
        Ok(())
    }

    /// Counters of the protocol core.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// # publisher.offer(b"hello")?;
    /// # nakcast::transport::doc_poll_until(&mut sub, |s| s.stats().messages == 1);
    /// let stats = sub.stats();
    /// assert_eq!((stats.messages, stats.message_bytes), (1, 5));
    /// println!("{} gaps, {} NAKs, {} recovered", stats.gaps, stats.naks_sent, stats.recovered);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn stats(&self) -> &ReceiverStats {
        self.core.stats()
    }

    /// Repair latency so far: for each fragment recovered after a NAK, the time from
    /// detecting its gap to delivering it in order.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// let latency = sub.repair_latency();
    /// if let Some(p99) = latency.quantile(0.99) {
    ///     println!("{} repairs, p99 {p99:?}", latency.count());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn repair_latency(&self) -> &crate::proto::receiver::RepairLatency {
        self.core.repair_latency()
    }

    /// Datagrams dropped by the loss injector.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// let mut opts = SubscriberOptions::new(channel.clone());
    /// opts.inject_loss = 1.0; // drop every datagram received
    /// let mut lossy = Subscriber::new(opts)?;
    /// publisher.offer(b"hello")?;
    /// # nakcast::transport::doc_poll_until(&mut lossy, |s| s.injected_drops() > 0);
    /// assert_eq!(lossy.stats().datagrams, 0); // the protocol saw nothing
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn injected_drops(&self) -> u64 {
        self.injected_drops
    }

    /// Datagrams larger than [`max_datagram`](Self::max_datagram), dropped (the payload
    /// never reaches the protocol).
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// let cfg = SocketConfig { interface: channel.interface.clone(), ..SocketConfig::default() };
    /// let raw = nakcast::transport::open_sender(channel.endpoint, &cfg)?;
    /// raw.socket.send(&[0; 4000])?; // larger than `max_datagram` (2048)
    /// # nakcast::transport::doc_poll_until(&mut sub, |s| s.truncated() > 0);
    /// assert_eq!(sub.truncated(), 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn truncated(&self) -> u64 {
        self.truncated
    }

    /// Warnings from socket set-up (e.g. buffer sizes clamped by the kernel).
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// for warning in sub.warnings() {
    ///     eprintln!("{warning}"); // says which sysctl to raise
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn warnings(&self) -> &[SocketWarning] {
        &self.warnings
    }

    /// Socket buffers the kernel granted smaller than requested (each is also in
    /// [`warnings`](Self::warnings), and was logged when the subscriber was created).
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut opts = SubscriberOptions::new(channel);
    /// opts.socket.recv_buffer = 1 << 30; // far above a usual net.core.rmem_max
    /// let sub = Subscriber::new(opts)?;
    /// if sub.buffer_clamps() > 0 {
    ///     eprintln!("smaller buffers than requested: {:?}", sub.warnings());
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn buffer_clamps(&self) -> u64 {
        self.buffer_clamps
    }

    /// The largest datagram accepted: [`SubscriberOptions::max_datagram`] after clamping.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut opts = SubscriberOptions::new(channel);
    /// opts.max_datagram = 9000; // publishers with a jumbo-frame mtu
    /// assert_eq!(Subscriber::new(opts.clone())?.max_datagram(), 9000);
    /// opts.max_datagram = 100; // too small for the default mtu: raised
    /// assert_eq!(Subscriber::new(opts)?.max_datagram(), nakcast::transport::MIN_DATAGRAM);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Whether bursts of datagrams are received coalesced (UDP GRO): `false` when
    /// [`SocketConfig::receive_offload`] is off or the kernel has no UDP GRO.
    ///
    /// ```
    /// # use nakcast::{Subscriber, SubscriberOptions};
    /// # let channel = nakcast::transport::doc_channel();
    /// let mut opts = SubscriberOptions::new(channel);
    /// opts.socket.receive_offload = false;
    /// assert!(!Subscriber::new(opts)?.receive_offload());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn receive_offload(&self) -> bool {
        self.recv.coalescing()
    }

    /// The protocol core, for inspection.
    ///
    /// ```
    /// # use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
    /// # use std::time::{Duration, Instant};
    /// # let channel = nakcast::transport::doc_channel();
    /// # let mut sub = Subscriber::new(SubscriberOptions::new(channel.clone()))?;
    /// # let mut publisher = Publisher::new(PublisherOptions::new(channel.clone()))?;
    /// # publisher.offer(b"hello")?;
    /// # nakcast::transport::doc_poll_until(&mut sub, |s| s.stats().messages == 1);
    /// assert_eq!(sub.core().source_count(), 1); // publishers tracked
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn core(&self) -> &Receiver {
        &self.core
    }
}

/// The warnings of every socket a subscriber opened (the data socket's and the control
/// socket's), each logged once.
fn setup_warnings<const N: usize>(per_socket: [Vec<SocketWarning>; N]) -> Vec<SocketWarning> {
    let warnings: Vec<SocketWarning> = per_socket.into_iter().flatten().collect();
    for w in &warnings {
        log_warning(w);
    }
    warnings
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_of_both_sockets_are_kept_and_clamps_counted() {
        let clamp = |requested, sysctl| SocketWarning::BufferClamp {
            requested,
            granted: 1024,
            sysctl,
        };
        let data = vec![clamp(4 << 20, "net.core.rmem_max")];
        let control = vec![clamp(256 << 10, "net.core.wmem_max")];
        let all = setup_warnings([data.clone(), control.clone()]);
        assert_eq!(all, [data[0].clone(), control[0].clone()]);
        assert_eq!(socket::buffer_clamps(&all), 2);
    }

    #[test]
    fn receive_buffers_follow_max_datagram_within_bounds() {
        assert_eq!(datagram_slot(default_max_datagram()), 2048);
        assert_eq!(datagram_slot(9000), 9000);
        assert_eq!(datagram_slot(0), MIN_DATAGRAM);
        assert_eq!(datagram_slot(usize::MAX), MAX_DATAGRAM);
        assert_eq!(
            MIN_DATAGRAM,
            crate::proto::publisher::PublisherConfig::default().mtu,
            "room for the default mtu"
        );
    }
}
