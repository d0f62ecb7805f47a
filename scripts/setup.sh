#!/usr/bin/env bash
# Installs what a fresh machine lacks to build witmed: clang/libclang (RocksDB's
# bindings), rustfmt, clippy, cargo-nextest, node, chromium and chromedriver. Safe to run again.
set -euo pipefail

need_apt=()
command -v clang >/dev/null 2>&1 || need_apt+=(clang)
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v c++ >/dev/null 2>&1 || need_apt+=(g++)
# simnet signals node processes with kill(1); a test looks for leftovers with pgrep(1).
{ command -v pgrep && [ -x /usr/bin/kill ] || [ -x /bin/kill ]; } >/dev/null 2>&1 || need_apt+=(procps)
# The patient page's tests: its JavaScript encoder runs under node, the page in headless Chromium.
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
command -v cargo-nextest >/dev/null 2>&1 || cargo install cargo-nextest --locked

# Keep the build outside the clone so later runs on this machine reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/witmed-target}"
