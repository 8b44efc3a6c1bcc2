//! Runs every example binary with small bounded arguments on loopback, so the examples
//! cannot rot: each must exit successfully and print the figures it promises.
//!
//! The binaries are the ones `cargo test` builds next to this test (`target/*/examples/`);
//! when only this test was selected (`cargo test --test examples`), they are built first
//! with the same profile. Every test uses its own multicast group and a free port, and
//! every process is killed if it outlives its deadline.

mod support;
use support::free_port;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// Path of the example binary `name`, built (once per test process) if need be.
fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    let exe = std::env::current_exe().expect("test executable path");
    let target_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps")
        .to_path_buf();
    BUILT.get_or_init(|| {
        // `cargo test` builds the examples with the `test` profile (`bench` under
        // `--release`); building them again is a no-op then, and makes
        // `cargo test --test examples` run fresh binaries.
        let profile = match target_dir.file_name().and_then(|n| n.to_str()) {
            Some("release") => "bench",
            _ => "test",
        };
        if let Ok(cargo) = std::env::var("CARGO") {
            let out = Command::new(cargo)
                .args(["build", "--quiet", "--examples", "--profile", profile])
                .output()
                .expect("run cargo build --examples");
            assert!(
                out.status.success(),
                "cargo build --examples failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    });
    let path = target_dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A running example whose stdout lines arrive on a channel.
struct Running {
    name: &'static str,
    child: Child,
    lines: Receiver<String>,
    out: String,
}

fn spawn(name: &'static str, args: &[&str]) -> Running {
    let mut child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        name,
        child,
        lines,
        out: String::new(),
    }
}

impl Running {
    /// Wait for a stdout line containing `needle`.
    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.out.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.out.push_str(&l);
                    self.out.push('\n');
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "{} never printed {needle:?}; output:\n{}",
                        self.name, self.out
                    );
                }
            }
        }
    }

    /// Wait for exit (killing it past `timeout`), assert success, return all of stdout.
    fn finish(self, timeout: Duration) -> String {
        let name = self.name;
        let (status, out) = self.exit(timeout);
        assert!(status.success(), "{name} failed ({status}):\n{out}");
        out
    }

    /// Wait for exit (killing it past `timeout`); its status and all of stdout.
    fn exit(mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} still running after {timeout:?}; output:\n{}",
                    self.name, self.out
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The reader thread ends at EOF once the process is gone.
        while let Ok(l) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.out.push_str(&l);
            self.out.push('\n');
        }
        println!("--- {} ---\n{}", self.name, self.out);
        (status, self.out)
    }
}

fn run(name: &'static str, args: &[&str], timeout: Duration) -> String {
    spawn(name, args).finish(timeout)
}

