//! `nakcast ping` / `nakcast pong`: round-trip latency between two processes.
//!
//! Ping publishes on `--group` (stream S), pong echoes every message on `--reply-group`
//! (stream S+1; by default the same address with port + 1). One message is in flight at a
//! time and both ends busy-poll (or wait as `--idle` says). `--raw` runs the very same
//! pattern over plain UDP sockets opened by the same helpers (`open_sender`,
//! `open_multicast_receiver`), one `send(2)` per datagram and the same adaptive `RecvBatch`,
//! without the protocol: the baseline.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use nakcast::transport::idle::Idler;
use nakcast::transport::{RecvBatch, open_multicast_receiver, open_sender};
use nakcast::{Event, Publisher, PublisherOptions, SocketConfig, Subscriber, SubscriberOptions};
use serde_json::json;

use super::auth::AuthArgs;
use super::{
    ChannelArgs, CliError, IdleArg, Percentiles, channel, new_histogram, parse_on_off, parse_rate,
    parse_secs, print_json, r3, write_hgrm,
};

/// Ping message header: send time (ns, informational) and round-trip sequence number.
const HEADER: usize = 16;
/// Largest message, so that raw and protocol datagrams both fit a 1500-byte MTU.
const MAX_SIZE: u64 = 1400;

/// Where ping and pong meet.
#[derive(Args, Debug, Clone)]
pub struct PingChannel {
    #[command(flatten)]
    channel: ChannelArgs,
    /// Where pong echoes to (stream + 1 with the protocol); default: --group's address with
    /// port + 1.
    #[arg(long, value_name = "ADDR:PORT")]
    reply_group: Option<SocketAddr>,
    /// Plain UDP on the same sockets and batched I/O, no protocol: the baseline.
    #[arg(long)]
    raw: bool,
    /// How to wait for the next datagram: spin (lowest latency, one core busy), yield,
    /// backoff (spin, yield, then sleep up to 1 ms) or block (epoll).
    #[arg(long, value_enum, default_value = "spin")]
    idle: IdleArg,
    /// Receive coalescing (UDP GRO) on the protocol's subscriber socket (default on, as
    /// in the library); `off` measures what it costs a lone datagram. No effect with --raw.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    gro: Option<bool>,
    #[command(flatten)]
    auth: AuthArgs,
}

impl PingChannel {
    fn reply(&self) -> SocketAddr {
        self.reply_group.unwrap_or_else(|| {
            let mut a = self.channel.group;
            a.set_port(a.port().wrapping_add(1));
            a
        })
    }

    /// The authentication settings; none make sense with --raw.
    fn auth(&self) -> Result<nakcast::proto::AuthConfig, CliError> {
        let cfg = self.auth.config()?;
        if self.raw && cfg.is_on() {
            return Err(CliError::Usage(
                "--raw sends plain UDP: it cannot authenticate (drop --key/--key-file)".into(),
            ));
        }
        Ok(cfg)
    }

    fn socket_config(&self) -> SocketConfig {
        let Ok(interface) = self.channel.interface.parse();
        SocketConfig {
            interface,
            ..SocketConfig::default()
        }
    }
}

/// `nakcast ping`.
#[derive(Args, Debug)]
#[command(after_help = "Examples (two terminals, or `&`):\n  \
    nakcast pong --group 239.255.0.1:40456 --interface 127.0.0.1 &\n  \
    nakcast ping --group 239.255.0.1:40456 --interface 127.0.0.1 --count 100000 --hgrm ping.hgrm --plot ping.svg\n  \
    # the baseline: the same pattern over plain UDP (start a `pong --raw` first)\n  \
    nakcast pong --group 239.255.0.1:40456 --interface 127.0.0.1 --raw &\n  \
    nakcast ping --group 239.255.0.1:40456 --interface 127.0.0.1 --raw --json\n  \
    # fixed rate: 10k round trips/s, latency counted from each intended send time\n  \
    nakcast ping --group 239.255.0.1:40456 --interface 127.0.0.1 --rate 10000\n\n\
    JSON (--json, last line of stdout): count, p50_us, p90_us, p99_us, p999_us, max_us,\n\
    mean_us, raw, timeouts, size, warmup, rate, auth.\n\
    Both ends busy-poll one core each.")]
