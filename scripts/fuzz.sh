#!/usr/bin/env bash
# Runs witmed's fuzz harnesses on stable Rust: `bash scripts/fuzz.sh [TARGET|all|list] SECONDS`.
#
# Each harness runs for SECONDS and prints its executions, executions per
# second and findings; a finding (panic, broken round trip, unbounded
# allocation) is shrunk, printed in hex and saved under $FUZZ_OUT/crashes/
# (default fuzz-logs/), where `witmed-fuzz replay TARGET FILE` reruns it.
# `all` runs every harness, FUZZ_JOBS at a time (default 1), each logging to
# $FUZZ_OUT/TARGET.log. FUZZ_SEED changes the mutation sequence.
# Exit status: 0 no finding, 1 a finding, 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-all}"
seconds="${2:-60}"
out="${FUZZ_OUT:-fuzz-logs}"
jobs="${FUZZ_JOBS:-1}"
seed="${FUZZ_SEED:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/witmed-target}"

# The feature only lets the node's own tests switch noise off; building with
# it reuses the test build instead of compiling the node crate a second time.
# The fuzzer never computes noise.
cargo build --quiet -p witmed-fuzz --features witmed-node/insecure-noise-off
bin="$CARGO_TARGET_DIR/debug/witmed-fuzz"

if [ "$target" = list ]; then
  exec "$bin" list
fi
mkdir -p "$out"
if [ "$target" != all ]; then
  exec "$bin" run "$target" --seconds "$seconds" --seed "$seed" --out "$out"
fi

status=0
mapfile -t targets < <("$bin" list | awk '{print $1}')
running=0
for t in "${targets[@]}"; do
  ( "$bin" run "$t" --seconds "$seconds" --seed "$seed" --out "$out" >"$out/$t.log" 2>&1 ) &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || status=1
    running=$((running - 1))
  fi
done
while [ "$running" -gt 0 ]; do
  wait -n || status=1
  running=$((running - 1))
done
# One summary line per harness, then every finding.
cat "$out"/*.log | grep -E '^target=|^  (panic|violation|allocation)|abort' || true
exit "$status"
