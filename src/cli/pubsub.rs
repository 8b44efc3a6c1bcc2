//! `nakcast pub` and `nakcast sub`.
//!
//! Generated payloads: the first 8 bytes are the message index (little-endian u64, counting
//! from 0 in each publisher session) and every following byte is a function of the index and
//! the byte's position, so a subscriber can check every byte (`sub --verify`) and detect
//! duplicates and reordering independently of fragmentation.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::{Duration, Instant};

use clap::Args;
use nakcast::transport::idle::Idler;
use nakcast::transport::{RecvBatch, SendBatch};
use nakcast::{
    Event, JoinPolicy, OfferError, Publisher, PublisherOptions, SocketConfig, Subscriber,
    SubscriberOptions,
};
use serde_json::json;

use super::auth::AuthArgs;
use super::{
    ChannelArgs, CliError, FlowArg, IdleArg, RepairPercentiles, StatusLine, parse_on_off,
    parse_rate, parse_secs, print_json, r3,
};

/// Smallest generated payload: the 8-byte index.
pub const MIN_SIZE: usize = 8;

/// Byte `i` (`i >= 8`) of generated message `index`.
#[inline]
pub fn payload_byte(index: u64, i: usize) -> u8 {
    ((index.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u8) ^ (i as u8).wrapping_mul(31)
}

/// Fill `buf` with generated message `index`.
pub fn fill_payload(index: u64, buf: &mut [u8]) {
    buf[..MIN_SIZE].copy_from_slice(&index.to_le_bytes());
    let h = payload_byte(index, 0);
    // payload_byte(index, i) == h ^ (i * 31): written so that it vectorises.
    for (i, b) in buf[MIN_SIZE..].iter_mut().enumerate() {
        *b = h ^ ((i + MIN_SIZE) as u8).wrapping_mul(31);
    }
}

/// The index of a generated message, if every byte checks out.
pub fn check_payload(buf: &[u8]) -> Option<u64> {
    let index = u64::from_le_bytes(buf.get(..MIN_SIZE)?.try_into().ok()?);
    buf.iter()
        .enumerate()
        .skip(MIN_SIZE)
        .all(|(i, &b)| b == payload_byte(index, i))
        .then_some(index)
}

/// `nakcast pub`: publish messages.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    # 100k messages of 64 B at 50k msg/s on loopback, then serve NAKs for 2 s:\n  \
    nakcast pub --group 239.255.0.1:40456 --interface 127.0.0.1 --count 100000 --rate 50000\n  \
    # publish lines typed or piped in:\n  \
    tail -f app.log | nakcast pub --group 239.255.0.1:40456 --interface 127.0.0.1 --stdin\n  \
    # throughput vs the bare socket: run each with `sub --idle spin` (and --raw for the second)\n  \
    nakcast pub --group 239.255.0.1:40456 --interface 127.0.0.1 --count 5000000 --size 32\n  \
    nakcast pub --group 239.255.0.1:40456 --interface 127.0.0.1 --count 1000000 --size 1024 --raw\n\n\
    JSON (--json, last line of stdout): sent, bytes, naks_received, retransmitted, repair_copies_sent, unavailable,\n\
    elapsed_s, msgs_per_s, auth_failures, gso (whether segmentation offload stayed on), flow_receivers\n\
    (subscribers that reported flow), flow_blocked (times flow control held data back) (and raw: true with --raw).")]
pub struct PubArgs {
    #[command(flatten)]
    channel: ChannelArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Messages to publish (unlimited until Ctrl-C when omitted).
    #[arg(long)]
    count: Option<u64>,
    /// Message size in bytes (at least 8: the index, then bytes derived from it).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(8..=1_048_576))]
    size: u64,
    /// Send at this many messages per second (default: as fast as flow control lets: see
    /// --flow).
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Keep serving NAKs and heartbeats this long after the last message.
    #[arg(long, value_name = "SECS", default_value = "2", value_parser = parse_secs)]
    linger: Duration,
    /// Publish the lines of standard input (without their newline) instead of generated
    /// payloads.
    #[arg(long, conflicts_with_all = ["size"])]
    stdin: bool,
    /// Send from this UDP source port (default: ephemeral). Receivers key a publisher on its
    /// source address, so a publisher restarted on the same port is seen as a restart (a new
    /// session) rather than as a new publisher.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    source_port: u16,
    /// Bytes of the retransmit ring (how much sent data NAKs can still recover; default
    /// 16 MiB, about 134 ms at 1 Gbit/s). A ring that fits the CPU cache (e.g. 2097152)
    /// makes large messages cheaper to publish, at the cost of retention: see
    /// docs/PERFORMANCE.md (tuning).
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["raw"])]
    ring_bytes: Option<usize>,
    /// Times each repair datagram is sent, 1 to 4 (default 2: a lost repair then rarely
    /// costs a second NAK round; 1 halves repair bandwidth). See docs/PROTOCOL.md.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4), conflicts_with_all = ["raw"])]
    repair_copies: Option<u32>,
    /// Plain UDP, no protocol: one datagram per message, sent in `sendmmsg` batches (the
    /// baseline for throughput; receive with `sub --raw`).
    #[arg(long, conflicts_with_all = ["stdin"])]
    raw: bool,
    /// Segmentation offload (UDP GSO): send each burst of equal-sized datagrams as one
    /// buffer that the kernel cuts into the same datagrams. Default: on for the protocol
    /// (it turns itself off where the kernel refuses it), off with --raw (the plain
    /// `sendmmsg` path of any UDP application; `--raw --gso on` is the GSO baseline).
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    gso: Option<bool>,
    /// Flow control: send no further ahead than the fastest subscriber (max) or the
    /// slowest (min) reports it can take, or never wait (none). A subscriber that stops
    /// reporting stops counting after 1 s.
    #[arg(long, value_enum, default_value = "max", conflicts_with_all = ["raw"])]
    flow: FlowArg,
    /// Print one JSON object on the last line of stdout instead of a status line.
    #[arg(long)]
    json: bool,
}