pub struct PingArgs {
    #[command(flatten)]
    link: PingChannel,
    /// Round trips measured.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Round trips before measuring (not recorded).
    #[arg(long, default_value_t = 1_000)]
    warmup: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(16..=MAX_SIZE))]
    size: u64,
    /// Start round trips at this fixed rate; latency is measured from each intended send
    /// time (coordinated-omission correction). Default: back to back.
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Write the HdrHistogram percentile distribution (µs) to FILE.
    #[arg(long, value_name = "FILE")]
    hgrm: Option<PathBuf>,
    /// Draw the latency-by-percentile chart to FILE (SVG).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// A reply later than this counts as a timeout and the next round trip starts.
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_secs)]
    timeout: Duration,
    /// How long to wait for a pong to answer before giving up (exit 2).
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    connect_timeout: Duration,
    /// Print one JSON object on the last line of stdout.
    #[arg(long)]
    json: bool,
}

/// `nakcast pong`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    nakcast pong --group 239.255.0.1:40456 --interface 127.0.0.1          # echo until Ctrl-C\n  \
    nakcast pong --group 239.255.0.1:40456 --interface 127.0.0.1 --raw    # plain UDP baseline\n\n\
    Busy-polls one core.")]
pub struct PongArgs {
    #[command(flatten)]
    link: PingChannel,
    /// Exit after echoing this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Exit when nothing arrived for this long (default: run until Ctrl-C).
    #[arg(long, value_name = "SECS", value_parser = parse_secs)]
    idle_timeout: Option<Duration>,
}

/// One end of a ping-pong link.
trait Link {
    /// Send one message now.
    fn send(&mut self, msg: &[u8]) -> Result<(), CliError>;
    /// Receive what is there without blocking; the time the reply numbered `want` was
    /// handed to the application, if it arrived.
    fn recv_reply(&mut self, want: u64) -> Result<Option<Instant>, CliError>;
    /// Echo everything received; returns how many.
    fn echo(&mut self) -> Result<u64, CliError>;
    /// Background duty (NAKs, heartbeats); called every ~100 µs.
    fn service(&mut self) -> Result<(), CliError>;
    /// Close cleanly.
    fn close(&mut self) -> Result<(), CliError>;
    /// Block until the inbound socket is readable or `timeout` passes.
    fn block(&mut self, timeout: Duration) -> Result<(), CliError>;
}

/// Waits the way `--idle` says after a poll that found nothing.
struct Waiter {
    arg: IdleArg,
    idler: Idler,
}

impl Waiter {
    fn new(arg: IdleArg) -> Self {
        Self {
            arg,
            idler: Idler::default(),
        }
    }

    fn idle<L: Link>(&mut self, link: &mut L, work: u64) -> Result<(), CliError> {
        match self.arg {
            IdleArg::Block if work == 0 => link.block(Duration::from_millis(1)),
            IdleArg::Block => Ok(()),
            other => {
                self.idler.idle(other.strategy(), work as usize);
                Ok(())
            }
        }
    }
}

fn seq_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(8..16)?.try_into().ok()?))
}

/// The protocol: a publisher out, a subscriber in.
struct ProtoLink {
    publisher: Publisher,
    subscriber: Subscriber,
}

impl ProtoLink {
    fn open(
        out: nakcast::Channel,
        inp: nakcast::Channel,
        auth: nakcast::proto::AuthConfig,
        gro: bool,
    ) -> Result<Self, CliError> {
        let mut sub = SubscriberOptions::new(inp);
        sub.protocol.auth = auth.clone();
        sub.socket.receive_offload = gro;
        let mut publisher = PublisherOptions::new(out);
        publisher.protocol.auth = auth;
        Ok(Self {
            subscriber: Subscriber::new(sub)?,
            publisher: Publisher::new(publisher)?,
        })
    }
}

