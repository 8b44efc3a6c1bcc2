//! The benchmark embedded in an application: runs `nakcast::bench::run` (the very harness
//! behind `nakcast bench`: an in-process publisher and subscribers on loopback multicast)
//! and prints its report as one JSON line, with the same field names as
//! `nakcast bench --json` (for scripts: `| jq .msgs_per_s`). A one-line summary read from
//! the typed report goes to stderr.
//!
//! Each subscriber drops `--loss` percent of its datagrams on receipt, so the run exercises
//! repair and reports its latency (`repair_p50_us`, `repair_p99_us`: from detecting a gap
//! to delivering the repaired data in order). The exit status is non-zero when a
//! subscriber missed a message (`BenchReport::failure`).
//!
//! ```sh
//! cargo run --release --example embedded_bench
//! cargo run --release --example embedded_bench -- --count 1000000 --loss 0 | jq .
//! ```

#[path = "feed/mod.rs"]
mod feed;

use std::error::Error;
use std::net::Ipv4Addr;
use std::time::Duration;

use feed::Args;
use nakcast::Interface;
use nakcast::bench::{self, BenchConfig};

const USAGE: &str = "\
embedded_bench: nakcast::bench::run in-process, one JSON line of results (as `nakcast bench --json`)

Options (all optional):
  --group ADDR            multicast group (the port is a free one) [derived from the port]
  --interface IP|NAME     interface                       [127.0.0.1]
  --subscribers N         subscribers (polled by one thread) [2]
  --count N               messages                        [500000]
  --size BYTES            message size (>= 16)            [64]
  --rate N                messages per second (0 = as fast as possible) [0]
  --burst N               messages per flush              [64]
  --window N              most messages in flight (0 = no limit) [16384]
  --loss PCT              percent of datagrams each subscriber drops [1]
  --idle-timeout-ms MS    give up after MS without progress [5000]";

/// Run the benchmark and print its JSON line.
fn main() -> Result<(), Box<dyn Error>> {
    let mut a = Args::parse(USAGE);
    let defaults = BenchConfig::default();
    let group: String = a.get("group", String::new());
    let interface: String = a.get("interface", "127.0.0.1".to_string());
    let rate: f64 = a.get("rate", 0.0);
    // Any string names an interface: an address, or a name such as eth0.
    let Ok(interface) = interface.parse::<Interface>();
    let cfg = BenchConfig {
        group: if group.is_empty() {
            None
        } else {
            Some(group.parse::<Ipv4Addr>()?)
        },
        interface,
        subscribers: a.get("subscribers", defaults.subscribers),
        count: a.get("count", 500_000),
        size: a.get("size", defaults.size),
        rate: Some(rate).filter(|&r| r > 0.0),
        burst: a.get("burst", defaults.burst),
        window: a.get("window", defaults.window),
        loss_pct: a.get("loss", 1.0),
        idle_timeout: Duration::from_millis(a.get("idle-timeout-ms", 5_000)),
        ..defaults
    };
    a.finish();

    // Out-of-range options come back as `BenchError::Config`, naming the field.
    let report = bench::run(&cfg)?;

    // The report serializes to the JSON object `nakcast bench --json` prints.
    println!("{}", serde_json::to_value(&report)?);
    eprintln!(
        "embedded_bench: {} subscriber(s) x {} messages of {} B: {:.0} msgs/s, one-way p50 {} µs \
         p99 {} µs; {} datagrams dropped, {} fragments recovered, {} lost",
        report.subscribers,
        report.count,
        report.size,
        report.msgs_per_s,
        report.p50_us,
        report.p99_us,
        report.injected_drops,
        report.recovered,
        report.lost
    );
    match report.failure() {
        Some(problem) => Err(problem.into()),
        None => Ok(()),
    }
}