/// `nakcast sub`: receive messages.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    # receive and check 100k messages, exit 0 only if all arrived intact:\n  \
    nakcast sub --group 239.255.0.1:40456 --interface 127.0.0.1 --count 100000 --verify\n  \
    # print what `pub --stdin` sends, starting from the oldest message it still retains:\n  \
    nakcast sub --group 239.255.0.1:40456 --interface 127.0.0.1 --from-oldest --print\n  \
    # the highest rate: busy-poll one core\n  \
    nakcast sub --group 239.255.0.1:40456 --interface 127.0.0.1 --count 5000000 --idle spin --json\n\n\
    JSON (--json, last line of stdout): delivered, lost, duplicates, out_of_order, corrupt,\n\
    naks_sent, recovered, repair_p50_us, repair_p90_us, repair_p99_us (gap detected to\n\
    delivered in order; null without repairs), elapsed_s, msgs_per_s, mb_per_s, sessions,\n\
    restarts (publisher restarts seen: a new session from the same source), auth_failures,\n\
    flow_reports (flow-control reports sent to publishers).\n\
    Exit status: 0 when --count messages were delivered (when given), verified (with --verify)\n\
    and none lost; 1 otherwise; 2 for usage or set-up errors.")]
pub struct SubArgs {
    #[command(flatten)]
    channel: ChannelArgs,
    #[command(flatten)]
    auth: AuthArgs,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Stop when nothing arrived for this long.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    idle_timeout: Duration,
    /// Check every message's bytes against its index (payloads from `nakcast pub`).
    #[arg(long)]
    verify: bool,
    /// Start at the oldest message the publisher still retains instead of the first seen.
    #[arg(long)]
    from_oldest: bool,
    /// Print each message on stdout (text as is, binary as its index or a hex prefix).
    #[arg(long)]
    print: bool,
    /// Drop this percentage of received datagrams before the protocol sees them (testing).
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    loss: f64,
    /// How to wait when nothing is there: block (epoll, no CPU when idle), spin (lowest
    /// latency and highest rate, one core busy), yield or backoff.
    #[arg(long, value_enum, default_value = "block")]
    idle: IdleArg,
    /// Plain UDP, no protocol: one message per datagram from `pub --raw`; no recovery, so
    /// `lost` counts what never arrived (the baseline for throughput). Exits 1 when any
    /// message was lost or out of order.
    #[arg(long, conflicts_with_all = ["from_oldest", "loss", "print"])]
    raw: bool,
    /// Receive coalescing (UDP GRO): take a burst of equal-sized datagrams in one buffer,
    /// handed out as the same datagrams. Default: on for the protocol, off with --raw.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    gro: Option<bool>,
    /// Flow-control window reported to publishers, in bytes, each datagram counting its
    /// length plus 768 (default 1 MiB, lowered to half the socket buffer size the kernel
    /// reports); 0 sends no flow reports.
    #[arg(long, value_name = "BYTES", conflicts_with_all = ["raw"])]
    flow_window: Option<u32>,
    /// Print one JSON object on the last line of stdout instead of a status line.
    #[arg(long)]
    json: bool,
}

