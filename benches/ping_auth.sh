#!/usr/bin/env bash
# Interleaved ping-pong latency: nakcast with authenticated frames (--key) vs without.
# Usage: benches/ping_auth.sh [ROUNDS] [COUNT] [SIZE]   (build first: cargo build --release)
# Prints one JSON line per run ("mode" added) and the medians and ratios auth/plain at the end.
KEY=$(python3 -c 'import os;print(os.urandom(32).hex())')
A_NAME=auth A_FLAGS="--key $KEY --key-id 1" B_NAME=plain B_FLAGS="" exec "$(dirname "$0")/ping_ab.sh" "$@"
