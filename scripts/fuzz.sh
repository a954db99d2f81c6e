#!/usr/bin/env bash
# Runs each fuzz target for a while (default 60 s each): the stream frame decoder,
# the datagram decoder, the WebSocket lane decoder and the token parser. Needs cargo-fuzz (installed when
# missing); works on the stable toolchain through RUSTC_BOOTSTRAP.
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in stream_frame datagram websocket_lane token; do
  mkdir -p "corpus/$target"
  echo "== fuzz $target for ${secs}s"
  cargo fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -max_len=4096
done