/// Run `nakcast pub`.
pub fn run_pub(a: PubArgs) -> Result<(), CliError> {
    super::catch_interrupts();
    if a.raw {
        refuse_key_with_raw(&a.auth)?;
        return run_pub_raw(&a);
    }
    let mut opts = PublisherOptions::new(a.channel.channel());
    opts.socket.source_port = a.source_port;
    opts.socket.segmentation_offload = a.gso.unwrap_or(true);
    opts.protocol.auth = a.auth.config()?;
    if let Some(b) = a.ring_bytes {
        opts.protocol.ring_bytes = b;
    }
    if let Some(n) = a.repair_copies {
        opts.protocol.repair_copies = n;
    }
    opts.protocol.flow_control = a.flow.mode();
    let mut publisher = Publisher::new(opts)?;
    let mut status = StatusLine::new(!a.json);
    let start = Instant::now();
    let mut sent: u64 = 0;
    let mut bytes: u64 = 0;
    if a.stdin {
        let stdin = std::io::stdin();
        let mut line = Vec::new();
        let mut input = stdin.lock();
        loop {
            line.clear();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(CliError::Failed(format!("reading stdin: {e}"))),
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            offer_blocking(&mut publisher, &line, false)?;
            sent += 1;
            bytes += line.len() as u64;
            publisher.poll()?;
            if super::interrupted() || a.count.is_some_and(|c| sent >= c) {
                break;
            }
        }
    } else {
        let sent_bytes = publish_generated(&a, &mut publisher, &mut status, start)?;
        (sent, bytes) = sent_bytes;
    }
    publisher.flush();
    let elapsed = start.elapsed().as_secs_f64();
    // Linger: serve NAKs and heartbeats (a second Ctrl-C cuts it short), then send CLOSE.
    let linger_end = Instant::now() + a.linger;
    while Instant::now() < linger_end && super::interrupts() < 2 {
        if publisher.poll()? == 0 {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    publisher.close(Duration::from_millis(50))?;
    status.finish();
    let s = *publisher.stats();
    let msgs_per_s = if elapsed > 0.0 {
        sent as f64 / elapsed
    } else {
        0.0
    };
    let v = json!({
        "sent": sent,
        "bytes": bytes,
        "naks_received": s.naks_received,
        "retransmitted": s.retransmits,
        "repair_copies_sent": s.repair_copies,
        "unavailable": s.unavailable_sent,
        "elapsed_s": r3(elapsed),
        "msgs_per_s": r3(msgs_per_s),
        "data_frames": s.data_frames,
        "heartbeats": s.heartbeats,
        "send_errors": publisher.send_errors(),
        "gso": publisher.segmentation_offload(),
        "flow_receivers": s.flow_added,
        "flow_blocked": s.flow_blocked,
        "session": format!("{:016x}", publisher.session()),
        "auth_failures": s.auth_failures,
    });
    if a.json {
        print_json(&v);
    } else {
        eprintln!(
            "pub: sent {sent} messages ({bytes} bytes) in {elapsed:.3} s = {msgs_per_s:.0} msg/s; \
             NAKs received {}, retransmitted {}, unavailable {}{}",
            s.naks_received,
            s.retransmits,
            s.unavailable_sent,
            auth_note(s.auth_failures)
        );
    }
    Ok(())
}

/// Where `pub` puts generated messages: the protocol, or plain UDP (`--raw`).
trait Sink {
    /// Queue one message (sent when a datagram fills, or at `flush`).
    fn offer(&mut self, msg: &[u8]) -> Result<(), CliError>;
    /// Send everything queued.
    fn flush(&mut self) -> Result<(), CliError>;
    /// Duty cycle (NAKs, heartbeats); returns the work done.
    fn poll(&mut self) -> Result<usize, CliError>;
    /// One line of live status.
    fn status(&self) -> String;
}

impl Sink for Publisher {
    fn offer(&mut self, msg: &[u8]) -> Result<(), CliError> {
        offer_blocking(self, msg, true).map(|_| ())
    }

    fn flush(&mut self) -> Result<(), CliError> {
        Publisher::flush(self);
        Ok(())
    }

    fn poll(&mut self) -> Result<usize, CliError> {
        Ok(Publisher::poll(self)?)
    }

    fn status(&self) -> String {
        let s = self.stats();
        format!(
            "NAKs {}  repairs {}  unavailable {}",
            s.naks_received, s.retransmits, s.unavailable_sent
        )
    }
}

/// `pub --raw`: one datagram per message on a connected UDP socket, `sendmmsg` batches.
struct RawSink {
    socket: std::net::UdpSocket,
    batch: SendBatch,
    errors: u64,
}

impl Sink for RawSink {
    fn offer(&mut self, msg: &[u8]) -> Result<(), CliError> {
        if self.batch.is_full() {
            self.flush()?;
        }
        self.batch
            .push(msg, None)
            .map_err(|e| CliError::Usage(format!("--raw: {e:?} (a message must fit a datagram)")))
    }

    fn flush(&mut self) -> Result<(), CliError> {
        while !self.batch.is_empty() {
            match self.batch.send(&self.socket) {
                Ok(0) => std::hint::spin_loop(),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
                Err(_) => {
                    self.batch.pop_front();
                    self.errors += 1;
                }
            }
        }
        Ok(())
    }

    fn poll(&mut self) -> Result<usize, CliError> {
        Ok(0)
    }

    fn status(&self) -> String {
        format!("raw UDP, send errors {}", self.errors)
    }
}

/// Publish `--count` generated messages through `sink` at `--rate`; returns (sent, bytes).
fn publish_generated<S: Sink>(
    a: &PubArgs,
    sink: &mut S,
    status: &mut StatusLine,
    start: Instant,
) -> Result<(u64, u64), CliError> {
    let (mut sent, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; a.size as usize];
    let interval = a.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let count = a.count.unwrap_or(u64::MAX);
    let mut last_poll = Instant::now();
    while sent < count && !super::interrupted() {
        match interval {
            Some(iv) => {
                // Paced: send every message whose time has come, as one batch.
                let now = Instant::now();
                let due = start + iv.mul_f64(sent as f64);
                if now < due {
                    sink.poll()?;
                    let left = due.saturating_duration_since(Instant::now());
                    if left > Duration::from_micros(200) {
                        std::thread::sleep(left - Duration::from_micros(100));
                    }
                } else {
                    let mut batch = 0;
                    while sent < count && start + iv.mul_f64(sent as f64) <= now && batch < 64 {
                        fill_payload(sent, &mut buf);
                        sink.offer(&buf)?;
                        sent += 1;
                        bytes += buf.len() as u64;
                        batch += 1;
                    }
                    sink.flush()?;
                }
            }
            None => {
                // Natural batching: full datagrams go out as they fill; the partial one
                // at the next poll.
                for _ in 0..64 {
                    if sent >= count {
                        break;
                    }
                    fill_payload(sent, &mut buf);
                    sink.offer(&buf)?;
                    sent += 1;
                    bytes += buf.len() as u64;
                }
            }
        }
        if last_poll.elapsed() > Duration::from_micros(100) {
            sink.flush()?;
            sink.poll()?;
            last_poll = Instant::now();
        }
        if status.due() {
            status.show(&format!(
                "pub: sent {sent}  {:.0} msg/s  {}",
                sent as f64 / start.elapsed().as_secs_f64(),
                sink.status()
            ));
        }
    }
    sink.flush()?;
    Ok((sent, bytes))
}

/// `pub --raw`.
fn run_pub_raw(a: &PubArgs) -> Result<(), CliError> {
    let ch = a.channel.channel();
    let cfg = SocketConfig {
        interface: ch.interface.clone(),
        ..SocketConfig::default()
    };
    let opened = nakcast::transport::open_sender(ch.endpoint, &cfg)?;
    let mut batch = SendBatch::new(32, (a.size as usize).max(64));
    batch.set_segmentation(
        a.gso.unwrap_or(false) && nakcast::transport::batch::segmentation_supported(&opened.socket),
    );
    let mut sink = RawSink {
        socket: opened.socket,
        batch,
        errors: 0,
    };
    let mut status = StatusLine::new(!a.json);
    let start = Instant::now();
    let (sent, bytes) = publish_generated(a, &mut sink, &mut status, start)?;
    let elapsed = start.elapsed().as_secs_f64();
    status.finish();
    let msgs_per_s = if elapsed > 0.0 {
        sent as f64 / elapsed
    } else {
        0.0
    };
    if a.json {
        print_json(&json!({
            "sent": sent,
            "bytes": bytes,
            "naks_received": 0,
            "retransmitted": 0,
            "repair_copies_sent": 0,
            "unavailable": 0,
            "elapsed_s": r3(elapsed),
            "msgs_per_s": r3(msgs_per_s),
            "send_errors": sink.errors,
            "gso": sink.batch.segmentation(),
            "raw": true,
        }));
    } else {
        eprintln!(
            "pub (raw UDP): sent {sent} messages ({bytes} bytes) in {elapsed:.3} s = {msgs_per_s:.0} msg/s"
        );
    }
    Ok(())
}

/// `on` or `off`.
/// `--raw` is plain UDP: there is no frame to authenticate.
fn refuse_key_with_raw(auth: &AuthArgs) -> Result<(), CliError> {
    if auth.config()?.is_on() {
        return Err(CliError::Usage(
            "--raw sends plain UDP: it cannot authenticate (drop --key/--key-file)".into(),
        ));
    }
    Ok(())
}

/// A note on frames dropped by authentication, if any.
fn auth_note(failures: u64) -> String {
    if failures == 0 {
        String::new()
    } else {
        format!("; {failures} frames failed authentication (dropped)")
    }
}

/// Offer `msg`, waiting out back-pressure by driving the publisher.
fn offer_blocking(p: &mut Publisher, msg: &[u8], deferred: bool) -> Result<u64, CliError> {
    loop {
        let r = if deferred {
            p.offer_deferred(msg)
        } else {
            p.offer(msg)
        };
        match r {
            Ok(seq) => return Ok(seq),
            Err(OfferError::BackPressure | OfferError::RateLimited(_)) => {
                p.flush();
                if p.poll()? == 0 {
                    std::hint::spin_loop();
                }
            }
            Err(OfferError::MessageTooLarge) => {
                return Err(CliError::Usage(format!(
                    "a {}-byte message exceeds the publisher's max_message_size",
                    msg.len()
                )));
            }
            Err(OfferError::Closed) => {
                return Err(CliError::Failed("publisher closed".into()));
            }
            Err(OfferError::SequenceSpaceExhausted) => {
                return Err(CliError::Failed(
                    "the session's sequence space is used up".into(),
                ));
            }
        }
    }
}

/// `sub --raw`: count (and with `--verify` check) one generated message per datagram.
fn run_sub_raw(a: &SubArgs) -> Result<(), CliError> {
    let ch = a.channel.channel();
    let cfg = SocketConfig {
        interface: ch.interface.clone(),
        ..SocketConfig::default()
    };
    let rx = nakcast::transport::open_multicast_receiver(ch.endpoint, &cfg)?.socket;
    rx.set_nonblocking(false)
        .and_then(|()| rx.set_read_timeout(Some(Duration::from_millis(50))))
        .map_err(|e| CliError::Setup(format!("socket timeout: {e}")))?;
    let mut batch = RecvBatch::new(32, 65_536);
    if a.gro == Some(true) {
        batch
            .set_coalescing(&rx, true)
            .map_err(|e| CliError::Setup(format!("--gro on: {e}")))?;
    }
    let mut idler = Idler::default();
    let mut status = StatusLine::new(!a.json);
    let count = a.count.unwrap_or(u64::MAX);
    let (mut delivered, mut corrupt, mut out_of_order, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    let mut next_index = 0u64;
    let (start, mut first, mut last) = (Instant::now(), None, Instant::now());
    while delivered < count && !super::interrupted() {
        let n = match batch.recv(&rx) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => 0,
            Err(e) => return Err(CliError::Failed(format!("receive failed: {e}"))),
        };
        if n == 0 {
            if last.elapsed() >= a.idle_timeout {
                break;
            }
            if a.idle == IdleArg::Block {
                // A blocking peek until a datagram is there (or the read timeout).
                let _ = rx.peek(&mut [0u8; 1]);
            } else {
                idler.idle(a.idle.strategy(), 0);
            }
            continue;
        }
        idler.idle(a.idle.strategy(), n);
        for d in batch.iter().flatten() {
            delivered += 1;
            bytes += d.payload.len() as u64;
            let index = if a.verify {
                check_payload(d.payload)
            } else {
                d.payload
                    .get(..MIN_SIZE)
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
            };
            match index {
                Some(i) => {
                    out_of_order += u64::from(i < next_index);
                    next_index = next_index.max(i + 1);
                }
                None => corrupt += 1,
            }
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        if status.due() {
            status.show(&format!("sub (raw UDP): delivered {delivered}"));
        }
    }
    status.finish();
    let elapsed = first.map_or(0.0, |f: Instant| last.duration_since(f).as_secs_f64());
    let msgs_per_s = if elapsed > 0.0 {
        delivered as f64 / elapsed
    } else {
        0.0
    };
    // Without recovery, whatever the publisher sent below the highest index seen and did
    // not arrive is lost.
    let lost = next_index.saturating_sub(delivered);
    if a.json {
        print_json(&json!({
            "delivered": delivered,
            "lost": lost,
            "duplicates": 0,
            "out_of_order": out_of_order,
            "corrupt": corrupt,
            "naks_sent": 0,
            "recovered": 0,
            "elapsed_s": r3(elapsed),
            "msgs_per_s": r3(msgs_per_s),
            "mb_per_s": r3(bytes as f64 / elapsed.max(1e-9) / 1e6),
            "sessions": 1,
            "raw": true,
            "wall_s": r3(start.elapsed().as_secs_f64()),
        }));
    } else {
        eprintln!(
            "sub (raw UDP): delivered {delivered} in {elapsed:.3} s = {msgs_per_s:.0} msg/s; \
             lost {lost}, out of order {out_of_order}, corrupt {corrupt}"
        );
    }
    // The same rule as `sub`: --count reached, nothing lost, every message intact and in
    // order.
    if a.count.is_some_and(|c| delivered < c) || lost > 0 || out_of_order > 0 || corrupt > 0 {
        let wanted = a.count.map_or(String::new(), |c| format!(" of {c}"));
        return Err(CliError::Failed(format!(
            "sub --raw: {delivered}{wanted} delivered, {lost} lost, {out_of_order} out of order, \
             {corrupt} corrupt"
        )));
    }
    Ok(())
}

/// Per-session verification state of `sub`.
#[derive(Default)]
struct SessionCheck {
    /// One bit per message index seen.
    seen: Vec<u64>,
    /// Highest index delivered so far plus one.
    next: u64,
}

impl SessionCheck {
    /// Record `index`; returns (duplicate, out_of_order).
    fn record(&mut self, index: u64) -> (bool, bool) {
        let (w, b) = ((index / 64) as usize, index % 64);
        if w >= self.seen.len() {
            if w > (1 << 26) {
                // Over 4 billion messages: stop tracking duplicates rather than grow further.
                return (false, index < self.next);
            }
            self.seen.resize(w + 1, 0);
        }
        let dup = self.seen[w] & (1 << b) != 0;
        self.seen[w] |= 1 << b;
        let ooo = !dup && index < self.next;
        self.next = self.next.max(index + 1);
        (dup, ooo)
    }
}

/// Run `nakcast sub`.
pub fn run_sub(a: SubArgs) -> Result<(), CliError> {
    if !(0.0..=100.0).contains(&a.loss) {
        return Err(CliError::Usage(format!(
            "--loss {} is not a percentage in 0..=100",
            a.loss
        )));
    }
    super::catch_interrupts();
    if a.raw {
        refuse_key_with_raw(&a.auth)?;
        return run_sub_raw(&a);
    }
    let mut opts = SubscriberOptions::new(a.channel.channel());
    opts.protocol.auth = a.auth.config()?;
    if a.from_oldest {
        opts.protocol.join = JoinPolicy::FromOldest;
    }
    opts.inject_loss = a.loss / 100.0;
    opts.socket.receive_offload = a.gro.unwrap_or(true);
    if let Some(w) = a.flow_window {
        opts.protocol.flow_window = w;
    }
    let mut sub = Subscriber::new(opts)?;
    let mut idler = Idler::default();

    let mut status = StatusLine::new(!a.json);
    let start = Instant::now();
    let mut first: Option<Instant> = None;
    let mut last_delivery = Instant::now();
    let mut delivered: u64 = 0;
    let mut lost: u64 = 0;
    let mut duplicates: u64 = 0;
    let mut out_of_order: u64 = 0;
    let mut corrupt: u64 = 0;
    let mut sessions: HashMap<u64, SessionCheck> = HashMap::new();
    let mut restarts: u64 = 0;
    let mut closed = false;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut print_err: Option<std::io::Error> = None;
    let count = a.count.unwrap_or(u64::MAX);

    while delivered < count
        && delivered.saturating_add(lost) < count
        && !closed
        && !super::interrupted()
    {
        let before = delivered;
        let mut handler = |ev: Event<'_>| match ev {
            Event::Joined { session, .. } => {
                sessions.entry(session).or_default();
            }
            Event::Message {
                session,
                seq,
                payload,
                ..
            } => {
                delivered += 1;
                if a.verify {
                    match check_payload(payload) {
                        Some(index) => {
                            let (d, o) = sessions.entry(session).or_default().record(index);
                            duplicates += u64::from(d);
                            out_of_order += u64::from(o);
                        }
                        None => corrupt += 1,
                    }
                }
                if a.print && print_err.is_none() {
                    let r = match std::str::from_utf8(payload) {
                        Ok(text) => writeln!(stdout, "{text}"),
                        Err(_) => match check_payload(payload) {
                            Some(index) => {
                                writeln!(stdout, "#{seq} index {index} ({} bytes)", payload.len())
                            }
                            None => writeln!(
                                stdout,
                                "#{seq} ({} bytes) {}",
                                payload.len(),
                                hex_prefix(payload)
                            ),
                        },
                    };
                    if let Err(e) = r {
                        print_err = Some(e);
                    }
                }
            }
            Event::Loss {
                range,
                reason,
                session,
                ..
            } => {
                lost += range.len();
                if !a.json {
                    eprintln!("\nsub: lost {range} ({reason:?}) session {session:016x}");
                }
            }
            Event::Restarted {
                source,
                old_session,
                new_session,
            } => {
                restarts += 1;
                sessions.entry(new_session).or_default();
                if !a.json {
                    eprintln!(
                        "\nsub: publisher {source} restarted: new session {new_session:016x} \
                         (was {old_session:016x})"
                    );
                }
            }
            Event::Closed { .. } => closed = true,
            Event::Inactive { .. } => {}
        };
        let work = if a.idle == IdleArg::Block {
            sub.recv_timeout(&mut handler, Duration::from_millis(50))?
        } else {
            let work = sub.poll(&mut handler, usize::MAX)?;
            idler.idle(a.idle.strategy(), work);
            work
        };
        if delivered != before {
            // One clock read per batch, not per message.
            let now = Instant::now();
            first.get_or_insert(now);
            last_delivery = now;
        }
        if work == 0 && last_delivery.elapsed() >= a.idle_timeout {
            break;
        }
        if status.due() {
            let s = sub.stats();
            let rate = first.map_or(0.0, |f| delivered as f64 / f.elapsed().as_secs_f64());
            status.show(&format!(
                "sub: delivered {delivered}  {rate:.0} msg/s  gaps {}  NAKs {}  recovered {}  lost {lost}",
                s.gaps, s.naks_sent, s.recovered
            ));
        }
    }
    let _ = stdout.flush();
    drop(stdout);
    status.finish();
    if let Some(e) = print_err
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(CliError::Failed(format!("writing stdout: {e}")));
    }
    let s = *sub.stats();
    let elapsed = match first {
        Some(f) => last_delivery.duration_since(f).as_secs_f64(),
        None => 0.0,
    };
    let msgs_per_s = if elapsed > 0.0 {
        delivered as f64 / elapsed
    } else {
        0.0
    };
    let repair = RepairPercentiles::of(sub.repair_latency());
    let v = json!({
        "delivered": delivered,
        "lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "corrupt": corrupt,
        "naks_sent": s.naks_sent,
        "recovered": s.recovered,
        "repair_p50_us": repair.p50_us,
        "repair_p90_us": repair.p90_us,
        "repair_p99_us": repair.p99_us,
        "repair_max_us": repair.max_us,
        "repair_samples": repair.samples,
        "elapsed_s": r3(elapsed),
        "msgs_per_s": r3(msgs_per_s),
        "mb_per_s": r3(if elapsed > 0.0 { s.message_bytes as f64 / elapsed / 1e6 } else { 0.0 }),
        "sessions": sessions.len(),
        "restarts": restarts,
        "gaps": s.gaps,
        "duplicate_fragments": s.duplicates,
        "injected_drops": sub.injected_drops(),
        "closed": closed,
        "verified": a.verify,
        "wall_s": r3(start.elapsed().as_secs_f64()),
        "auth_failures": s.auth_failures,
        "flow_reports": s.flow_reports,
    });
    if a.json {
        print_json(&v);
    } else {
        eprintln!(
            "sub: delivered {delivered} in {elapsed:.3} s = {msgs_per_s:.0} msg/s; lost {lost}, \
             recovered {}, NAKs {}, sessions {}{}{}{}",
            s.recovered,
            s.naks_sent,
            sessions.len(),
            if a.verify {
                format!(
                    "; verify: corrupt {corrupt}, duplicates {duplicates}, out of order {out_of_order}"
                )
            } else {
                String::new()
            },
            // After the established prefix (parsed by tests/lab), which stays unchanged.
            match (repair.p50_us, repair.p99_us) {
                (Some(p50), Some(p99)) => format!("; repair p50 {p50} µs, p99 {p99} µs"),
                _ => String::new(),
            },
            auth_note(s.auth_failures),
        );
    }
    let mut problems = Vec::new();
    if let Some(c) = a.count
        && delivered < c
    {
        problems.push(format!("delivered {delivered} of {c} messages"));
    }
    if lost > 0 {
        problems.push(format!("{lost} messages lost"));
    }
    if a.verify && corrupt + duplicates + out_of_order > 0 {
        problems.push(format!(
            "verification failed: {corrupt} corrupt, {duplicates} duplicates, {out_of_order} out of order"
        ));
    }
    if a.count.is_none() && delivered == 0 {
        problems.push(format!(
            "nothing received within {:?}; is a publisher running on {}? (`nakcast doctor` checks \
             the set-up)",
            a.idle_timeout,
            a.channel.channel()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(format!("sub: {}", problems.join("; "))))
    }
}

fn hex_prefix(b: &[u8]) -> String {
    b.iter().take(16).map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_round_trip_and_corruption() {
        let mut b = vec![0u8; 100];
        fill_payload(12345, &mut b);
        assert_eq!(check_payload(&b), Some(12345));
        b[50] ^= 1;
        assert_eq!(check_payload(&b), None);
        assert_eq!(check_payload(&b[..4]), None);
    }

    #[test]
    fn session_check_counts_duplicates_and_reordering() {
        let mut c = SessionCheck::default();
        assert_eq!(c.record(0), (false, false));
        assert_eq!(c.record(2), (false, false));
        assert_eq!(c.record(1), (false, true));
        assert_eq!(c.record(2), (true, false));
    }
}
