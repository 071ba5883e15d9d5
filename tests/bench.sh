#!/usr/bin/env bash
# Mesh's overhead against a direct call to the same mock upstream, on loopback, in one run:
#
#   ./tests/bench.sh                 # about 2 minutes: the table for both store set-ups
#   ./tests/bench.sh --seconds 10    # longer throughput phases
#   ./tests/bench.sh --soak 600      # then 10 minutes at 64 connections, RSS every 10 s
#
# Builds the `responses` binary and `mesh-bench` with the bench profile (release code with line
# tables, so `perf record` on the gateway shows sources), starts Redis when it does not answer,
# and pins the mock and the gateway to cpu 0 and the load generator to the other cpus (taskset).
# Nothing is downloaded at run time.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --profile bench -p responses --bin responses -p mesh-tests --bin mesh-bench
if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  redis-server --port 6379 --save '' --appendonly no --daemonize yes >/dev/null
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 0.1; done
fi
load_cpus=$(nproc --all)
if command -v taskset >/dev/null && [ "$load_cpus" -gt 1 ]; then
  exec taskset -c "1-$((load_cpus - 1))" "$target/release/mesh-bench" --gateway "$target/release/responses" "$@"
fi
exec "$target/release/mesh-bench" --gateway "$target/release/responses" "$@"
