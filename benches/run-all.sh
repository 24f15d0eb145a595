#!/bin/sh
# The measured runs of BENCHMARKS.md: every scenario against Spotter and both reference
# servers (the same-stack spotter-reference and the lean spotter-lean), one after the
# other (never two servers at once), tables and JSON into benches/results/. Run from the
# repository root after
#   cargo build --release --bins
# Chat-store on PostgreSQL needs the server at 127.0.0.1:5432 (user postgres, trust auth);
# a fresh database is created for the run (PG_URL overrides the server's URL prefix).
# ONLY="fanout-rounds fanout-two-way-rounds" runs just those scenarios.
# TAG=x names the files <scenario>-x.txt|json (and machine-x.txt), so that a new run does
# not overwrite the tables an earlier section of BENCHMARKS.md cites.
set -eu
B=target/release/spotter-bench
S=target/release/spotter
OUT=benches/results
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
PG_DB=spotter_bench_$(date -u +%Y%m%d%H%M%S)
SUFFIX=${TAG:+-$TAG}
mkdir -p "$OUT"
{
  date -u
  uptime
  nproc
  grep -m1 'model name' /proc/cpuinfo
  grep MemTotal /proc/meminfo
  git rev-parse --short HEAD
} > "$OUT/machine$SUFFIX.txt"
ONLY=${ONLY:-}
run() { case " ${ONLY:-$1} " in *" $1 "*) ;; *) return 0;; esac; name=$1$SUFFIX; shift; echo "== $name, $(date -u +%T), load $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/machine$SUFFIX.txt"; "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"; }
run heartbeat       $B heartbeat  --spawn $S --compare --rate 5000 --connections 64 --users 200 --duration 10
run fanout          $B fanout     --spawn $S --compare --rooms 10 --sockets 50 --duration 10 --then-fraction 0 --per-publisher-rates 2,10,20
run fanout-two-way  $B fanout     --spawn $S --compare --rooms 10 --sockets 50 --duration 10 --then-fraction 0 --per-publisher-rates 2,10,20 --two-way
# The fan-out CPU ratios against lean move by ±0.2 from run to run: three interleaved
# rounds (Spotter, lean, Spotter, …), medians and each round's ratio.
run fanout-rounds          $B fanout --spawn $S --compare --compare-with lean --rounds 3 --rooms 10 --sockets 50 --duration 10 --then-fraction 0 --per-publisher-rates 2,10,20
run fanout-two-way-rounds  $B fanout --spawn $S --compare --compare-with lean --rounds 3 --rooms 10 --sockets 50 --duration 10 --then-fraction 0 --per-publisher-rates 2,10,20 --two-way
run idle            $B idle       --spawn $S --compare --sockets 1000 --users 50 --hold 10 --join
run rest            $B rest       --spawn $S --logins 100 --settle 5
run chat-store      $B chat-store --spawn $S --compare --conversations 100 --rate 1000 --duration 10
case " ${ONLY:-chat-store-pg} " in *" chat-store-pg "*)
  createdb -h 127.0.0.1 -U postgres "$PG_DB"
  run chat-store-pg   $B chat-store --spawn $S --server-env "SPOTTER_DATABASE_URL=$PG_URL/$PG_DB" --conversations 100 --rate 1000 --duration 10
  dropdb -h 127.0.0.1 -U postgres "$PG_DB" || true;;
esac
uptime >> "$OUT/machine$SUFFIX.txt"
