#!/usr/bin/env bash
# Regenerates every benchmark figure in docs/ (tables, CSV, the SVG chart in
# the README). Runs on this machine; takes several minutes.
# HOSPITALS (default 1,3,10) and PATIENTS (per hospital, default 10000) override the federation sweep.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export WITMED_DATA_DIR="${WITMED_DATA_DIR:-$(cd .. && pwd)/shared/data}"
cargo build --locked -p witmed-lab --bin witmed-lab
W="$CARGO_TARGET_DIR/debug/witmed-lab"
mkdir -p docs
{ echo "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(uname -srm)"; grep -m1 'model name' /proc/cpuinfo || true; } > docs/bench-machine.txt
run() { local out=$1; shift; { echo "\$ witmed-lab $*"; "$W" "$@"; } 2>/dev/null | tee "docs/$out"; }
run bench-import.txt bench import --set-dir "$WITMED_DATA_DIR/physionet2012/set-a"
run bench-query.txt bench query --patients 100000 --repetitions 200
run bench-dp-error.txt bench dp-error --patients 10000 --repetitions 100 --csv docs/bench-dp-error.csv
run bench-federation.txt bench federation --hospitals "${HOSPITALS:-1,3,10}" --patients "${PATIENTS:-10000}" \
    --repetitions 50 --csv docs/bench-federation.csv --svg docs/bench-federation.svg
run bench-encrypted.txt bench encrypted --hospitals 3,10 --patients 1000 --repetitions 20 \
    --csv docs/bench-encrypted.csv
run bench-analyses.txt bench analyses --hospitals 3,10 --repetitions 10 \
    --csv docs/bench-analyses.csv --svg docs/bench-analyses.svg
run bench-encrypted-analysis.txt bench encrypted-analysis --hospitals 3,10 --patients 1000 --repetitions 5 \
    --csv docs/bench-encrypted-analysis.csv
run bench-ingest.txt bench ingest --patients 50 --hospitals 3 --seconds 20 --connections 2 --batch 128
