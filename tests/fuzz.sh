#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60) and ends with
# `N targets, M inputs, F failures`; exits non-zero when F > 0.
#
# With a nightly toolchain and cargo-fuzz installed (`cargo install cargo-fuzz`), the targets run
# coverage-guided under libFuzzer (tests/libfuzzer/, the same functions as below). Otherwise the stable
# driver (tests/src/bin/fuzz.rs) mutates the seed corpora with a seeded PRNG: set FUZZ_SEED to
# vary it, FUZZ_STABLE=1 to use it even where cargo-fuzz exists. Minimized failing inputs are
# written to tests/fuzz/crashes/.
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
seed=${FUZZ_SEED:-24301}
crashes=tests/fuzz/crashes
mkdir -p "$crashes"

if cargo +nightly fuzz --version >/dev/null 2>&1 && [ "${FUZZ_STABLE:-0}" != 1 ]; then
  mode=libfuzzer
else
  mode=stable
fi
echo "fuzzing with the $mode driver, ${seconds}s per target"

# FUZZ_BIN: a driver built beforehand (`cargo build -p mesh-tests --bin fuzz`).
if [ -n "${FUZZ_BIN:-}" ]; then
  bin=$FUZZ_BIN
else
  cargo build --quiet -p mesh-tests --bin fuzz || exit 2
  bin="${CARGO_TARGET_DIR:-target}/debug/fuzz"
fi
mapfile -t targets < <("$bin" --list)

total_inputs=0
total_failures=0
for target in "${targets[@]}"; do
  if [ "$mode" = libfuzzer ]; then
    seeds="target/fuzz-seeds/$target"
    "$bin" --dump-seeds "$seeds" "$target"
    mkdir -p "tests/libfuzzer/corpus/$target"
    log=$(cargo +nightly fuzz run --debug-assertions --fuzz-dir tests/libfuzzer "$target" "tests/libfuzzer/corpus/$target" "$seeds" -- \
      -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$crashes/$target-" 2>&1)
    status=$?
    inputs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' <<<"$log" | grep -o '[0-9]*$' | tail -1)
    failures=$([ $status -eq 0 ] && echo 0 || echo 1)
    [ $status -ne 0 ] && grep -E 'panicked|ERROR|Test unit written' <<<"$log" | head -5
    echo "$target: ${inputs:-0} inputs, $failures failures"
  else
    log=$("$bin" --seconds "$seconds" --seed "$seed" --save "$crashes" "$target" 2>&1)
    status=$?
    line=$(grep -E "^$target: [0-9]+ inputs, [0-9]+ failures" <<<"$log" | tail -1)
    inputs=$(sed -E 's/^[^:]+: ([0-9]+) inputs.*/\1/' <<<"$line")
    failures=$(sed -E 's/^[^:]+: [0-9]+ inputs, ([0-9]+) failures.*/\1/' <<<"$line")
    if [ -z "$line" ]; then inputs=0; failures=1; fi
    if [ $status -ne 0 ] && [ "${failures:-0}" = 0 ]; then failures=1; fi
    grep -vE '^[0-9]+ targets,' <<<"$log" | cut -c1-400 | head -40
  fi
  total_inputs=$((total_inputs + ${inputs:-0}))
  total_failures=$((total_failures + ${failures:-0}))
done

echo "${#targets[@]} targets, $total_inputs inputs, $total_failures failures"
[ "$total_failures" -eq 0 ]
