#!/usr/bin/env bash
# Interleaved ping-pong latency of two variants, A then B in each round, fresh pong per run.
# Usage: A_NAME=.. A_FLAGS=".." B_NAME=.. B_FLAGS=".." benches/ping_ab.sh [ROUNDS] [COUNT] [SIZE]
# (build first: cargo build --release). Prints one JSON line per run ("mode" added), then the
# medians of each metric and their ratio A/B.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; COUNT=${2:-50000}; SIZE=${3:-32}
BIN=target/release/nakcast
free_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
for r in $(seq "$ROUNDS"); do
  for mode in "$A_NAME" "$B_NAME"; do
    G=239.255.90.1:$(free_port); R=239.255.91.1:$(free_port)
    FLAGS=(--group "$G" --reply-group "$R" --interface 127.0.0.1)
    if [ "$mode" = "$A_NAME" ]; then EXTRA=$A_FLAGS; else EXTRA=$B_FLAGS; fi
    # shellcheck disable=SC2206
    FLAGS+=($EXTRA)
    "$BIN" pong "${FLAGS[@]}" --idle-timeout 30 2>/dev/null & PONG=$!
    "$BIN" ping "${FLAGS[@]}" --count "$COUNT" --warmup 5000 --size "$SIZE" --json \
      | tail -1 | sed "s/^{/{\"mode\":\"$mode\",\"round\":$r,/" | tee -a "$OUT"
    kill "$PONG"; wait "$PONG" 2>/dev/null || true
  done
done
python3 - "$OUT" "$A_NAME" "$B_NAME" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
a, b = sys.argv[2], sys.argv[3]
print(f"{'metric':8} {a:>9} {b:>9} {'ratio':>6}   (medians of {len(rows)//2} runs each; ratio = {a}/{b})")
for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us"]:
    x = statistics.median(r[k] for r in rows if r["mode"] == a)
    y = statistics.median(r[k] for r in rows if r["mode"] == b)
    print(f"{k:8} {x:9.2f} {y:9.2f} {x / y:6.2f}")
PY
