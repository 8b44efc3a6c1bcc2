//! The `nakcast` subcommands: argument parsing (clap derive), shared helpers and dispatch.
//!
//! Output contract: with `--json`, the last line of standard output is one JSON object whose
//! field names are stable (scripts depend on them). Human-readable progress goes to standard
//! error. Exit status: 0 success, 1 incomplete or unverified delivery, 2 usage or set-up
//! error (with a message that says what to fix).

mod auth;
mod bench;
mod doctor;
mod jitter;
mod ping;
mod plot;
mod pubsub;

use std::fmt;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
pub use nakcast::bench::{Percentiles, new_histogram};
use nakcast::{Channel, Interface};

/// Brokerless low-latency UDP multicast with NACK-based loss recovery.
#[derive(Parser, Debug)]
#[command(name = "nakcast", version, about, long_about = None)]
#[command(after_help = "Examples:\n  \
    nakcast bench                                   # throughput + latency, loopback, ~1 s\n  \
    nakcast bench --subscribers 4 --loss 5 --json   # with 5% injected receive loss\n  \
    nakcast sub --group 239.255.0.1:40456 --interface 127.0.0.1 --verify &\n  \
    nakcast pub --group 239.255.0.1:40456 --interface 127.0.0.1 --count 100000 --rate 50000\n  \
    nakcast doctor --interface 127.0.0.1")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish messages (deterministic payloads, or lines from stdin) on a channel.
    Pub(pubsub::PubArgs),
    /// Receive a channel, optionally verifying every byte of every message.
    Sub(pubsub::SubArgs),
    /// Measure round-trip latency against a `nakcast pong` (or, with --raw, plain UDP).
    Ping(ping::PingArgs),
    /// Echo every message from `nakcast ping` back to it.
    Pong(ping::PongArgs),
    /// In-process benchmark over loopback multicast: throughput, latency, loss recovery.
    Bench(bench::BenchArgs),
    /// Check this host's multicast set-up and print a fix for each problem found.
    Doctor(doctor::DoctorArgs),
    /// Measure this host's own pauses (no network): the floor under every tail latency.
    Jitter(jitter::JitterArgs),
}

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Pub(a) => pubsub::run_pub(a),
        Command::Sub(a) => pubsub::run_sub(a),
        Command::Ping(a) => ping::run_ping(a),
        Command::Pong(a) => ping::run_pong(a),
        Command::Bench(a) => bench::run(a),
        Command::Doctor(a) => doctor::run(a),
        Command::Jitter(a) => jitter::run(a),
    }
}

/// Why a subcommand failed; decides the exit status.
#[derive(Debug)]
pub enum CliError {
    /// Bad arguments (exit 2).
    Usage(String),
    /// Sockets or the network could not be set up (exit 2); the message says what to fix.
    Setup(String),
    /// The run completed but delivery was incomplete, unverified or lossy (exit 1).
    Failed(String),
}

impl CliError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Setup(_) => 2,
            CliError::Failed(_) => 1,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "usage error: {m}"),
            CliError::Setup(m) => write!(f, "set-up failed: {m}"),
            CliError::Failed(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<nakcast::Error> for CliError {
    fn from(e: nakcast::Error) -> Self {
        match e {
            nakcast::Error::Io(e) => CliError::Failed(format!("socket I/O failed: {e}")),
            other => CliError::Setup(other.to_string()),
        }
    }
}

impl From<nakcast::transport::TransportError> for CliError {
    fn from(e: nakcast::transport::TransportError) -> Self {
        CliError::Setup(e.to_string())
    }
}

/// The channel options shared by `pub`, `sub`, `ping` and `pong`.
#[derive(clap::Args, Debug, Clone)]
pub struct ChannelArgs {
    /// Multicast group (or publisher unicast address) and port, e.g. 239.255.0.1:40456.
    #[arg(long, value_name = "ADDR:PORT")]
    pub group: SocketAddr,
    /// Interface to send and join on: an address (127.0.0.1) or a name (eth0); `any`
    /// follows the routing table.
    #[arg(long, value_name = "IP|NAME", default_value = "any")]
    pub interface: String,
    /// Stream id.
    #[arg(long, value_name = "ID", default_value_t = 1)]
    pub stream: u32,
}

impl ChannelArgs {
    /// The channel these options name.
    pub fn channel(&self) -> Channel {
        channel(self.group, &self.interface, self.stream)
    }
}

/// How a busy loop waits when a poll found nothing (`--idle`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IdleArg {
    /// Spin on the CPU: lowest latency, one core at 100%.
    Spin,
    /// Yield the CPU between polls.
    Yield,
    /// Spin, then yield, then sleep with exponential back-off (up to 1 ms).
    Backoff,
    /// Block in the kernel (epoll) until a datagram arrives.
    Block,
}

impl IdleArg {
    /// The library's idle strategy for this choice.
    pub fn strategy(self) -> nakcast::IdleStrategy {
        match self {
            IdleArg::Spin => nakcast::IdleStrategy::BusySpin,
            IdleArg::Yield => nakcast::IdleStrategy::Yield,
            IdleArg::Backoff => nakcast::IdleStrategy::DEFAULT_BACKOFF,
            IdleArg::Block => nakcast::IdleStrategy::Block,
        }
    }
}