/// The value of the first `key=NUMBER` token in `out`.
fn field(out: &str, key: &str) -> f64 {
    let pat = format!("{key}=");
    out.split_whitespace()
        .find_map(|tok| tok.strip_prefix(&pat))
        .and_then(|v| {
            v.trim_end_matches(|c: char| !c.is_ascii_digit())
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {key}=N in:\n{out}"))
}

fn group(byte: u8) -> String {
    format!("239.255.91.{byte}:{}", free_port())
}

#[test]
fn book_subscriber_follows_the_feed_across_a_publisher_restart() {
    let g = group(1);
    let mut sub = spawn(
        "book_subscriber",
        &[
            "--external",
            "true",
            "--group",
            &g,
            "--instruments",
            "200",
            "--idle-timeout-ms",
            "3000",
            "--max-duration-ms",
            "10000",
        ],
    );
    sub.wait_for("book: listening", Duration::from_secs(10));
    let p = run(
        "market_data_publisher",
        &[
            "--group",
            &g,
            "--instruments",
            "200",
            "--rate",
            "20000",
            "--burst",
            "1000",
            "--duration-ms",
            "1200",
            "--restart-at-ms",
            "600",
            "--linger-ms",
            "200",
        ],
        Duration::from_secs(10),
    );
    let s = sub.finish(Duration::from_secs(10));
    assert_eq!(field(&p, "sessions"), 2.0);
    assert!(field(&p, "messages") > 10_000.0, "{p}");
    assert!(p.contains("msgs/s") && p.contains("repairs served:"), "{p}");
    assert!(s.contains("done (publisher closed)"), "{s}");
    assert_eq!(field(&s, "restarts"), 1.0);
    assert_eq!(field(&s, "rebuilds"), 1.0);
    assert_eq!(field(&s, "inconsistent"), 0.0);
    assert!(
        field(&s, "quotes") > 5_000.0 && field(&s, "trades") > 1_000.0,
        "{s}"
    );
    // The final snapshot round leaves every instrument valid.
    assert_eq!(field(&s, "valid"), 200.0, "{s}");
    assert_eq!(field(&s, "bad"), 0.0);
}

#[test]
fn book_subscriber_marks_instruments_stale_on_loss() {
    let g = group(2);
    let mut sub = spawn(
        "book_subscriber",
        &[
            "--external",
            "true",
            "--group",
            &g,
            "--loss",
            "0.02",
            "--loss-deadline-ms",
            "0",
            "--idle-timeout-ms",
            "3000",
            "--max-duration-ms",
            "10000",
        ],
    );
    sub.wait_for("book: listening", Duration::from_secs(10));
    let p = run(
        "market_data_publisher",
        &[
            "--group",
            &g,
            "--rate",
            "20000",
            "--duration-ms",
            "1200",
            "--send-rate",
            "500000",
            "--linger-ms",
            "200",
        ],
        Duration::from_secs(10),
    );
    let s = sub.finish(Duration::from_secs(10));
    // The cap on new data is met and handled, not turned into an error.
    assert!(field(&p, "rate_limited") > 0.0, "{p}");
    assert!(field(&p, "naks_received") > 0.0, "{p}");
    // Injected loss given up at once: Loss events, stale instruments, and their recovery
    // through snapshots; never a silently skipped quote.
    assert!(field(&s, "loss_events") > 0.0, "{s}");
    assert!(field(&s, "stale_marks") > 0.0, "{s}");
    assert!(field(&s, "recovered_instruments") > 0.0, "{s}");
    assert!(field(&s, "ignored") > 0.0, "{s}");
    assert_eq!(field(&s, "inconsistent"), 0.0, "{s}");
}

/// The final report of book_subscriber: the lines from `book: done` on (the per-second
/// status lines before it use some of the same keys).
fn book_summary(out: &str) -> &str {
    let at = out
        .find("book: done")
        .unwrap_or_else(|| panic!("no summary in:\n{out}"));
    &out[at..]
}

#[test]
fn book_subscriber_runs_on_its_own_with_loss_and_a_restart() {
    // The defaults (`cargo run --example book_subscriber`): an in-process feed that
    // restarts half-way, 1% of datagrams dropped and given up at once.
    let g = group(5);
    let out = run(
        "book_subscriber",
        &["--group", &g, "--instruments", "200"],
        Duration::from_secs(20),
    );
    let s = book_summary(&out);
    assert!(s.contains("done (publisher closed)"), "{out}");
    assert!(out.contains("publisher: crashed and restarted"), "{out}");
    assert!(out.contains("book: publisher ") && out.contains(" restarted (session "));
    assert_eq!(field(s, "restarts"), 1.0, "{out}");
    assert_eq!(field(s, "rebuilds"), 1.0, "{out}");
    assert_eq!(field(s, "sessions"), 2.0, "{out}");
    assert!(field(s, "injected_drops") > 0.0, "{out}");
    assert!(field(s, "loss_events") > 0.0, "{out}");
    assert!(field(s, "stale_marks") > 0.0, "{out}");
    assert!(field(s, "recovered_instruments") > 0.0, "{out}");
    assert_eq!(field(s, "inconsistent"), 0.0, "{out}");
    assert_eq!(field(s, "bad"), 0.0, "{out}");
    // What the publisher sent was delivered or reported lost (all of it but, at most, the
    // very tail of the crashed session, if its last datagrams were the ones dropped).
    let published = field(
        &s[s.find("publisher: done").expect("publisher summary")..],
        "messages",
    );
    let accounted = field(s, "messages") + field(s, "lost_seqs");
    assert!(
        accounted <= published && accounted >= published - 1000.0,
        "{out}"
    );
}

#[test]
fn book_subscriber_without_its_external_publisher_fails() {
    let g = group(6);
    let (status, out) = spawn(
        "book_subscriber",
        &["--external", "true", "--group", &g, "--wait-ms", "300"],
    )
    .exit(Duration::from_secs(10));
    assert!(!status.success(), "{out}");
    assert!(out.contains("done (no publisher)"), "{out}");
}

#[test]
fn latency_subscriber_records_every_message() {
    let g = group(3);
    let out = run(
        "latency_subscriber",
        &[
            "--group",
            &g,
            "--rate",
            "5000",
            "--duration-ms",
            "1000",
            "--warmup-ms",
            "100",
        ],
        Duration::from_secs(15),
    );
    let sent = field(&out, "sent");
    assert!(sent > 2_000.0, "{out}");
    // Every message sent is either a warm-up message or a latency sample.
    assert_eq!(
        field(&out, "samples") + field(&out, "warmup"),
        sent,
        "{out}"
    );
    assert_eq!(field(&out, "lost"), 0.0, "{out}");
    assert_eq!(field(&out, "bad"), 0.0, "{out}");
    let (p50, p99, max) = (
        field(&out, "p50_us"),
        field(&out, "p99_us"),
        field(&out, "max_us"),
    );
    assert!(p50 > 0.0 && p50 <= p99 && p99 <= max, "{out}");
}

/// Checks unicast_fanout's report: every subscriber got every message.
fn check_fanout(out: &str, subscribers: usize) {
    let publisher = out
        .lines()
        .find(|l| l.starts_with("fanout: publisher messages="))
        .unwrap_or_else(|| panic!("no publisher line in:\n{out}"));
    let sent = field(publisher, "messages");
    assert!(sent > 1_000.0, "{out}");
    assert_eq!(field(publisher, "destinations_added"), subscribers as f64);
    let subs: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("fanout: subscriber "))
        .collect();
    assert_eq!(subs.len(), subscribers, "{out}");
    for l in subs {
        assert_eq!(field(l, "messages"), sent, "{l}");
        assert_eq!(field(l, "loss_events"), 0.0, "{l}");
        assert_eq!(field(l, "inconsistent"), 0.0, "{l}");
        assert_eq!(field(l, "valid"), 100.0, "{l}");
        assert!(l.ends_with("closed=true"), "{l}");
    }
}

#[test]
fn unicast_fanout_subscribers_register_and_get_everything() {
    let publisher = format!("127.0.0.1:{}", free_port());
    let out = run(
        "unicast_fanout",
        &[
            "--publisher",
            &publisher,
            "--subscribers",
            "3",
            "--instruments",
            "100",
            "--rate",
            "10000",
            "--duration-ms",
            "800",
        ],
        Duration::from_secs(20),
    );
    assert!(out.contains("3 registered destinations"), "{out}");
    check_fanout(&out, 3);
}

#[test]
fn unicast_fanout_static_destinations_repair_losses() {
    let publisher = format!("127.0.0.1:{}", free_port());
    let out = run(
        "unicast_fanout",
        &[
            "--publisher",
            &publisher,
            "--subscribers",
            "2",
            "--static-destinations",
            "true",
            "--instruments",
            "100",
            "--rate",
            "10000",
            "--duration-ms",
            "800",
            "--loss",
            "0.02",
        ],
        Duration::from_secs(20),
    );
    assert!(out.contains("2 static destinations"), "{out}");
    check_fanout(&out, 2);
    assert!(field(&out, "retransmits") > 0.0, "{out}");
    for l in out.lines().filter(|l| l.starts_with("fanout: subscriber ")) {
        assert!(field(l, "recovered") > 0.0, "{l}");
    }
}

#[test]
fn embedded_bench_prints_the_bench_json() {
    let out = run(
        "embedded_bench",
        &[
            "--group",
            "239.255.91.4",
            "--count",
            "50000",
            "--subscribers",
            "2",
            "--loss",
            "2",
        ],
        Duration::from_secs(20),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("one JSON object");
    let n = |k: &str| {
        v[k].as_f64()
            .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
    };
    assert_eq!(n("delivered"), 100_000.0);
    assert_eq!(n("lost"), 0.0);
    assert_eq!(n("out_of_order"), 0.0);
    assert!(n("msgs_per_s") > 0.0 && n("elapsed_s") > 0.0, "{v}");
    assert!(n("p50_us") > 0.0 && n("p50_us") <= n("p99_us"), "{v}");
    // 2% injected loss: repairs happened, and their latency was measured.
    assert!(n("injected_drops") > 0.0 && n("retransmitted") > 0.0, "{v}");
    assert!(n("recovered") > 0.0 && n("repair_samples") > 0.0, "{v}");
    assert!(
        n("repair_p50_us") > 0.0 && n("repair_p50_us") <= n("repair_p99_us"),
        "{v}"
    );

    // The same field names as `nakcast bench --json`: both run `nakcast::bench::run`.
    let cli = Command::new(env!("CARGO_BIN_EXE_nakcast"))
        .args(["bench", "--count", "2000", "--subscribers", "1", "--json"])
        .output()
        .expect("run nakcast bench");
    assert!(cli.status.success(), "{cli:?}");
    let stdout = String::from_utf8_lossy(&cli.stdout);
    let c: serde_json::Value =
        serde_json::from_str(stdout.lines().last().expect("a JSON line")).expect("JSON");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v.as_object().expect("an object").keys().cloned().collect()
    };
    assert_eq!(keys(&v), keys(&c));
}
