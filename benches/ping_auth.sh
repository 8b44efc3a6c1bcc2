#!/usr/bin/env bash
# Interleaved ping-pong latency: nakcast without and with authenticated frames (--key).
# Usage: benches/ping_auth.sh [ROUNDS] [COUNT] [SIZE]   (build first: cargo build --release)
# Prints one JSON line per run ("mode" added) and the medians and ratios at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}; COUNT=${2:-20000}; SIZE=${3:-32}
BIN=target/release/nakcast
KEY=$(python3 -c 'import os;print(os.urandom(32).hex())')
free_port() { python3 -c 'import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
OUT=$(mktemp)
for r in $(seq "$ROUNDS"); do
  for mode in plain auth; do
    G=239.255.92.1:$(free_port); R=239.255.93.1:$(free_port)
    FLAGS=(--group "$G" --reply-group "$R" --interface 127.0.0.1)
    [ "$mode" = auth ] && FLAGS+=(--key "$KEY" --key-id 1)
    "$BIN" pong "${FLAGS[@]}" --idle-timeout 30 2>/dev/null & PONG=$!
    "$BIN" ping "${FLAGS[@]}" --count "$COUNT" --warmup 2000 --size "$SIZE" --json \
      | tail -1 | sed "s/^{/{\"mode\":\"$mode\",\"round\":$r,/" | tee -a "$OUT"
    kill "$PONG"; wait "$PONG" 2>/dev/null || true
  done
done
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'metric':8} {'plain':>9} {'auth':>9} {'ratio':>6}   (medians of {len(rows)//2} runs each)")
for k in ["p50_us", "p90_us", "p99_us", "p999_us", "max_us", "mean_us"]:
    p = statistics.median(r[k] for r in rows if r["mode"] == "plain")
    a = statistics.median(r[k] for r in rows if r["mode"] == "auth")
    print(f"{k:8} {p:9.2f} {a:9.2f} {a / p:6.2f}")
PY
rm -f "$OUT"