impl Link for ProtoLink {
    fn send(&mut self, msg: &[u8]) -> Result<(), CliError> {
        loop {
            match self.publisher.offer(msg) {
                Ok(_) => return Ok(()),
                Err(nakcast::OfferError::BackPressure | nakcast::OfferError::RateLimited(_)) => {
                    self.publisher.poll()?;
                }
                Err(e) => return Err(CliError::Failed(format!("offer failed: {e}"))),
            }
        }
    }

    fn recv_reply(&mut self, want: u64) -> Result<Option<Instant>, CliError> {
        let mut got = None;
        self.subscriber.poll(
            &mut |ev| {
                if let Event::Message { payload, .. } = ev
                    && seq_of(payload) == Some(want)
                {
                    got = Some(Instant::now());
                }
            },
            32,
        )?;
        Ok(got)
    }

    fn echo(&mut self) -> Result<u64, CliError> {
        let (publisher, subscriber) = (&mut self.publisher, &mut self.subscriber);
        let mut n = 0;
        let mut err = None;
        subscriber.poll(
            &mut |ev| {
                if let Event::Message { payload, .. } = ev {
                    match publisher.offer(payload) {
                        Ok(_) => n += 1,
                        Err(e) => err = Some(e),
                    }
                }
            },
            32,
        )?;
        match err {
            Some(e) => Err(CliError::Failed(format!("echo failed: {e}"))),
            None => Ok(n),
        }
    }

    fn service(&mut self) -> Result<(), CliError> {
        self.publisher.poll()?;
        Ok(())
    }

    fn close(&mut self) -> Result<(), CliError> {
        self.publisher.close(Duration::from_millis(20))?;
        Ok(())
    }

    fn block(&mut self, timeout: Duration) -> Result<(), CliError> {
        self.subscriber.wait(timeout)?;
        Ok(())
    }
}

/// Plain UDP: a connected sender to one group, a receiver joined to the other. Each
/// datagram goes out with one `send(2)`; receives use the same adaptive batch as the
/// protocol (one `recvmsg(2)` while idle): the cheapest calls for a ping-pong, so the
/// baseline is the bare socket at its best.
struct RawLink {
    tx: std::net::UdpSocket,
    rx: std::net::UdpSocket,
    recv: RecvBatch,
    poller: mio::Poll,
    events: mio::Events,
    /// `rx` is registered with `poller` (at the first `block`, as the subscriber does:
    /// a registered socket makes every datagram take the epoll wait-queue locks, so a
    /// spinning baseline registered up front would be slowed for nothing).
    registered: bool,
}

impl RawLink {
    fn open(out: SocketAddr, inp: SocketAddr, cfg: &SocketConfig) -> Result<Self, CliError> {
        let rx = open_multicast_receiver(inp, cfg)?.socket;
        let tx = open_sender(out, cfg)?.socket;
        let poller = mio::Poll::new().map_err(|e| CliError::Setup(format!("epoll: {e}")))?;
        Ok(Self {
            tx,
            rx,
            recv: RecvBatch::new(8, 2048),
            poller,
            events: mio::Events::with_capacity(4),
            registered: false,
        })
    }

    fn send_one(tx: &std::net::UdpSocket, msg: &[u8]) -> Result<(), CliError> {
        loop {
            match tx.send(msg) {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) =>
                {
                    std::hint::spin_loop()
                }
                Err(e) => return Err(CliError::Failed(format!("send failed: {e}"))),
            }
        }
    }

    fn recv(&mut self) -> Result<usize, CliError> {
        match self.recv.recv(&self.rx) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(CliError::Failed(format!("receive failed: {e}"))),
        }
    }
}

impl Link for RawLink {
    fn send(&mut self, msg: &[u8]) -> Result<(), CliError> {
        Self::send_one(&self.tx, msg)
    }

    fn recv_reply(&mut self, want: u64) -> Result<Option<Instant>, CliError> {
        if self.recv()? == 0 {
            return Ok(None);
        }
        let found = self
            .recv
            .iter()
            .flatten()
            .any(|d| seq_of(d.payload) == Some(want));
        Ok(found.then(Instant::now))
    }

    fn echo(&mut self) -> Result<u64, CliError> {
        if self.recv()? == 0 {
            return Ok(0);
        }
        let mut n = 0;
        for d in self.recv.iter().flatten() {
            Self::send_one(&self.tx, d.payload)?;
            n += 1;
        }
        Ok(n)
    }

