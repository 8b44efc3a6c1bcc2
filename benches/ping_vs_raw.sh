#!/usr/bin/env bash
# Interleaved ping-pong latency: nakcast vs plain UDP (--raw), same sockets, same session.
# Usage: benches/ping_vs_raw.sh [ROUNDS] [COUNT] [SIZE]   (build first: cargo build --release)
# Prints one JSON line per run ("mode" added) and the medians and ratios nakcast/raw at the end.
A_NAME=nakcast A_FLAGS="" B_NAME=raw B_FLAGS="--raw" exec "$(dirname "$0")/ping_ab.sh" "$@"
