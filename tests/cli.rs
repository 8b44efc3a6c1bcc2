//! The `nakcast` binary end to end over loopback multicast: small counts, bounded time, free
//! ports, and child processes killed even when a test fails.

mod support;
use support::free_port;

use std::net::UdpSocket;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_nakcast");

/// The tests below busy-poll (ping, pong, bench): run them one at a time on small machines.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A group unique to this test and a free port.
fn group(tag: u8) -> String {
    let port = free_port();
    format!("239.255.{}.{}:{port}", 150 + tag, port % 250 + 1)
}

/// A child process killed on drop.
struct Proc(Option<Child>);

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nakcast");
        Proc(Some(child))
    }

    /// Wait up to `limit` for exit (killing it after), returning its output.
    fn wait(mut self, limit: Duration) -> Output {
        let mut child = self.0.take().expect("waited once");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if child.try_wait().expect("try_wait").is_some() {
                return child.wait_with_output().expect("output");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let out = child.wait_with_output().expect("output");
        panic!(
            "nakcast did not finish within {limit:?}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(args: &[&str], limit: Duration) -> Output {
    Proc::spawn(args).wait(limit)
}

/// The JSON object on the last line of stdout.
fn last_json(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "no output; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(line).unwrap_or_else(|e| {
        panic!(
            "last line is not JSON ({e}): {line}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} missing or not an integer in {v}"))
}

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} missing or not a number in {v}"))
}

#[test]
fn pub_and_two_verifying_subscribers() {
    let _g = serial();
    let g = group(1);
    let common = ["--group", &g, "--interface", "127.0.0.1", "--stream", "3"];
    let mut sub_args = vec!["sub"];
    sub_args.extend(common);
    sub_args.extend([
        "--count",
        "5000",
        "--verify",
        "--from-oldest",
        "--idle-timeout",
        "10",
        "--json",
    ]);
    let s1 = Proc::spawn(&sub_args);
    // The second busy-polls instead of blocking in epoll.
    let mut spin_args = sub_args.clone();
    spin_args.extend(["--idle", "spin"]);
    let s2 = Proc::spawn(&spin_args);
    std::thread::sleep(Duration::from_millis(300));
    let mut pub_args = vec!["pub"];
    pub_args.extend(common);
    // A 1 MiB ring (--ring-bytes) still retains all 5000 messages.
    pub_args.extend([
        "--count",
        "5000",
        "--rate",
        "25000",
        "--linger",
        "1",
        "--ring-bytes",
        "1048576",
        "--json",
    ]);
    let p = run(&pub_args, Duration::from_secs(20));
    assert!(p.status.success(), "pub: {}", describe(&p));
    let pj = last_json(&p);
    assert_eq!(u(&pj, "sent"), 5000, "{pj}");
    assert_eq!(u(&pj, "bytes"), 5000 * 64, "{pj}");
    for k in [
        "naks_received",
        "retransmitted",
        "repair_copies_sent",
        "unavailable",
    ] {
        u(&pj, k);
    }
    assert!(
        f(&pj, "msgs_per_s") > 0.0 && f(&pj, "elapsed_s") > 0.0,
        "{pj}"
    );

    for s in [s1, s2] {
        let out = s.wait(Duration::from_secs(20));
        assert!(out.status.success(), "sub: {}", describe(&out));
        let j = last_json(&out);
        assert_eq!(u(&j, "delivered"), 5000, "{j}");
        for k in ["lost", "duplicates", "out_of_order", "corrupt"] {
            assert_eq!(u(&j, k), 0, "{k}: {j}");
        }
        u(&j, "naks_sent");
        u(&j, "recovered");
        // Repair latency fields: null without repairs, numbers with.
        for k in ["repair_p50_us", "repair_p90_us", "repair_p99_us"] {
            assert!(j.get(k).is_some(), "{k}: {j}");
        }
        assert_eq!(u(&j, "repair_samples"), u(&j, "recovered"), "{j}");
        assert_eq!(u(&j, "sessions"), 1, "{j}");
        assert!(
            f(&j, "msgs_per_s") > 0.0 && f(&j, "elapsed_s") >= 0.0,
            "{j}"
        );
    }
}

