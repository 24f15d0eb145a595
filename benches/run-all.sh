#!/bin/sh
# The measured runs of BENCHMARKS.md: every scenario against Spotter and the reference
# server, one after the other (never both servers at once), tables and JSON into
# benches/results/. Run from the repository root after
#   cargo build --release --bin spotter --bin spotter-bench --bin spotter-reference
set -eu
B=target/release/spotter-bench
S=target/release/spotter
OUT=benches/results
mkdir -p "$OUT"
{
  date -u
  uptime
  nproc
  grep -m1 'model name' /proc/cpuinfo
  grep MemTotal /proc/meminfo
} > "$OUT/machine.txt"
$B fanout     --spawn $S --compare --rooms 10 --sockets 50 --duration 10 --json "$OUT/fanout.json"     | tee "$OUT/fanout.txt"
$B heartbeat  --spawn $S --compare --rate 5000 --connections 64 --duration 10 --json "$OUT/heartbeat.json" | tee "$OUT/heartbeat.txt"
$B chat-store --spawn $S --compare --conversations 100 --rate 1000 --duration 10 --json "$OUT/chat-store.json" | tee "$OUT/chat-store.txt"
$B idle       --spawn $S --compare --sockets 19900 --hold 60 --json "$OUT/idle.json"          | tee "$OUT/idle.txt"
uptime >> "$OUT/machine.txt"
