#!/usr/bin/env python3
"""Where a round trip's time goes: `nakcast ping`/`pong` against `--raw`, segment by segment.

Usage: python3 benches/hop_breakdown.py [--rounds N] [--count N] [--rev REV ...] [--rate R]
                                        [--variant NAME=FLAGS ...] [--quantile Q]

The round trip of `nakcast ping` minus that of `ping --raw` is what the protocol costs, but
on a shared VM the two move between runs by more than they differ. This measures the parts
directly and repeatably. For each git revision given (default HEAD) it builds a copy of the
tree (`git archive` into a temporary directory, its own target dir) with time-stamp-counter
probes in `ping` and `pong` (both modes), then runs ping/pong pairs (pinned, interleaved:
each revision with the protocol, then each `--variant` (the first revision with extra
`ping`/`pong` flags, e.g. `gro-off="--gro off"`), then the first revision with `--raw`) and prints, per run,
ping's p50 round trip and the MEDIAN cycles of each segment of a round trip (medians: a
host pause inside one sample must not move the figure, as it moves a mean):

  ping send   ping's offer (or raw `send`) until its `send(2)` starts
  ping sys    ping's `send(2)` (loopback delivery runs inside it)
  pong pick   from that `send(2)` returning until pong's receive returns (its poll loop)
  pong recv   pong's receive returning until its handler has the message
  pong send   pong's offer until its `send(2)` starts
  pong sys    pong's `send(2)`
  ping pick   until ping's receive returns
  ping recv   ping's receive returning until its handler has the reply

The send timestamp travels in the message (bytes 16..24 ping's, 24..32 pong's; the TSC is
shared by both CPUs), so the pick-up segments are measured across processes. "protocol" in
the summary is the sum of the four user-space segments (send and recv on both sides): what
nakcast adds to a round trip is its value minus raw's. The probes exist only in those
throw-away builds; the tree and its binaries are untouched. x86-64 Linux only (rdtsc,
taskset). Bounded: ROUNDS x (revisions + 1) runs of COUNT round trips.
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TL = "nakcast::transport::tl"

# (file, text to find, text to put instead). Each must be found (older trees may lack
# some anchors: then the script says which and stops).
PROBES = [
    # The subscriber's receive returned datagrams.
    (
        "src/transport/subscriber.rs",
        "            match self.recv.recv(&self.data) {\n                Ok(n) => {\n"
        "                    work += n;",
        "            match self.recv.recv(&self.data) {\n                Ok(n) => {\n"
        "                    crate::transport::tl::mark_rx();\n                    work += n;",
    ),
    # The publisher's `send(2)`: start and end.
    (
        "src/transport/publisher.rs",
        ") -> std::io::Result<usize> {\n    loop {\n        let r = match to {\n"
        "            None => socket.send(frame),\n            Some(a) => socket.send_to(frame, a),\n"
        "        };",
        ") -> std::io::Result<usize> {\n    crate::transport::tl::at_send();\n    loop {\n"
        "        let r = match to {\n            None => socket.send(frame),\n"
        "            Some(a) => socket.send_to(frame, a),\n        };\n"
        "        crate::transport::tl::after_send();",
    ),
    # ping stamps the message right before handing it to the link.
    (
        "src/cli/ping.rs",
        "        let sent = Instant::now();\n        link.send(&msg)?;",
        "        let sent = Instant::now();\n"
        f"        let t0 = {TL}::now(); {TL}::mark_t0(t0); msg[16..24].copy_from_slice(&t0.to_le_bytes());\n"
        "        link.send(&msg)?;",
    ),
    # ping's handler has the reply (protocol).
    (
        "src/cli/ping.rs",
        "                    got = Some(Instant::now());\n",
        f"                    {TL}::reply(payload);\n                    got = Some(Instant::now());\n",
    ),
    # pong's handler has the message (protocol): stamp the echo.
    (
        "src/cli/ping.rs",
        "                if let Event::Message { payload, .. } = ev {\n"
        "                    match publisher.offer(payload) {",
        "                if let Event::Message { payload, .. } = ev {\n"
        f"                    let mut stamped = [0u8; 64]; let payload = {TL}::echo(payload, &mut stamped);\n"
        "                    match publisher.offer(payload) {",
    ),
    # The raw link: receive, reply, echo, send.
    (
        "src/cli/ping.rs",
        "            Ok(n) => Ok(n),",
        f"            Ok(n) => {{ {TL}::mark_rx(); Ok(n) }}",
    ),
    (
        "src/cli/ping.rs",
        "            .any(|d| seq_of(d.payload) == Some(want));",
        f"            .any(|d| {{ let f = seq_of(d.payload) == Some(want); if f {{ {TL}::reply(d.payload); }} f }});",
    ),
    (
        "src/cli/ping.rs",
        "        for d in self.recv.iter().flatten() {\n            Self::send_one(&self.tx, d.payload)?;",
        "        for d in self.recv.iter().flatten() {\n"
        f"            let mut stamped = [0u8; 64]; let payload = {TL}::echo(d.payload, &mut stamped);\n"
        "            Self::send_one(&self.tx, payload)?;",
    ),
    (
        "src/cli/ping.rs",
        "            match tx.send(msg) {",
        f"            {TL}::at_send(); let r = tx.send(msg); {TL}::after_send();\n            match r {{",
    ),
    # Report.
    (
        "src/cli/ping.rs",
        "    let elapsed = start.elapsed().as_secs_f64();\n    link.close()?;",
        "    let elapsed = start.elapsed().as_secs_f64();\n"
        f"    eprintln!(\"TLPING {{}}\", {TL}::report());\n    link.close()?;",
    ),
    (
        "src/cli/ping.rs",
        "    link.close()?;\n    eprintln!(\"pong: echoed {echoed} messages\");",
        f"    link.close()?;\n    eprintln!(\"TLPONG {{}}\", {TL}::report());\n"
        "    eprintln!(\"pong: echoed {echoed} messages\");",
    ),
]

# Histograms of 10-cycle buckets: 0 pick-up (receive returned minus the peer's stamp,
# less nothing: the script subtracts the peer's send segments), 1 receive to handler,
# 2 handler/stamp to `send(2)`, 3 the `send(2)` itself.
PROBE_MOD = r'''
#[doc(hidden)]
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod tl {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static RX: AtomicU64 = AtomicU64::new(0);
    static T0: AtomicU64 = AtomicU64::new(0);
    static T1: AtomicU64 = AtomicU64::new(0);
    static H: [[AtomicU64; 4000]; 4] = [const { [const { AtomicU64::new(0) }; 4000] }; 4];
    pub fn now() -> u64 {
        // SAFETY: rdtsc has no preconditions.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    fn rec(i: usize, d: u64) {
        H[i][(d / 10).min(3999) as usize].fetch_add(1, Relaxed);
    }
    pub fn mark_rx() { RX.store(now(), Relaxed); }
    pub fn mark_t0(t: u64) { T0.store(t, Relaxed); }
    pub fn at_send() {
        let t0 = T0.swap(0, Relaxed);
        if t0 != 0 { let t = now(); rec(2, t - t0); T1.store(t, Relaxed); }
    }
    pub fn after_send() {
        let t1 = T1.swap(0, Relaxed);
        if t1 != 0 { rec(3, now() - t1); }
    }
    /// ping's handler has the reply `p` (pong's stamp at 24..32).
    pub fn reply(p: &[u8]) {
        let t = now();
        let rx = RX.load(Relaxed);
        let sent = u64::from_le_bytes(p[24..32].try_into().unwrap());
        rec(0, rx.wrapping_sub(sent).min(1 << 40));
        rec(1, t - rx);
    }
    /// pong's handler has the message `p` (ping's stamp at 16..24): the echo, stamped.
    pub fn echo<'a>(p: &[u8], buf: &'a mut [u8; 64]) -> &'a [u8] {
        let rx = RX.load(Relaxed);
        let sent = u64::from_le_bytes(p[16..24].try_into().unwrap());
        buf[..p.len()].copy_from_slice(p);
        let t = now();
        mark_t0(t);
        buf[24..32].copy_from_slice(&t.to_le_bytes());
        rec(0, rx.wrapping_sub(sent).min(1 << 40));
        rec(1, t - rx);
        &buf[..p.len()]
    }
    /// The quantile NAKCAST_TL_Q (default 0.5) of histogram `i`, in cycles.
    fn quantile(i: usize) -> u64 {
        let q: f64 = std::env::var("NAKCAST_TL_Q").ok().and_then(|v| v.parse().ok()).unwrap_or(0.5);
        let v: Vec<u64> = H[i].iter().map(|a| a.load(Relaxed)).collect();
        let total: u64 = v.iter().sum();
        let mut acc = 0;
        for (k, c) in v.iter().enumerate() {
            acc += c;
            if total > 0 && acc as f64 >= q * total as f64 { return k as u64 * 10; }
        }
        0
    }
    pub fn report() -> String {
        format!("arrive {} recv {} send {} sys {}", quantile(0), quantile(1), quantile(2), quantile(3))
    }
}
'''

SEGMENTS = ["ping send", "ping sys", "pong pick", "pong recv", "pong send", "pong sys",
            "ping pick", "ping recv"]


def instrument(root: str) -> None:
    """Add the probes to the tree copy at `root`."""
    for path, old, new in PROBES:
        p = os.path.join(root, path)
        s = open(p).read()
        if old not in s:
            sys.exit(f"{path}: probe anchor not found (this revision's code differs); "
                     f"update PROBES in {__file__}:\n{old}")
        open(p, "w").write(s.replace(old, new, 1))
    with open(os.path.join(root, "src/transport/mod.rs"), "a") as f:
        f.write(PROBE_MOD)


def build(rev: str, tmp: str) -> str:
    tree = os.path.join(tmp, re.sub(r"[^A-Za-z0-9]", "_", rev))
    os.makedirs(tree)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
    instrument(tree)
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(tree, "target"))
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=tree, env=env, check=True)
    return os.path.join(tree, "target", "release", "nakcast")


def parse(tag: str, text: str) -> dict:
    m = re.search(tag + r" arrive (\d+) recv (\d+) send (\d+) sys (\d+)", text)
    if not m:
        raise RuntimeError(f"no {tag} line: {text.strip()[-300:]}")
    return dict(zip(["arrive", "recv", "send", "sys"], map(int, m.groups())))


def run(binary: str, flags: list[str], port: int, count: int, rate: float | None,
        env: dict) -> dict:
    common = ["--group", f"239.255.92.1:{port}", "--reply-group", f"239.255.93.1:{port + 1}",
              "--interface", "127.0.0.1"] + flags
    pong = subprocess.Popen(["taskset", "-c", "0", binary, "pong", *common,
                             "--idle-timeout", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        out = subprocess.run(["taskset", "-c", "1", binary, "ping", *common, "--count",
                              str(count), "--warmup", "5000", "--size", "32"]
                             + (["--rate", str(rate)] if rate else []),
                             capture_output=True, text=True, timeout=300, env=env)
    finally:
        pong.send_signal(2)
        err = pong.communicate(timeout=30)[1]
    rtt = re.search(r"p50 ([0-9.]+)", out.stdout)
    ping, pong_ = parse("TLPING", out.stderr), parse("TLPONG", err)
    return {
        "p50_us": float(rtt.group(1)) if rtt else float("nan"),
        "ping send": ping["send"],
        "ping sys": ping["sys"],
        "pong pick": pong_["arrive"] - ping["send"] - ping["sys"],
        "pong recv": pong_["recv"],
        "pong send": pong_["send"],
        "pong sys": pong_["sys"],
        "ping pick": ping["arrive"] - pong_["send"] - pong_["sys"],
        "ping recv": ping["recv"],
        # Undivided: the peer's send segments plus the pick-up (for quantiles other than
        # the median, where a difference of quantiles means nothing).
        "pong arrive": pong_["arrive"],
        "ping arrive": ping["arrive"],
    }


def protocol(r: dict) -> int:
    return r["ping send"] + r["pong recv"] + r["pong send"] + r["ping recv"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--rev", nargs="+", default=["HEAD"])
    ap.add_argument("--rate", type=float, help="ping --rate (round trips/s): the cold path")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=FLAGS",
                    help="also run the first revision with these ping/pong flags")
    ap.add_argument("--quantile", type=float, default=0.5,
                    help="report this quantile of each segment instead of the median (e.g. "
                    "0.99 for the tail); the pick-ups are then shown undivided, as `arrive` "
                    "(the peer's send and send(2) plus the pick-up)")
    a = ap.parse_args()
    env = dict(os.environ, NAKCAST_TL_Q=str(a.quantile))
    segments = SEGMENTS if a.quantile == 0.5 else [
        "ping send", "ping sys", "pong arrive", "pong recv", "pong send", "pong sys",
        "ping arrive", "ping recv"]
    with tempfile.TemporaryDirectory(prefix="nakcast-hops-") as tmp:
        bins = {rev: build(rev, tmp) for rev in a.rev}
        variants = [(rev, b, []) for rev, b in bins.items()]
        for v in a.variant:
            name, flags = v.split("=", 1)
            variants.append((name, bins[a.rev[0]], flags.split()))
        variants.append(("raw", bins[a.rev[0]], ["--raw"]))
        results: dict = {name: [] for name, _, _ in variants}
        port = 42100
        print(f"cycles (TSC), quantile {a.quantile} of each segment; " + ", ".join(segments))
        for r in range(a.rounds):
            for name, b, flags in variants:
                port += 2
                res = run(b, flags, port, a.count, a.rate, env)
                results[name].append(res)
                segs = " ".join(f"{res[s]:6d}" for s in segments)
                print(f"round {r + 1} {name:>10}: p50 {res['p50_us']:.2f} us | {segs} "
                      f"| protocol {protocol(res)}", flush=True)
        print(f"\nmedians over {a.rounds} rounds (cycles)")
        print(f"{'':>10}  {'p50 us':>7} " + " ".join(f"{s:>9}" for s in segments)
              + "  protocol")
        raw_proto = statistics.median(protocol(x) for x in results["raw"])
        for name, rows in results.items():
            med = {s: statistics.median(x[s] for x in rows) for s in segments}
            p = statistics.median(protocol(x) for x in rows)
            extra = "" if name == "raw" else f" (+{p - raw_proto:.0f} over raw)"
            print(f"{name:>10}  {statistics.median(x['p50_us'] for x in rows):7.2f} "
                  + " ".join(f"{med[s]:9.0f}" for s in segments) + f"  {p:.0f}{extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
