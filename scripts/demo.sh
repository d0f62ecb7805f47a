#!/usr/bin/env bash
# The main job: installs what is missing, builds witmed-lab, and runs `witmed-lab demo`
# (a federation of hospital nodes on this machine). Extra arguments go to the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export WITMED_DATA_DIR="${WITMED_DATA_DIR:-$(cd .. && pwd)/shared/data}"
cargo build --locked -p witmed-lab --bin witmed-lab
exec "$CARGO_TARGET_DIR/debug/witmed-lab" demo "$@"
