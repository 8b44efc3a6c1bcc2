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
use nakcast::{
    Event, JoinPolicy, OfferError, Publisher, PublisherOptions, Subscriber, SubscriberOptions,
};
use serde_json::json;

use super::{ChannelArgs, CliError, StatusLine, parse_rate, parse_secs, print_json, r3};

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
    for (i, b) in buf.iter_mut().enumerate().skip(MIN_SIZE) {
        *b = payload_byte(index, i);
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
    tail -f app.log | nakcast pub --group 239.255.0.1:40456 --interface 127.0.0.1 --stdin\n\n\
    JSON (--json, last line of stdout): sent, bytes, naks_received, retransmitted, unavailable,\n\
    elapsed_s, msgs_per_s.")]
pub struct PubArgs {
    #[command(flatten)]
    channel: ChannelArgs,
    /// Messages to publish (unlimited until Ctrl-C when omitted).
    #[arg(long)]
    count: Option<u64>,
    /// Message size in bytes (at least 8: the index, then bytes derived from it).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(8..=1_048_576))]
    size: u64,
    /// Send at this many messages per second (default: as fast as possible; there is no
    /// flow control, so a publisher can outrun slow subscribers).
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
    nakcast sub --group 239.255.0.1:40456 --interface 127.0.0.1 --from-oldest --print\n\n\
    JSON (--json, last line of stdout): delivered, lost, duplicates, out_of_order, corrupt,\n\
    naks_sent, recovered, elapsed_s, msgs_per_s, sessions.\n\
    Exit status: 0 when --count messages were delivered (when given), verified (with --verify)\n\
    and none lost; 1 otherwise; 2 for usage or set-up errors.")]
pub struct SubArgs {
    #[command(flatten)]
    channel: ChannelArgs,
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
    /// Print one JSON object on the last line of stdout instead of a status line.
    #[arg(long)]
    json: bool,
}

/// Run `nakcast pub`.
pub fn run_pub(a: PubArgs) -> Result<(), CliError> {
    super::catch_interrupts();
    let mut opts = PublisherOptions::new(a.channel.channel());
    opts.socket.source_port = a.source_port;
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
                        publisher.poll()?;
                        let left = due.saturating_duration_since(Instant::now());
                        if left > Duration::from_micros(200) {
                            std::thread::sleep(left - Duration::from_micros(100));
                        }
                    } else {
                        let mut batch = 0;
                        while sent < count && start + iv.mul_f64(sent as f64) <= now && batch < 64 {
                            fill_payload(sent, &mut buf);
                            offer_blocking(&mut publisher, &buf, true)?;
                            sent += 1;
                            bytes += buf.len() as u64;
                            batch += 1;
                        }
                        publisher.flush();
                    }
                }
                None => {
                    for _ in 0..64 {
                        if sent >= count {
                            break;
                        }
                        fill_payload(sent, &mut buf);
                        offer_blocking(&mut publisher, &buf, true)?;
                        sent += 1;
                        bytes += buf.len() as u64;
                    }
                    publisher.flush();
                }
            }
            if last_poll.elapsed() > Duration::from_micros(100) {
                publisher.poll()?;
                last_poll = Instant::now();
            }
            if status.due() {
                let s = publisher.stats();
                status.show(&format!(
                    "pub: sent {sent}  {:.0} msg/s  NAKs {}  repairs {}  unavailable {}",
                    sent as f64 / start.elapsed().as_secs_f64(),
                    s.naks_received,
                    s.retransmits,
                    s.unavailable_sent
                ));
            }
        }
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
        "unavailable": s.unavailable_sent,
        "elapsed_s": r3(elapsed),
        "msgs_per_s": r3(msgs_per_s),
        "data_frames": s.data_frames,
        "heartbeats": s.heartbeats,
        "send_errors": publisher.send_errors(),
        "session": format!("{:016x}", publisher.session()),
    });
    if a.json {
        print_json(&v);
    } else {
        eprintln!(
            "pub: sent {sent} messages ({bytes} bytes) in {elapsed:.3} s = {msgs_per_s:.0} msg/s; \
             NAKs received {}, retransmitted {}, unavailable {}",
            s.naks_received, s.retransmits, s.unavailable_sent
        );
    }
    Ok(())
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
    let mut opts = SubscriberOptions::new(a.channel.channel());
    if a.from_oldest {
        opts.protocol.join = JoinPolicy::FromOldest;
    }
    opts.inject_loss = a.loss / 100.0;
    let mut sub = Subscriber::new(opts)?;

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
    let mut closed = false;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());
    let mut print_err: Option<std::io::Error> = None;
    let count = a.count.unwrap_or(u64::MAX);

    while delivered < count
        && delivered.saturating_add(lost) < count
        && !closed
        && !super::interrupted()
    {
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
                let now = Instant::now();
                first.get_or_insert(now);
                last_delivery = now;
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
            Event::Loss { range, reason, .. } => {
                lost += range.len();
                if !a.json {
                    eprintln!("\nsub: lost {range} ({reason:?})");
                }
            }
            Event::Restarted { new_session, .. } => {
                sessions.entry(new_session).or_default();
            }
            Event::Closed { .. } => closed = true,
            Event::Inactive { .. } => {}
        };
        let work = sub.recv_timeout(&mut handler, Duration::from_millis(50))?;
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
    let v = json!({
        "delivered": delivered,
        "lost": lost,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "corrupt": corrupt,
        "naks_sent": s.naks_sent,
        "recovered": s.recovered,
        "elapsed_s": r3(elapsed),
        "msgs_per_s": r3(msgs_per_s),
        "sessions": sessions.len(),
        "gaps": s.gaps,
        "duplicate_fragments": s.duplicates,
        "injected_drops": sub.injected_drops(),
        "closed": closed,
        "verified": a.verify,
        "wall_s": r3(start.elapsed().as_secs_f64()),
    });
    if a.json {
        print_json(&v);
    } else {
        eprintln!(
            "sub: delivered {delivered} in {elapsed:.3} s = {msgs_per_s:.0} msg/s; lost {lost}, \
             recovered {}, NAKs {}, sessions {}{}",
            s.recovered,
            s.naks_sent,
            sessions.len(),
            if a.verify {
                format!(
                    "; verify: corrupt {corrupt}, duplicates {duplicates}, out of order {out_of_order}"
                )
            } else {
                String::new()
            }
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
