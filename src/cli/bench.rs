//! `nakcast bench`: the command-line face of [`nakcast::bench`] (one publisher and K
//! subscribers in one process over loopback multicast): parses the options, shows a progress
//! bar, prints the table and, with `--json`, the report as one JSON object.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use clap::Args;
use nakcast::Interface;
use nakcast::bench::{self, BenchConfig, BenchError, BenchReport};

use super::{CliError, StatusLine, parse_rate, print_json};

/// `nakcast bench`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    nakcast bench                                  # 2 subscribers, 1M x 64 B, as fast as possible\n  \
    nakcast bench --subscribers 4 --loss 5         # 5% of datagrams dropped at each subscriber\n  \
    nakcast bench --rate 100000 --count 500000     # paced: latency under a steady load\n  \
    nakcast bench --json | tail -1 | jq .p99_us\n\n\
    JSON (--json, last line of stdout): subscribers, count, size, delivered, elapsed_s, msgs_per_s,\n\
    mb_per_s, p50_us, p90_us, p99_us, p999_us, max_us, mean_us, injected_drops, recovered, lost,\n\
    reported_lost, naks_sent, naks_received, retransmitted, repair_copies_sent, unavailable, ...\n\
    Exit status: 0 when every subscriber got every message; 1 otherwise; 2 for set-up errors.")]
pub struct BenchArgs {
    /// Subscribers (each with its own socket, all polled by one thread).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
    subscribers: u64,
    /// Messages to publish.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Message size in bytes (at least 16: send time and index).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(16..=65_536))]
    size: u64,
    /// Percentage of datagrams each subscriber drops on receipt (injected loss, 0..100).
    #[arg(long, value_name = "PCT", default_value_t = 0.0)]
    loss: f64,
    /// Publish at this many messages per second (latency is measured from each message's
    /// intended send time, so stalls are not hidden); default: as fast as possible.
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = parse_rate)]
    rate: Option<f64>,
    /// Messages offered per batch (they share datagrams) before a flush.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    burst: u64,
    /// Most messages in flight (published, not yet delivered to the slowest subscriber):
    /// the harness's flow control so the publisher does not overrun socket buffers. 0 = off.
    #[arg(long, default_value_t = 16_384)]
    window: u64,
    /// Interface (loopback by default).
    #[arg(long, value_name = "IP|NAME", default_value = "127.0.0.1")]
    interface: String,
    /// Multicast group address (the port is always a free one).
    #[arg(long, value_name = "ADDR")]
    group: Option<Ipv4Addr>,
    /// Give up when no subscriber made progress for this long.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = super::parse_secs)]
    idle_timeout: Duration,
    /// Times the publisher sends each repair datagram, 1 to 4 (a second copy keeps a lost
    /// repair from costing a second NAK round; see docs/PROTOCOL.md).
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=4))]
    repair_copies: u32,
    /// Print one JSON object on the last line of stdout (after the table).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    auth: super::auth::AuthArgs,
}

/// Run `nakcast bench`.
pub fn run(a: BenchArgs) -> Result<(), CliError> {
    if !(0.0..100.0).contains(&a.loss) {
        return Err(CliError::Usage(format!(
            "--loss {} is not a percentage in 0..100",
            a.loss
        )));
    }
    if let Some(g) = a.group
        && !g.is_multicast()
    {
        return Err(CliError::Usage(format!(
            "--group {g} is not a multicast address (use 224.0.0.0/4, e.g. 239.255.0.1)"
        )));
    }
    let Ok(interface) = a.interface.parse::<Interface>();
    let cfg = BenchConfig {
        subscribers: a.subscribers,
        count: a.count,
        size: a.size as usize,
        loss_pct: a.loss,
        rate: a.rate,
        burst: a.burst,
        window: a.window,
        interface,
        group: a.group,
        idle_timeout: a.idle_timeout,
        auth: a.auth.config()?,
        repair_copies: a.repair_copies,
    };

    // Progress on stderr for runs longer than a second.
    let mut status = StatusLine::new(!a.json);
    let started = Instant::now();
    let result = bench::run_with_progress(&cfg, |p| {
        if started.elapsed() > Duration::from_secs(1) && status.due() {
            let frac = p as f64 / a.count as f64;
            let bar = (frac * 30.0) as usize;
            status.show(&format!(
                "bench: [{}{}] {:5.1}%  {} of {} messages",
                "#".repeat(bar),
                ".".repeat(30 - bar.min(30)),
                frac * 100.0,
                p,
                a.count
            ));
        }
    });
    status.finish();
    let r = result.map_err(|e| match e {
        BenchError::Config(m) => CliError::Usage(m),
        BenchError::Setup(m) => CliError::Setup(m),
        BenchError::Failed(m) => CliError::Failed(m),
    })?;
    print_table(&a, &r);
    if a.json {
        let v = serde_json::to_value(&r).expect("a bench report serializes");
        print_json(&v);
    }
    match r.failure() {
        Some(problem) => Err(CliError::Failed(problem)),
        None => Ok(()),
    }
}

/// The human-readable table (stdout, before the JSON line).
fn print_table(a: &BenchArgs, r: &BenchReport) {
    let k = r.subscribers;
    let mode = match r.rate {
        Some(rate) => format!("paced at {rate} msg/s"),
        None => "as fast as possible".to_string(),
    };
    println!(
        "nakcast bench: 1 publisher -> {k} subscriber(s), {} x {} B, {mode}, loss {}%, {} via {}",
        r.count, r.size, r.loss_pct, r.group, a.interface
    );
    println!(
        "  messages     {:>12} published, {} delivered ({k} x {})",
        r.count, r.delivered, r.count
    );
    println!(
        "  throughput   {:>12.0} msgs/s  {:8.1} MB/s  ({:.3} s; sending took {:.3} s)",
        r.msgs_per_s, r.mb_per_s, r.elapsed_s, r.send_s
    );
    println!(
        "  latency µs   p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  (mean {}, {} samples)",
        r.p50_us, r.p90_us, r.p99_us, r.p999_us, r.max_us, r.mean_us, r.samples
    );
    println!(
        "  loss         injected {} datagrams; gaps {}; recovered {}; reported lost {}; undelivered {}",
        r.injected_drops, r.gaps, r.recovered, r.reported_lost, r.lost
    );
    println!(
        "  NAKs         sent {}, received {}; repairs (retransmits) {} (+{} copies); unavailable {}",
        r.naks_sent, r.naks_received, r.retransmitted, r.repair_copies_sent, r.unavailable
    );
    if r.repair_samples > 0 {
        println!(
            "  repair µs    p50 {}  p90 {}  p99 {}  max {}  (gap detected -> delivered in order; {} fragments)",
            r.repair_p50_us.unwrap_or_default(),
            r.repair_p90_us.unwrap_or_default(),
            r.repair_p99_us.unwrap_or_default(),
            r.repair_max_us.unwrap_or_default(),
            r.repair_samples
        );
    }
    if r.auth {
        println!(
            "  auth         every frame MACed; {} failed authentication",
            r.auth_failures
        );
    }
}
