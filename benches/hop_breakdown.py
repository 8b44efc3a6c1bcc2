#!/usr/bin/env python3
"""Where a hop's time goes: pong's path from the datagram's receive to the reply's send.

Usage: python3 benches/hop_breakdown.py [--rounds N] [--count N] [--rev REV ...] [--rate R]

The round trip of `nakcast ping` minus that of `ping --raw` is what the protocol costs,
but on a shared VM the two differ by less than they move between runs. This measures the
protocol's part directly and repeatably: for each git revision given (default HEAD), it
builds a copy of the tree (`git archive` into a temporary directory, its own target dir)
with time-stamp-counter probes added to `nakcast pong`: one when the subscriber's receive
returns, one when pong's handler is handed the message, one right before the reply's
`send`. It then runs ping/pong pairs (pinned, interleaved across revisions) and prints, per
run, ping's p50 round trip and the MEDIAN cycles from receive to send and from handler to
send (medians: a host pause inside one sample must not move the figure, as it moves a
mean). The probes exist only in those throw-away builds; the tree and its binaries are
untouched. x86-64 only (rdtsc). Bounded: ROUNDS x revisions runs of COUNT round trips.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Time stamps at the receive, in the handler, and right before the reply's send.
SEND_PROBE = (
    '        let rx = crate::transport::PROF_RX.swap(0, std::sync::atomic::Ordering::Relaxed);\n'
    '        let mid = crate::transport::PROF_MID.swap(0, std::sync::atomic::Ordering::Relaxed);\n'
    '        let t = crate::transport::prof_now();\n'
    '        if rx != 0 && mid != 0 { crate::transport::PROF_H2[((t - mid) / 10).min(999) as usize]'
    '.fetch_add(1, std::sync::atomic::Ordering::Relaxed); }\n'
    '        if rx != 0 { crate::transport::PROF_H1[((t - rx) / 10).min(999) as usize]'
    '.fetch_add(1, std::sync::atomic::Ordering::Relaxed); '
    'crate::transport::PROF_N.fetch_add(1, std::sync::atomic::Ordering::Relaxed); }\n'
)

# (file, text to find, text to put instead): the probes. Those on one file that are not
# found are skipped, as long as one per file applies.
PROBES = [
    (
        'src/transport/subscriber.rs',
        '            match self.recv.recv(&self.data) {\n                Ok(n) => {\n                    work += n;',
        '            match self.recv.recv(&self.data) {\n                Ok(n) => {\n                    crate::transport::PROF_RX.store(crate::transport::prof_now(), std::sync::atomic::Ordering::Relaxed);\n                    work += n;',
    ),
    # Right before a reply's `send`: in the shared send helper (newest trees), or on the
    # lone-frame path from the ring and on the frame-buffer path (older trees). Each
    # applies where found.
    (
        'src/transport/publisher.rs',
        ') -> std::io::Result<usize> {\n    loop {\n        let r = match to {',
        ') -> std::io::Result<usize> {\n' + SEND_PROBE + '    loop {\n        let r = match to {',
    ),
    (
        'src/transport/publisher.rs',
        '        let r = loop {\n            match self.data.send(frame) {',
        SEND_PROBE + '        let r = loop {\n            match self.data.send(frame) {',
    ),
    (
        'src/transport/publisher.rs',
        '        let frame = &self.frame[..len];\n        let r = loop {',
        '        let frame = &self.frame[..len];\n' + SEND_PROBE + '        let r = loop {',
    ),
    (
        'src/cli/ping.rs',
        '                if let Event::Message { payload, .. } = ev {\n                    match publisher.offer(payload) {',
        '                if let Event::Message { payload, .. } = ev {\n                    nakcast::transport::PROF_MID.store(nakcast::transport::prof_now(), std::sync::atomic::Ordering::Relaxed);\n                    match publisher.offer(payload) {',
    ),
    (
        'src/cli/ping.rs',
        '    link.close()?;\n    eprintln!("pong: echoed {echoed} messages");',
        '    link.close()?;\n    eprintln!("PROF rx->send median {} handler->send median {} cycles n {}", nakcast::transport::prof_median(&nakcast::transport::PROF_H1), nakcast::transport::prof_median(&nakcast::transport::PROF_H2), nakcast::transport::PROF_N.load(std::sync::atomic::Ordering::Relaxed));\n    eprintln!("pong: echoed {echoed} messages");',
    ),
]

PROBE_MOD = '\n#[doc(hidden)]\npub static PROF_RX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);\n#[doc(hidden)]\npub static PROF_MID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);\n#[doc(hidden)]\npub static PROF_H1: [std::sync::atomic::AtomicU64; 1000] = [const { std::sync::atomic::AtomicU64::new(0) }; 1000];\n#[doc(hidden)]\npub static PROF_H2: [std::sync::atomic::AtomicU64; 1000] = [const { std::sync::atomic::AtomicU64::new(0) }; 1000];\n#[doc(hidden)]\npub fn prof_median(h: &[std::sync::atomic::AtomicU64; 1000]) -> u64 {\n    let v: Vec<u64> = h.iter().map(|a| a.load(std::sync::atomic::Ordering::Relaxed)).collect();\n    let total: u64 = v.iter().sum();\n    let mut acc = 0;\n    for (i, c) in v.iter().enumerate() { acc += c; if acc * 2 >= total { return i as u64 * 10; } }\n    0\n}\n#[doc(hidden)]\npub static PROF_N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);\n#[doc(hidden)]\n#[allow(unsafe_code)]\npub fn prof_now() -> u64 {\n    // SAFETY: rdtsc has no preconditions.\n    unsafe { core::arch::x86_64::_rdtsc() }\n}\n'


def instrument(root: str) -> None:
    """Add the probes to the tree copy at `root`."""
    applied = {}
    for path, old, new in PROBES:
        p = os.path.join(root, path)
        s = open(p).read()
        if old in s:
            open(p, "w").write(s.replace(old, new, 1))
        applied[path] = applied.get(path, 0) + (old in s)
    for path, n in applied.items():
        if n == 0:
            sys.exit(f"{path}: no probe's anchor found; update PROBES in {__file__}")
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


def run(binary: str, port: int, count: int, rate: float | None) -> tuple[str, str]:
    common = ["--group", f"239.255.92.1:{port}", "--reply-group", f"239.255.93.1:{port + 1}",
              "--interface", "127.0.0.1"]
    pong = subprocess.Popen(["taskset", "-c", "1", binary, "pong", *common,
                             "--idle-timeout", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        out = subprocess.run(["taskset", "-c", "0", binary, "ping", *common, "--count",
                              str(count), "--warmup", "5000", "--size", "32"]
                             + (["--rate", str(rate)] if rate else []),
                             capture_output=True, text=True, timeout=120).stdout
    finally:
        pong.send_signal(2)
        err = pong.communicate(timeout=30)[1]
    rtt = re.search(r"p50 ([0-9.]+)", out)
    prof = re.search(r"PROF (.*)", err)
    return (rtt.group(1) if rtt else "?"), (prof.group(1) if prof else err.strip()[-200:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--rev", nargs="+", default=["HEAD"])
    ap.add_argument("--rate", type=float, help="ping --rate (round trips/s): the cold path")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="nakcast-hops-") as tmp:
        bins = {rev: build(rev, tmp) for rev in a.rev}
        port = 42100
        for r in range(a.rounds):
            for rev, b in bins.items():
                port += 2
                rtt, prof = run(b, port, a.count, a.rate)
                print(f"round {r + 1} {rev}: ping p50 {rtt} us; {prof}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
