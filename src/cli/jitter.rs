//! `nakcast jitter`: measure the host's own pauses, with no network and no protocol.
//!
//! Each thread busy-spins reading the monotonic clock. Consecutive reads are normally tens
//! of nanoseconds apart; a longer gap is time the thread did not run: an interrupt, the
//! scheduler, a hypervisor taking the virtual CPU away. Whatever the protocol does, a
//! busy-polling subscriber on this host sees these pauses too, so they set the floor of
//! every tail figure measured here (a one-way p99 corrected for coordinated omission
//! cannot be lower than the pause that 1% of the time falls into).

use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;

use super::{CliError, print_json, r3};

/// `nakcast jitter`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    nakcast jitter                                  # 5 s, one spinning thread\n  \
    taskset -c 1 nakcast jitter --duration 10       # watch core 1\n  \
    nakcast jitter --threads 2 --json | tail -1     # both cores of a 2-core host\n\n\
    Each thread spins reading the clock; a gap between two reads longer than --threshold-us is\n\
    a pause (the thread did not run). Reported per run: pauses, the share of time they took,\n\
    their p50/p99/max, and the cost of one clock read. Run it before trusting a p99 from this\n\
    host: if 1% of the time is lost in millisecond pauses, no p99 here can be microseconds.\n\n\
    JSON (--json, last line of stdout): duration_s, threads, threshold_us, clock_read_ns,\n\
    pauses, pauses_per_s (per thread), paused_ms, paused_pct, pause_p50_us, pause_p99_us, pause_max_us,\n\
    pauses_over_1ms, per_thread (pauses, paused_ms, max_us).\n\
    Exit status: 0 (it measures, never judges); 2 for usage errors.")]
pub struct JitterArgs {
    /// How long each thread spins.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = super::parse_secs)]
    duration: Duration,
    /// Spinning threads, each watching the core the scheduler gives it (pin with taskset).
    /// More threads than cores measure the scheduler sharing them, not the host.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    threads: u64,
    /// A gap between two clock reads longer than this is a pause, in microseconds.
    #[arg(long, value_name = "MICROS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    threshold_us: u64,
    /// Print one JSON object on the last line of stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// What one spinning thread saw.
struct Spin {
    /// Pause lengths in nanoseconds.
    pauses: Histogram<u64>,
    paused: Duration,
    reads: u64,
    elapsed: Duration,
}

/// Spin for `duration`, recording every gap between clock reads above `threshold`.
fn spin(duration: Duration, threshold: Duration) -> Spin {
    let mut pauses = Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid bounds");
    let threshold_ns = threshold.as_nanos() as u64;
    let start = Instant::now();
    let mut prev = start;
    let mut paused = Duration::ZERO;
    let mut reads = 0u64;
    loop {
        let now = Instant::now();
        reads += 1;
        let gap = now.duration_since(prev);
        if gap.as_nanos() as u64 > threshold_ns {
            pauses.saturating_record(gap.as_nanos() as u64);
            paused += gap;
        }
        prev = now;
        if now.duration_since(start) >= duration {
            break;
        }
    }
    Spin {
        pauses,
        paused,
        reads,
        elapsed: prev.duration_since(start),
    }
}

/// Run `nakcast jitter`.
pub fn run(a: JitterArgs) -> Result<(), CliError> {
    if a.duration.is_zero() || a.duration > Duration::from_secs(3600) {
        return Err(CliError::Usage(format!(
            "--duration {:?} is not in (0, 3600] seconds",
            a.duration
        )));
    }
    let threshold = Duration::from_micros(a.threshold_us);
    let handles: Vec<_> = (0..a.threads)
        .map(|i| {
            std::thread::Builder::new()
                .name(format!("jitter-{i}"))
                .spawn(move || spin(a.duration, threshold))
                .map_err(|e| CliError::Setup(format!("cannot spawn a thread: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let spins: Vec<Spin> = handles
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        .collect();

    let mut all = Histogram::<u64>::new_with_bounds(1, 100_000_000_000, 3).expect("bounds");
    for s in &spins {
        all.add(&s.pauses).expect("same bounds");
    }
    let paused: Duration = spins.iter().map(|s| s.paused).sum();
    let elapsed: Duration = spins.iter().map(|s| s.elapsed).sum(); // thread-seconds
    let reads: u64 = spins.iter().map(|s| s.reads).sum();
    let unpaused = elapsed.saturating_sub(paused);
    let clock_read_ns = unpaused.as_nanos() as f64 / reads.max(1) as f64;
    let paused_pct = 100.0 * paused.as_secs_f64() / elapsed.as_secs_f64().max(1e-9);
    let us = |ns: u64| r3(ns as f64 / 1000.0);
    let q = |x: f64| (!all.is_empty()).then(|| us(all.value_at_quantile(x)));
    let over_1ms = all.count_between(1_000_000, u64::MAX);
    let per_thread: Vec<_> = spins
        .iter()
        .map(|s| {
            json!({
                "pauses": s.pauses.len(),
                "paused_ms": r3(s.paused.as_secs_f64() * 1e3),
                "max_us": us(s.pauses.max()),
            })
        })
        .collect();
    if a.json {
        print_json(&json!({
            "duration_s": r3(a.duration.as_secs_f64()),
            "threads": a.threads,
            "threshold_us": a.threshold_us,
            "clock_read_ns": r3(clock_read_ns),
            "pauses": all.len(),
            "pauses_per_s": r3(all.len() as f64 / elapsed.as_secs_f64().max(1e-9)),
            "paused_ms": r3(paused.as_secs_f64() * 1e3),
            "paused_pct": r3(paused_pct),
            "pause_p50_us": q(0.5),
            "pause_p99_us": q(0.99),
            "pause_max_us": q(1.0),
            "pauses_over_1ms": over_1ms,
            "per_thread": per_thread,
        }));
        return Ok(());
    }
    println!(
        "jitter: {} thread(s) x {:.1} s spinning on the clock (one read every {clock_read_ns:.1} ns)",
        a.threads,
        a.duration.as_secs_f64()
    );
    for (i, s) in spins.iter().enumerate() {
        println!(
            "  thread {i}: {} pauses over {} µs, {:.3} ms paused in all, longest {:.1} µs",
            s.pauses.len(),
            a.threshold_us,
            s.paused.as_secs_f64() * 1e3,
            s.pauses.max() as f64 / 1e3
        );
    }
    match (q(0.5), q(0.99), q(1.0)) {
        (Some(p50), Some(p99), Some(max)) => println!(
            "  pauses: p50 {p50} µs, p99 {p99} µs, max {max} µs; {over_1ms} over 1 ms; \
             {paused_pct:.3}% of the time paused, {:.0} pauses/s per thread",
            all.len() as f64 / elapsed.as_secs_f64().max(1e-9)
        ),
        _ => println!("  no pause over {} µs", a.threshold_us),
    }
    Ok(())
}