    fn service(&mut self) -> Result<(), CliError> {
        Ok(())
    }

    fn close(&mut self) -> Result<(), CliError> {
        Ok(())
    }

    fn block(&mut self, timeout: Duration) -> Result<(), CliError> {
        if !self.registered {
            // Registering reports a socket that is already readable: nothing queued
            // before it is slept past.
            self.poller
                .registry()
                .register(
                    &mut mio::unix::SourceFd(&self.rx.as_raw_fd()),
                    mio::Token(0),
                    mio::Interest::READABLE,
                )
                .map_err(|e| CliError::Failed(format!("epoll: {e}")))?;
            self.registered = true;
        }
        match self.poller.poll(&mut self.events, Some(timeout)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(()),
            Err(e) => Err(CliError::Failed(format!("epoll: {e}"))),
        }
    }
}

/// Run `nakcast ping`.
pub fn run_ping(a: PingArgs) -> Result<(), CliError> {
    let l = &a.link;
    let auth = l.auth()?;
    if l.raw {
        let mut link = RawLink::open(l.channel.group, l.reply(), &l.socket_config())?;
        ping(&a, &mut link)
    } else {
        let c = &l.channel;
        let out = channel(c.group, &c.interface, c.stream);
        let inp = channel(l.reply(), &c.interface, c.stream.wrapping_add(1));
        let mut link = ProtoLink::open(out, inp, auth, l.gro.unwrap_or(true))?;
        ping(&a, &mut link)
    }
}

/// Run `nakcast pong`.
pub fn run_pong(a: PongArgs) -> Result<(), CliError> {
    let l = &a.link;
    let auth = l.auth()?;
    if l.raw {
        let mut link = RawLink::open(l.reply(), l.channel.group, &l.socket_config())?;
        pong(&a, &mut link)
    } else {
        let c = &l.channel;
        let inp = channel(c.group, &c.interface, c.stream);
        let out = channel(l.reply(), &c.interface, c.stream.wrapping_add(1));
        let mut link = ProtoLink::open(out, inp, auth, l.gro.unwrap_or(true))?;
        pong(&a, &mut link)
    }
}

const SERVICE_EVERY: Duration = Duration::from_micros(100);

