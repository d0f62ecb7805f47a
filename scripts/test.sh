#!/usr/bin/env bash
# The test command: installs what is missing, then format check, clippy with
# warnings as errors, and every test (cargo nextest). Tests read the shared
# data from WITMED_DATA_DIR (default ../shared/data) and fail, never skip,
# when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
export WITMED_DATA_DIR="${WITMED_DATA_DIR:-$(cd .. && pwd)/shared/data}"

cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The feature lets the exact-equality tests of encrypted mode switch noise off
# (see lab/tests/encrypted.rs); the release the README builds never has it.
cargo nextest run --workspace --locked --no-fail-fast --features witmed-node/insecure-noise-off