/// `on` or `off`, for switches such as `--gso` and `--gro`.
pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("expected on or off, got {s:?}")),
    }
}

/// How a publisher paces new data by its subscribers' flow reports (`--flow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FlowArg {
    /// No further than the fastest subscriber can take (the default).
    Max,
    /// No further than the slowest subscriber can take.
    Min,
    /// Never wait for subscribers (a slow one loses data and reports it).
    None,
}

impl FlowArg {
    /// The library's flow-control mode for this choice.
    pub fn mode(self) -> nakcast::FlowControl {
        match self {
            FlowArg::Max => nakcast::FlowControl::Max,
            FlowArg::Min => nakcast::FlowControl::Min,
            FlowArg::None => nakcast::FlowControl::None,
        }
    }
}

/// A channel on `group` over `interface` with stream id `stream`.
pub fn channel(group: SocketAddr, interface: &str, stream: u32) -> Channel {
    let Ok(iface) = interface.parse::<Interface>();
    Channel::new(group)
        .with_interface(iface)
        .with_stream(stream)
}

/// Print `value` as one JSON line on standard output.
pub fn print_json(value: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// Round to 3 decimals for display and JSON.
pub fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Repair latency percentiles in microseconds (`null` in JSON without samples).
#[derive(Clone, Copy, Debug, Default)]
pub struct RepairPercentiles {
    /// Fragments recovered after a NAK and delivered.
    pub samples: u64,
    /// Median gap-detected-to-delivered time.
    pub p50_us: Option<f64>,
    /// 90th percentile.
    pub p90_us: Option<f64>,
    /// 99th percentile.
    pub p99_us: Option<f64>,
    /// Largest.
    pub max_us: Option<f64>,
}

impl RepairPercentiles {
    /// Summarise a receiver's (or several merged) repair latencies.
    pub fn of(r: &nakcast::proto::receiver::RepairLatency) -> Self {
        let us = |d: Option<Duration>| d.map(|d| r3(d.as_secs_f64() * 1e6));
        Self {
            samples: r.count(),
            p50_us: us(r.quantile(0.50)),
            p90_us: us(r.quantile(0.90)),
            p99_us: us(r.quantile(0.99)),
            max_us: us(r.max()),
        }
    }
}

/// Write `h` (nanoseconds) as an HdrHistogram percentile distribution in microseconds
/// (the classic `.hgrm` text format, plottable with HdrHistogram's plotter).
pub fn write_hgrm(h: &Histogram<u64>, path: &std::path::Path) -> Result<(), CliError> {
    let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
    for v in h.iter_quantiles(5) {
        let q = v.quantile_iterated_to();
        let inv = if q < 1.0 {
            format!("{:14.2}", 1.0 / (1.0 - q))
        } else {
            String::new()
        };
        s.push_str(&format!(
            "{:12.3} {:14.12} {:10} {}\n",
            v.value_iterated_to() as f64 / 1000.0,
            q,
            v.count_since_last_iteration(),
            inv
        ));
    }
    s.push_str(&format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    ));
    std::fs::write(path, s)
        .map_err(|e| CliError::Setup(format!("cannot write {}: {e}", path.display())))
}

static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTS.fetch_add(1, Ordering::Relaxed);
}

/// Route SIGINT and SIGTERM to a flag read by [`interrupted`], so that long runs stop cleanly
/// (linger, summary, exit status) on Ctrl-C.
pub fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: `on_signal` is async-signal-safe (one atomic add) and has the
        // signature `signal(2)` expects.
        unsafe {
            libc::signal(sig, handler);
        }
    }
}

/// Whether SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    interrupts() > 0
}

/// How many times SIGINT or SIGTERM arrived since [`catch_interrupts`].
pub fn interrupts() -> u32 {
    INTERRUPTS.load(Ordering::Relaxed)
}

/// A one-line status on standard error, rewritten in place at most 4 times a second.
pub struct StatusLine {
    enabled: bool,
    tty: bool,
    last: Instant,
    shown: bool,
}

impl StatusLine {
    /// A status line, shown only when `enabled`.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            last: Instant::now(),
            shown: false,
        }
    }

    /// Whether an update is due (cheap; call `show` only then).
    pub fn due(&self) -> bool {
        self.enabled && self.last.elapsed() >= Duration::from_millis(250)
    }

    /// Show `line` (rewriting the previous one on a terminal; one line each on a pipe).
    pub fn show(&mut self, line: &str) {
        self.last = Instant::now();
        self.shown = true;
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// End the status line (newline on a terminal).
    pub fn finish(&mut self) {
        if self.shown && self.tty {
            eprintln!();
        }
        self.shown = false;
    }
}

/// Parse a duration in (possibly fractional) seconds.
pub fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| format!("{s:?} is not a valid duration"))
}

/// Parse a positive rate (messages per second).
pub fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(v),
        _ => Err(format!(
            "{s:?} is not a positive rate in messages per second"
        )),
    }
}