fn ping<L: Link>(a: &PingArgs, link: &mut L) -> Result<(), CliError> {
    super::catch_interrupts();
    let epoch = Instant::now();
    let mut msg = vec![0u8; a.size as usize];
    for (i, b) in msg.iter_mut().enumerate().skip(HEADER) {
        *b = i as u8;
    }
    let mut seq: u64 = 0;
    let write = |msg: &mut [u8], seq: u64| {
        msg[..8].copy_from_slice(&(epoch.elapsed().as_nanos() as u64).to_le_bytes());
        msg[8..16].copy_from_slice(&seq.to_le_bytes());
    };

    // Connect: probe until a pong answers.
    let t0 = Instant::now();
    'connect: loop {
        seq += 1;
        write(&mut msg, seq);
        link.send(&msg)?;
        let sent = Instant::now();
        while sent.elapsed() < Duration::from_millis(20) {
            if link.recv_reply(seq)?.is_some() {
                break 'connect;
            }
        }
        link.service()?;
        if t0.elapsed() > a.connect_timeout || super::interrupted() {
            return Err(CliError::Setup(format!(
                "no pong answered within {:?}: start `nakcast pong --group {} --interface {}{}` \
                 first (same --group, --reply-group, --stream), or run `nakcast doctor`",
                a.connect_timeout,
                a.link.channel.group,
                a.link.channel.interface,
                if a.link.raw { " --raw" } else { "" }
            )));
        }
    }

    let mut hist = new_histogram();
    let mut waiter = Waiter::new(a.link.idle);
    let mut timeouts = 0u64;
    let interval = a.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let total = a.warmup + a.count;
    let mut start = Instant::now();
    let mut last_service = Instant::now();
    for i in 0..total {
        if super::interrupted() {
            break;
        }
        if i == a.warmup {
            start = Instant::now();
        }
        let intended = match interval {
            Some(iv) if i >= a.warmup => {
                let t = start + iv.mul_f64((i - a.warmup) as f64);
                while Instant::now() < t {
                    if last_service.elapsed() > SERVICE_EVERY {
                        link.service()?;
                        last_service = Instant::now();
                    }
                    std::hint::spin_loop();
                }
                Some(t)
            }
            _ => None,
        };
        seq += 1;
        write(&mut msg, seq);
        let sent = Instant::now();
        link.send(&msg)?;
        let received = loop {
            if let Some(at) = link.recv_reply(seq)? {
                waiter.idle(link, 1)?; // Work done: the idle strategy starts afresh.
                break Some(at);
            }
            if sent.elapsed() > a.timeout {
                break None;
            }
            waiter.idle(link, 0)?;
        };
        match received {
            Some(t) if i >= a.warmup => {
                // Coordinated-omission correction: count from when the round trip should
                // have started, so a stall delays (and is charged to) the ones behind it.
                let from = intended.unwrap_or(sent);
                hist.saturating_record((t.duration_since(from).as_nanos() as u64).max(1));
            }
            Some(_) => {}
            None => timeouts += 1,
        }
        if last_service.elapsed() > SERVICE_EVERY {
            link.service()?;
            last_service = Instant::now();
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    link.close()?;

    let p = Percentiles::of(&hist);
    if let Some(path) = &a.hgrm {
        write_hgrm(&hist, path)?;
    }
    let kind = if a.link.raw { "raw UDP" } else { "nakcast" };
    if let Some(path) = &a.plot {
        let title = format!(
            "nakcast ping ({kind}): {} round trips of {} B, {}",
            p.count,
            a.size,
            match a.rate {
                Some(r) => format!("{r} round trips/s"),
                None => "back to back".into(),
            }
        );
        super::plot::write_svg(&hist, &title, path)?;
    }
    println!(
        "ping ({kind}) {} round trips of {} B via {}: p50 {} µs  p90 {}  p99 {}  p99.9 {}  max {}  mean {}  ({} timeouts, {:.0} round trips/s)",
        p.count,
        a.size,
        a.link.channel.interface,
        p.p50,
        p.p90,
        p.p99,
        p.p999,
        p.max,
        p.mean,
        timeouts,
        p.count as f64 / elapsed.max(1e-9)
    );
    if a.json {
        print_json(&json!({
            "count": p.count,
            "p50_us": p.p50,
            "p90_us": p.p90,
            "p99_us": p.p99,
            "p999_us": p.p999,
            "max_us": p.max,
            "mean_us": p.mean,
            "raw": a.link.raw,
            "timeouts": timeouts,
            "size": a.size,
            "warmup": a.warmup,
            "rate": a.rate,
            "elapsed_s": r3(elapsed),
            "auth": a.link.auth.config()?.is_on(),
        }));
    }
    if timeouts > 0 || p.count < a.count {
        return Err(CliError::Failed(format!(
            "ping: {} of {} round trips measured, {timeouts} timed out",
            p.count, a.count
        )));
    }
    Ok(())
}

fn pong<L: Link>(a: &PongArgs, link: &mut L) -> Result<(), CliError> {
    super::catch_interrupts();
    let mut echoed = 0u64;
    let mut last_rx = Instant::now();
    let mut last_service = Instant::now();
    let mut spins = 0u32;
    let mut waiter = Waiter::new(a.link.idle);
    while !super::interrupted() && a.count.is_none_or(|c| echoed < c) {
        let n = link.echo()?;
        echoed += n;
        waiter.idle(link, n)?;
        if n > 0 {
            last_rx = Instant::now();
            continue;
        }
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(64) || a.link.idle != IdleArg::Spin {
            let now = Instant::now();
            if now.duration_since(last_service) > SERVICE_EVERY {
                link.service()?;
                last_service = now;
            }
            if a.idle_timeout
                .is_some_and(|t| now.duration_since(last_rx) > t)
            {
                break;
            }
        }
    }
    link.close()?;
    eprintln!("pong: echoed {echoed} messages");
    Ok(())
}