#[test]
fn sub_without_publisher_fails_with_exit_1() {
    let _g = serial();
    let g = group(2);
    let out = run(
        &[
            "sub",
            "--group",
            &g,
            "--interface",
            "127.0.0.1",
            "--count",
            "10",
            "--idle-timeout",
            "0.3",
            "--json",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(u(&last_json(&out), "delivered"), 0);
}

#[test]
fn bench_recovers_injected_loss() {
    let _g = serial();
    let out = run(
        &[
            "bench",
            "--subscribers",
            "2",
            "--count",
            "50000",
            "--loss",
            "5",
            "--json",
        ],
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let j = last_json(&out);
    assert_eq!(u(&j, "lost"), 0, "{j}");
    assert!(u(&j, "recovered") > 0, "{j}");
    assert!(u(&j, "injected_drops") > 0, "{j}");
    assert!(u(&j, "retransmitted") > 0 && u(&j, "naks_sent") > 0, "{j}");
    assert_eq!(u(&j, "delivered"), 100_000, "{j}");
    for k in [
        "msgs_per_s",
        "p50_us",
        "p99_us",
        "p90_us",
        "p999_us",
        "max_us",
    ] {
        assert!(f(&j, k) > 0.0, "{k}: {j}");
    }
    assert!(f(&j, "p50_us") <= f(&j, "p99_us"), "{j}");
    // Repair latency: one sample per recovered fragment, gap detection to delivery.
    assert_eq!(u(&j, "repair_samples"), u(&j, "recovered"), "{j}");
    assert!(f(&j, "repair_p50_us") > 0.0, "{j}");
    assert!(f(&j, "repair_p50_us") <= f(&j, "repair_p90_us"), "{j}");
    assert!(f(&j, "repair_p90_us") <= f(&j, "repair_p99_us"), "{j}");
    // Scripts depend on these names (`nakcast::bench::BenchReport` serialized): exactly them.
    let mut keys: Vec<&str> = j.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    keys.sort_unstable();
    let mut want = vec![
        "subscribers",
        "count",
        "size",
        "rate",
        "loss_pct",
        "delivered",
        "elapsed_s",
        "send_s",
        "msgs_per_s",
        "mb_per_s",
        "p50_us",
        "p90_us",
        "p99_us",
        "p999_us",
        "max_us",
        "mean_us",
        "samples",
        "injected_drops",
        "gaps",
        "recovered",
        "lost",
        "reported_lost",
        "unreported_lost",
        "out_of_order",
        "naks_sent",
        "repair_p50_us",
        "repair_p90_us",
        "repair_p99_us",
        "repair_max_us",
        "repair_samples",
        "naks_received",
        "retransmitted",
        "repair_copies_sent",
        "unavailable",
        "data_frames",
        "send_errors",
        "auth",
        "auth_failures",
    ];
    want.sort_unstable();
    assert_eq!(keys, want, "{j}");
    // The human table precedes the JSON line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("latency"), "{stdout}");
}

#[test]
fn pub_and_sub_raw_baseline() {
    let _g = serial();
    let g = group(5);
    let common = ["--group", &g, "--interface", "127.0.0.1", "--raw", "--json"];
    let mut sub_args = vec!["sub", "--count", "2000", "--verify", "--idle-timeout", "10"];
    sub_args.extend(common);
    let sub = Proc::spawn(&sub_args);
    std::thread::sleep(Duration::from_millis(300));
    let mut pub_args = vec!["pub", "--count", "2000", "--rate", "20000", "--size", "100"];
    pub_args.extend(common);
    let p = run(&pub_args, Duration::from_secs(20));
    assert!(p.status.success(), "pub: {}", describe(&p));
    let pj = last_json(&p);
    assert_eq!(u(&pj, "sent"), 2000, "{pj}");
    assert_eq!(pj["raw"].as_bool(), Some(true), "{pj}");
    let out = sub.wait(Duration::from_secs(20));
    assert!(out.status.success(), "sub: {}", describe(&out));
    let j = last_json(&out);
    assert_eq!(u(&j, "delivered"), 2000, "{j}");
    assert_eq!(u(&j, "corrupt") + u(&j, "lost"), 0, "{j}");
    assert!(f(&j, "mb_per_s") > 0.0, "{j}");
}

/// Sends one datagram per index as `pub --raw` would (the 8-byte index, no more) to
/// `group` over loopback.
fn send_raw_indices(group: &str, indices: &[u64]) {
    let Ok(interface) = "127.0.0.1".parse::<nakcast::Interface>();
    let cfg = nakcast::SocketConfig {
        interface,
        ..nakcast::SocketConfig::default()
    };
    let dest = group.parse().expect("ADDR:PORT");
    let s = nakcast::transport::open_sender(dest, &cfg)
        .expect("a sender on 127.0.0.1")
        .socket;
    for i in indices {
        s.send(&i.to_le_bytes()).expect("send");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A socket joined to `group` on loopback, blocking up to 100 ms per receive.
fn loopback_receiver(group: &str) -> UdpSocket {
    let Ok(interface) = "127.0.0.1".parse::<nakcast::Interface>();
    let cfg = nakcast::SocketConfig {
        interface,
        ..nakcast::SocketConfig::default()
    };
    let s = nakcast::transport::open_multicast_receiver(group.parse().expect("ADDR:PORT"), &cfg)
        .expect("a receiver on 127.0.0.1")
        .socket;
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    s
}

#[test]
fn sub_raw_fails_on_loss_and_reordering() {
    let _g = serial();
    // (indices sent, lost, out of order): 2 never sent; 2 before 1.
    for (tag, indices, lost, out_of_order) in [(22, [0, 1, 3], 1, 0), (23, [0, 2, 1], 0, 1)] {
        let g = group(tag);
        let sub = Proc::spawn(&[
            "sub",
            "--raw",
            "--group",
            &g,
            "--interface",
            "127.0.0.1",
            "--count",
            "3",
            "--idle-timeout",
            "5",
            "--json",
        ]);
        std::thread::sleep(Duration::from_millis(300));
        send_raw_indices(&g, &indices);
        let out = sub.wait(Duration::from_secs(10));
        let j = last_json(&out);
        assert_eq!(u(&j, "delivered"), 3, "{indices:?}: {j}");
        assert_eq!(u(&j, "lost"), lost, "{indices:?}: {j}");
        assert_eq!(u(&j, "out_of_order"), out_of_order, "{indices:?}: {j}");
        assert_eq!(
            out.status.code(),
            Some(1),
            "{indices:?}: {}",
            describe(&out)
        );
    }
}

#[test]
fn sub_reports_a_publisher_restart() {
    let _g = serial();
    let g = group(24);
    let source_port = free_port().to_string();
    let common = ["--group", &g, "--interface", "127.0.0.1"];
    let sub = |json: bool| {
        let mut args = vec!["sub"];
        args.extend(common);
        args.extend(["--idle-timeout", "5"]);
        if json {
            args.push("--json");
        }
        Proc::spawn(&args)
    };
    let (with_json, human) = (sub(true), sub(false));
    std::thread::sleep(Duration::from_millis(300));
    let pub_args = ["pub", "--group", &g, "--interface", "127.0.0.1"];
    let pub_args = [&pub_args[..], &["--source-port", &source_port]].concat();
    // A publisher killed mid-stream (no CLOSE), then a new one on the same source port: a
    // new session of the same source.
    let listener = loopback_receiver(&g);
    let first = Proc::spawn(&[&pub_args[..], &["--rate", "2000", "--count", "1000000"]].concat());
    // Kill it only once it is heard on the group, and a while after (the subscribers must
    // have heard it too), however slow the machine.
    let mut buf = [0u8; 2048];
    let deadline = Instant::now() + Duration::from_secs(10);
    while listener.recv(&mut buf).is_err() {
        assert!(
            Instant::now() < deadline,
            "the first publisher was never heard"
        );
    }
    std::thread::sleep(Duration::from_millis(1000));
    drop(first);
    let second = [
        "--count", "500", "--rate", "5000", "--linger", "0.5", "--json",
    ];
    let p = run(&[&pub_args[..], &second].concat(), Duration::from_secs(20));
    assert!(p.status.success(), "pub: {}", describe(&p));
    let session = last_json(&p)["session"]
        .as_str()
        .expect("session")
        .to_string();

    let out = with_json.wait(Duration::from_secs(20));
    let j = last_json(&out);
    assert_eq!(u(&j, "restarts"), 1, "{}", describe(&out));
    assert_eq!(u(&j, "sessions"), 2, "{j}");
    let out = human.wait(Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("restarted: new session {session}")),
        "{}",
        describe(&out)
    );
}

/// `text` is an HdrHistogram percentile distribution (the `.hgrm` text format) of `count`
/// samples: the column header, rows of value / percentile (rising to 1) / count /
/// 1/(1-percentile), then the `#[Mean ...]` and `#[Max ..., Total count ...]` footer.
fn check_hgrm(text: &str, count: u64) {
    let header: Vec<&str> = text
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"],
        "{text}"
    );
    let rows: Vec<Vec<f64>> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.split_whitespace()
                .map(|x| x.parse().unwrap_or_else(|_| panic!("bad row {l:?}")))
                .collect()
        })
        .collect();
    assert!(rows.len() > 10, "{text}");
    for w in rows.windows(2) {
        // Values and percentiles never decrease.
        assert!(w[0][0] <= w[1][0] && w[0][1] <= w[1][1], "{text}");
    }
    let (first, last) = (&rows[0], &rows[rows.len() - 1]);
    assert!(
        first[0] > 0.0 && first[1] >= 0.0 && first[1] < 0.5,
        "{text}"
    );
    assert_eq!(last[1], 1.0, "{text}");
    let total: f64 = rows.iter().map(|r| r[2]).sum();
    assert_eq!(total, count as f64, "{text}");
    assert!(text.contains("#[Mean    ="), "{text}");
    assert!(
        text.contains(&format!("Total count    = {count:>12}]")),
        "{text}"
    );
}

fn ping_pong(raw: bool) {
    ping_pong_idle(raw, "spin");
}

fn ping_pong_idle(raw: bool, idle: &str) {
    let g = group(if raw { 4 } else { 3 });
    let reply = format!("239.255.160.1:{}", free_port());
    let mut args = vec![
        "--group",
        &g,
        "--reply-group",
        &reply,
        "--interface",
        "127.0.0.1",
        "--idle",
        idle,
    ];
    if raw {
        args.push("--raw");
    }
    let mut pong_args = vec!["pong", "--idle-timeout", "30"];
    pong_args.extend(&args);
    let pong = Proc::spawn(&pong_args);
    let plot = std::env::temp_dir().join(format!(
        "nakcast-ping-{}-{idle}-{raw}.svg",
        std::process::id()
    ));
    let plot_s = plot.to_string_lossy().to_string();
    let hgrm = plot.with_extension("hgrm");
    let hgrm_s = hgrm.to_string_lossy().to_string();
    let mut ping_args = vec!["ping", "--count", "2000", "--warmup", "100", "--json"];
    ping_args.extend(&args);
    ping_args.extend(["--plot", &plot_s, "--hgrm", &hgrm_s]);
    let out = run(&ping_args, Duration::from_secs(30));
    drop(pong);
    let svg = std::fs::read_to_string(&plot).unwrap_or_default();
    let _ = std::fs::remove_file(&plot);
    let hgrm_text = std::fs::read_to_string(&hgrm);
    let _ = std::fs::remove_file(&hgrm);
    assert!(
        svg.starts_with("<svg") && svg.contains("99%"),
        "--plot wrote {svg:.200}"
    );
    assert!(out.status.success(), "{}", describe(&out));
    let hgrm_text = hgrm_text.unwrap_or_else(|e| panic!("--hgrm wrote no {hgrm_s}: {e}"));
    check_hgrm(&hgrm_text, 2000);
    let j = last_json(&out);
    assert_eq!(u(&j, "count"), 2000, "{j}");
    assert_eq!(j["raw"].as_bool(), Some(raw), "{j}");
    for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us"] {
        assert!(f(&j, k) > 0.0, "{k}: {j}");
    }
    assert!(f(&j, "p50_us") <= f(&j, "p99_us") && f(&j, "p99_us") <= f(&j, "max_us"));
}

