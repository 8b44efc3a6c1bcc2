#!/usr/bin/env python3
"""The issue-8 performance targets, measured against the raw socket in the same run.

Usage: cargo build --release && python3 benches/perf_targets.py [--rounds N] [--quick]

Runs, interleaved so that machine drift hits both sides alike:
  1. round trip 32 B, `nakcast ping` vs `nakcast ping --raw` (separate ping/pong processes,
     busy-poll), ROUNDS pairs;
  2. one-way message rate, `pub` process -> `sub --idle spin` process: 32 B (nakcast), and
     1 KiB nakcast vs `pub/sub --raw` (bytes/s ratio), each with and without segmentation
     offload / receive coalescing (`--gso`, `--gro`), ROUNDS rounds;
  3. repair latency under 5% injected loss (`bench --loss 5 --rate 100000`);
  4. low-rate latency: `ping --rate 1000` with every idle strategy, vs full speed.
Before and after them, `nakcast jitter --threads 2` measures the host's own pauses (threads
spinning on the clock, no network): the floor under every tail figure of the run.
Prints one table per target with medians; every run is bounded (counts and timeouts) and
uses loopback multicast (127.0.0.1) on free ports only.
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = str(Path(__file__).resolve().parent.parent / "target/release/nakcast")
# NAKCAST_BIN: a build elsewhere (CARGO_TARGET_DIR), e.g. to compare two commits.
BIN = os.environ.get("NAKCAST_BIN", BIN)
IFACE = ["--interface", "127.0.0.1"]
PIN = False


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def last_json(out: str) -> dict:
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON in output: {out[-500:]}")


def pin(cpu: int) -> list[str]:
    """`taskset -c CPU` when --pin was given and taskset exists (both modes alike)."""
    return ["taskset", "-c", str(cpu)] if PIN and shutil.which("taskset") else []


def ping(raw: bool, count: int, idle: str = "spin", rate: float | None = None) -> dict:
    g, r = f"239.255.90.1:{free_port()}", f"239.255.91.1:{free_port()}"
    common = ["--group", g, "--reply-group", r, *IFACE, "--idle", idle] + (["--raw"] if raw else [])
    pong = subprocess.Popen([*pin(0), BIN, "pong", *common, "--idle-timeout", "30"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        args = [*pin(1), BIN, "ping", *common, "--count", str(count), "--warmup",
                str(min(count, 5000)), "--json"] + (["--rate", str(rate)] if rate else [])
        out = subprocess.run(args, capture_output=True, text=True, timeout=300, check=True)
        return last_json(out.stdout)
    finally:
        pong.kill()
        pong.wait()


def one_way(raw: bool, count: int, size: int, offload: str | None = None) -> dict:
    """`offload` "on"/"off": pass `--gso`/`--gro` to pub/sub (default: each mode's own)."""
    g = f"239.255.77.1:{free_port()}"
    common = ["--group", g, *IFACE, "--json"] + (["--raw"] if raw else [])
    sub = subprocess.Popen([*pin(0), BIN, "sub", *common, "--count", str(count), "--idle", "spin",
                            "--idle-timeout", "3"] + (["--gro", offload] if offload else []),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.3)
        subprocess.run([*pin(1), BIN, "pub", *common, "--count", str(count), "--size", str(size),
                        "--linger", "0.5"] + (["--gso", offload] if offload else []),
                       capture_output=True, text=True, timeout=300)
        out, _ = sub.communicate(timeout=60)
        return last_json(out)
    finally:
        sub.kill()


def jitter() -> dict:
    out = subprocess.run([BIN, "jitter", "--threads", "2", "--duration", "3", "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    return last_json(out.stdout)


def print_jitter(label: str, j: dict) -> None:
    print(f"Host pauses {label} (`nakcast jitter --threads 2 --duration 3`): "
          f"{j['pauses_per_s']:.0f} pauses/s per core over {j['threshold_us']} µs, "
          f"{j['paused_pct']:.2f}% of the time, p50 {j['pause_p50_us']} µs, "
          f"p99 {j['pause_p99_us']} µs, max {j['pause_max_us']} µs "
          f"({j['pauses_over_1ms']} over 1 ms); clock read {j['clock_read_ns']:.0f} ns\n")


def med(rows: list[dict], k: str) -> float:
    vals = [r[k] for r in rows if r.get(k) is not None]
    return statistics.median(vals) if vals else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    ap.add_argument("--pin", action="store_true",
                    help="pin pong to CPU 0 and ping to CPU 1 (taskset), in both modes")
    ap.add_argument("--only", default="1234", help="targets to run, e.g. 13")
    a = ap.parse_args()
    global PIN
    PIN = a.pin
    q = a.quick
    n_ping, n_32, n_1k, n_low = (3000, 200_000, 50_000, 500) if q else (50_000, 5_000_000, 1_000_000, 5000)

    print(f"# nakcast performance targets ({a.rounds} interleaved rounds each)\n")
    print_jitter("before", jitter())
    pings: dict = {False: [], True: []}
    rtt = full_p99 = float("nan")
    if "1" in a.only:
        # 1. Round trip.
        for _ in range(a.rounds):
            for raw in (False, True):
                pings[raw].append(ping(raw, n_ping))
        print("## 1. Round trip, 32 B, busy-poll (µs, medians)\n")
        print("| | nakcast | raw | ratio |\n|---|---:|---:|---:|")
        for k in ["p50_us", "p90_us", "p99_us", "p999_us", "mean_us"]:
            p, w = med(pings[False], k), med(pings[True], k)
            print(f"| {k[:-3]} | {p:.2f} | {w:.2f} | {p / w:.2f} |")
        rtt = med(pings[False], "p50_us")

        full_p99 = med(pings[False], "p99_us")
    if "2" in a.only:
        # 2. One-way message rate. nakcast by default uses segmentation offload (GSO) and
        # receive coalescing (GRO); raw UDP by default uses neither (the plain `sendmmsg`
        # path of any UDP application). Both are also run the other way, so each ratio
        # can be read like for like.
        runs = [("32", False, 32, None, "nakcast 32 B"),
                ("32_plain", False, 32, "off", "nakcast 32 B, `--gso off --gro off`"),
                ("1k", False, 1024, None, "nakcast 1 KiB"),
                ("1k_plain", False, 1024, "off", "nakcast 1 KiB, `--gso off --gro off`"),
                ("1k_raw", True, 1024, None, "raw UDP 1 KiB (`sendmmsg`)"),
                ("1k_raw_gso", True, 1024, "on", "raw UDP 1 KiB, `--gso on --gro on`")]
        rates: dict = {k: [] for k, *_ in runs}
        for _ in range(a.rounds):
            for k, raw, size, offload, _label in runs:
                rates[k].append(one_way(raw, n_1k if size == 1024 else n_32, size, offload))
        print("\n## 2. One-way rate, pub process -> sub process (medians over all runs)\n")
        print("| run | msgs/s | MB/s | runs with loss | lost (max) |\n|---|---:|---:|---:|---:|")
        for k, _raw, _size, _offload, label in runs:
            rows = rates[k]
            lossy = sum(1 for r in rows if r["lost"])
            print(f"| {label} | {med(rows, 'msgs_per_s'):,.0f} | {med(rows, 'mb_per_s'):.1f} | "
                  f"{lossy}/{len(rows)} | {max(r['lost'] for r in rows)} |")
        for num, den in [("1k", "1k_raw"), ("1k", "1k_raw_gso"), ("1k_plain", "1k_raw")]:
            ratios = [p["mb_per_s"] / w["mb_per_s"] for p, w in zip(rates[num], rates[den])]
            print(f"\n1 KiB bytes/s ratio {num}/{den} per pair: "
                  f"{', '.join(f'{x:.2f}' for x in ratios)} (median {statistics.median(ratios):.2f})")

    if "3" in a.only:
        # 3. Repair latency.
        reps = []
        for _ in range(a.rounds):
            out = subprocess.run([BIN, "bench", "--loss", "5", "--rate", "100000", "--count",
                                  str(50_000 if q else 300_000), "--subscribers", "1", "--json"],
                                 capture_output=True, text=True, timeout=300)
            reps.append(last_json(out.stdout))
        print("\n## 3. Repair latency, 5% injected loss, 100k msg/s, 1 subscriber (µs, medians)\n")
        print("| repair p50 | repair p90 | repair p99 | repair max | samples | copies sent | lost "
              "| ping RTT p50 |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        print(f"| {med(reps, 'repair_p50_us'):.1f} | {med(reps, 'repair_p90_us'):.1f} | "
              f"{med(reps, 'repair_p99_us'):.1f} | "
              f"{med(reps, 'repair_max_us'):.1f} | {med(reps, 'repair_samples'):.0f} | "
              f"{med(reps, 'repair_copies_sent'):.0f} | "
              f"{max(r['lost'] for r in reps)} | {rtt:.2f} |")
        per_run = ", ".join(f"{r['repair_p99_us']:.0f}" for r in reps)
        print(f"\nrepair p99 per run: {per_run} µs")

    if "4" in a.only:
        # 4. Low rate, every idle strategy.
        print("\n## 4. `ping --rate 1000` by idle strategy (both ends), vs full speed (µs)\n")
        print(f"Full-speed busy-poll p99 (target 1): {full_p99:.2f}\n")
        print("| idle | p50 | p90 | p99 | p99 / full-speed p99 |\n|---|---:|---:|---:|---:|")
        for raw, idle in [(True, "spin"), (False, "spin"), (False, "yield"), (False, "backoff"),
                          (False, "block")]:
            rows = [ping(raw, n_low, idle, 1000) for _ in range(max(1, a.rounds // 2))]
            p99 = med(rows, "p99_us")
            label = f"{idle} (raw UDP)" if raw else idle
            print(f"| {label} | {med(rows, 'p50_us'):.2f} | {med(rows, 'p90_us'):.2f} | {p99:.2f} | "
                  f"{p99 / full_p99:.2f} |")
    print()
    print_jitter("after", jitter())
    return 0


if __name__ == "__main__":
    sys.exit(main())
