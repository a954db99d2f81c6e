#!/usr/bin/env bash
# Runs every test of the project: Rust unit, codec and end-to-end tests (real QUIC
# on loopback), then the web client's tests (node + real headless Chromium and
# Firefox ESR). Installs what the tests need when it is missing (Debian packages,
# npm packages).
set -euo pipefail
cd "$(dirname "$0")/.."

export RUST_BACKTRACE="${RUST_BACKTRACE:-0}"

# The cluster tests start real redis-server processes; the README test runs its curl
# examples.
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== installing ${missing[*]}"
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

echo "== cargo test"
cargo test --all-targets

if [ -x web-client/run-tests.sh ] || [ -f web-client/run-tests.sh ]; then
  echo "== web client tests"
  bash web-client/run-tests.sh
fi