#[test]
fn ping_pong_over_the_protocol() {
    let _g = serial();
    ping_pong(false);
}

#[test]
fn ping_pong_raw_baseline() {
    let _g = serial();
    ping_pong(true);
}

#[test]
fn ping_pong_blocking_and_backoff() {
    let _g = serial();
    ping_pong_idle(false, "block");
    ping_pong_idle(true, "backoff");
}

#[test]
fn ping_without_pong_is_a_setup_error() {
    let _g = serial();
    let g = group(5);
    let out = run(
        &[
            "ping",
            "--group",
            &g,
            "--interface",
            "127.0.0.1",
            "--connect-timeout",
            "0.3",
        ],
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nakcast pong"));
}

#[test]
fn doctor_on_loopback() {
    let _g = serial();
    let out = run(
        &["doctor", "--interface", "127.0.0.1", "--json"],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let j = last_json(&out);
    assert_eq!(j["ok"].as_bool(), Some(true), "{j}");
    let checks = j["checks"].as_array().expect("checks");
    assert!(
        checks
            .iter()
            .any(|c| c["name"] == "loopback delivery" && c["status"] == "pass"),
        "{j}"
    );
    let bad = run(
        &["doctor", "--interface", "no-such-if0"],
        Duration::from_secs(10),
    );
    assert_eq!(bad.status.code(), Some(1), "{}", describe(&bad));
    assert!(String::from_utf8_lossy(&bad.stdout).contains("fix:"));
}

/// `jitter` accounts for every pause it reports: the paused time is the sum over threads,
/// within the time spun, and the pause quantiles are ordered and above the threshold.
#[test]
fn jitter_accounts_for_the_pauses_it_reports() {
    let _g = serial();
    let out = run(
        &[
            "jitter",
            "--duration",
            "0.3",
            "--threads",
            "2",
            "--threshold-us",
            "5",
            "--json",
        ],
        Duration::from_secs(10),
    );
    assert!(out.status.success(), "{}", describe(&out));
    let j = last_json(&out);
    assert_eq!(u(&j, "threads"), 2, "{j}");
    let per = j["per_thread"].as_array().expect("per_thread");
    assert_eq!(per.len(), 2, "{j}");
    let sum_pauses: u64 = per.iter().map(|t| t["pauses"].as_u64().unwrap()).sum();
    assert_eq!(sum_pauses, u(&j, "pauses"), "{j}");
    let sum_ms: f64 = per.iter().map(|t| t["paused_ms"].as_f64().unwrap()).sum();
    assert!((sum_ms - f(&j, "paused_ms")).abs() < 0.01, "{j}");
    // Two threads spun 0.3 s each: at most 600 ms can have been paused.
    assert!(f(&j, "paused_ms") <= 600.0 + 1.0, "{j}");
    let pct = f(&j, "paused_pct");
    assert!((0.0..=100.0).contains(&pct), "{j}");
    let read = f(&j, "clock_read_ns");
    assert!(read > 0.0 && read < 5_000.0, "{j}");
    if u(&j, "pauses") > 0 {
        let (p50, p99, max) = (
            f(&j, "pause_p50_us"),
            f(&j, "pause_p99_us"),
            f(&j, "pause_max_us"),
        );
        assert!(5.0 <= p50 && p50 <= p99 && p99 <= max, "{j}");
        assert!(u(&j, "pauses_over_1ms") <= u(&j, "pauses"), "{j}");
    } else {
        assert!(
            j["pause_p50_us"].is_null() && f(&j, "paused_ms") == 0.0,
            "{j}"
        );
    }
    // The table form names each thread.
    let table = run(&["jitter", "--duration", "0.1"], Duration::from_secs(10));
    assert!(table.status.success(), "{}", describe(&table));
    assert!(String::from_utf8_lossy(&table.stdout).contains("thread 0:"));
}

#[test]
fn usage_and_setup_errors_exit_2() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["sub"],
        &["pub", "--group", "not-an-address"],
        &["bench", "--loss", "150"],
        &["bench", "--size", "4"],
        &["jitter", "--duration", "0"],
        &["jitter", "--threshold-us", "0"],
        &["ping", "--group", "239.255.0.1:1", "--size", "100000"],
        &[
            "sub",
            "--group",
            "239.255.0.1:40999",
            "--interface",
            "no-such-if0",
        ],
    ];
    for args in cases {
        let out = run(args, Duration::from_secs(10));
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn every_subcommand_has_help_with_an_example() {
    for sub in ["pub", "sub", "ping", "pong", "bench", "doctor", "jitter"] {
        let out = run(&[sub, "--help"], Duration::from_secs(10));
        assert!(out.status.success(), "{sub}: {}", describe(&out));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Examples"), "{sub} --help: {text}");
        assert!(text.contains("nakcast "), "{sub} --help: {text}");
    }
}

#[test]
fn authenticated_pub_sub_and_a_subscriber_with_the_wrong_key() {
    let _g = serial();
    let g = group(21);
    let key = "7f".repeat(32);
    let wrong = "80".repeat(32);
    let key_file = std::env::temp_dir().join(format!("nakcast-cli-key-{}", std::process::id()));
    std::fs::write(&key_file, format!("# test key\n5 {key}\n")).unwrap();
    let key_file_s = key_file.to_str().unwrap();
    let common = ["--group", &g, "--interface", "127.0.0.1"];
    let sub = |auth: &[&str], idle: &str| {
        let mut args = vec!["sub"];
        args.extend(common);
        args.extend(auth);
        args.extend([
            "--count",
            "2000",
            "--verify",
            "--idle-timeout",
            idle,
            "--json",
        ]);
        Proc::spawn(&args)
    };
    let good = sub(&["--key-file", key_file_s], "10");
    let bad = sub(&["--key", &wrong, "--key-id", "5"], "3");
    std::thread::sleep(Duration::from_millis(300));
    let mut pub_args = vec!["pub"];
    pub_args.extend(common);
    pub_args.extend(["--key-file", key_file_s, "--key-id", "5"]);
    pub_args.extend([
        "--count", "2000", "--rate", "20000", "--linger", "0.5", "--json",
    ]);
    let p = run(&pub_args, Duration::from_secs(20));
    std::fs::remove_file(&key_file).unwrap();
    assert!(p.status.success(), "pub: {}", describe(&p));
    assert_eq!(u(&last_json(&p), "auth_failures"), 0);

    let out = good.wait(Duration::from_secs(20));
    assert!(out.status.success(), "sub: {}", describe(&out));
    let j = last_json(&out);
    assert_eq!(u(&j, "delivered"), 2000, "{j}");
    assert_eq!(u(&j, "auth_failures"), 0, "{j}");

    let out = bad.wait(Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "wrong key: {}", describe(&out));
    let j = last_json(&out);
    assert_eq!(u(&j, "delivered"), 0, "{j}");
    assert!(u(&j, "auth_failures") >= 1000, "{j}");

    // A key makes no sense for plain UDP, and a malformed key is a usage error.
    let raw = run(
        &["ping", "--group", &g, "--raw", "--key", &key],
        Duration::from_secs(10),
    );
    assert_eq!(raw.status.code(), Some(2), "{}", describe(&raw));
    let short = run(
        &["sub", "--group", &g, "--key", "abcd"],
        Duration::from_secs(10),
    );
    assert_eq!(short.status.code(), Some(2), "{}", describe(&short));
}
