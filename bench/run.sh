#!/usr/bin/env bash
# Side-by-side benchmark: wtgate, the Socket.IO 4 reference and the bare-wtransport
# "floor", one after the other in the same run, each server pinned to cpu0 and its
# load generator to cpu1 (taskset). Prints a table with the ratios wtgate/Socket.IO
# and wtgate/floor; raw reports (one JSON object per line) go to $OUT/results.jsonl.
#
#   bash bench/run.sh            # full run, ≤ ~15 min
#   bash bench/run.sh --quick    # ≤ ~3 min
#   options: --only a,b,c,d   --servers wtgate,socketio,floor   --out DIR   --no-build
#
# Scenarios (see bench/RESULTS.md):
#   a) 200 clients, 1 room, 10 senders: the rate steps up until p99 ≥ 100 ms or loss
#      at two steps in a row
#   b) 1,000 clients, 10 rooms, 100 senders, 2,000 msg/s
#   c) 5,000 idle sessions: server RSS per session and connect rate
#   d) datagrams (Socket.IO: volatile emits) in the shape of (a), until p99 ≥ 100 ms
#      or more than 1% lost, twice in a row
# Server CPU per delivery = utime+stime of the server over the measured window (from
# /proc/PID/stat, read by the generator at the end of the warmup and of sending)
# ÷ deliveries that arrived in that window.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
ONLY="a,b,c,d"
SERVERS="wtgate,socketio,floor"
OUT=""
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    --servers) SERVERS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --no-build) BUILD=0 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
OUT="${OUT:-bench/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: > "$RESULTS"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

for tool in taskset node npm jq; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool" >&2; exit 1; }
done
if [ "$(nproc --all)" -lt 2 ]; then echo "bench/run.sh needs 2 cores (cpu0, cpu1)" >&2; exit 1; fi

if [ "$BUILD" = 1 ]; then
  echo "== building (release)" >&2
  cargo build --release --quiet --bin wtgate --example floor_server
fi
WTGATE="$ROOT/target/release/wtgate"
FLOOR="$ROOT/target/release/examples/floor_server"
if [ ! -d bench/socketio/node_modules ]; then
  (cd bench/socketio && npm ci --no-audit --no-fund --silent)
fi

SECRET="bench-secret-$(date +%s)-0123456789"
# 14 days: `wtgate serve` renews a certificate that expires within a day.
"$WTGATE" certs --out "$WORK/certs" --days 14 > "$WORK/certs.out"
HASH="$(tail -n 1 "$WORK/certs.out")"

if [ "$QUICK" = 1 ]; then
  RATES_A="250 1000 2000"; DUR_A=3s; WARM_A=1s
  DUR_B=5s; WARM_B=1s
  IDLE_C=1000
  RATES_D="250 1000"; DUR_D=3s
else
  RATES_A="250 500 1000 1500 2000 3000 4000 6000"; DUR_A=5s; WARM_A=1s
  DUR_B=10s; WARM_B=2s
  IDLE_C=5000
  RATES_D="250 500 1000 2000 4000"; DUR_D=5s
fi

# start_server NAME: starts it pinned to cpu0, sets SERVER_PID and PORT.
start_server() {
  local name="$1" log="$WORK/$1.out"
  rm -rf "$WORK/data"
  case "$name" in
    wtgate)
      PORT=4433
      taskset -c 0 "$WTGATE" serve --listen "127.0.0.1:$PORT" --secret "$SECRET" \
        --certs-dir "$WORK/certs" --data-dir "$WORK/data" --config bench/wtgate-bench.toml \
        --log warn > "$log" 2>&1 &
      ;;
    floor)
      PORT=4434
      taskset -c 0 "$FLOOR" --listen "127.0.0.1:$PORT" --certs-dir "$WORK/certs" > "$log" 2>&1 &
      ;;
    socketio)
      PORT=4435
      taskset -c 0 node bench/socketio/server.js --port "$PORT" \
        --cert "$WORK/certs/cert.pem" --key "$WORK/certs/key.pem" > "$log" 2>&1 &
      ;;
  esac
  SERVER_PID=$!
  for _ in $(seq 100); do
    if [ "$name" = socketio ]; then
      grep -q "listening" "$log" 2>/dev/null && return 0
    elif grep -q "certificate sha-256:" "$log" 2>/dev/null; then
      HASH="$(grep -m1 "certificate sha-256:" "$log" | awk '{print $3}')"
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.1
  done
  echo "$name did not start:" >&2; cat "$log" >&2; exit 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  sleep 0.5
}

# Receive-buffer drops of the server's UDP socket so far (0 for TCP servers).
udp_drops() {
  ss -uanmH "sport = :$PORT" 2>/dev/null | grep -o 'd[0-9]*)' | tr -dc '0-9' || true
}

# load NAME SCENARIO STEP ARGS...: one generator run pinned to cpu1; appends its
# report, tagged, to $RESULTS and prints a one-line summary.
load() {
  local name="$1" scenario="$2" step="$3"; shift 3
  local json="$WORK/run.json" limit=180
  local loadavg; loadavg="$(cut -d' ' -f1 /proc/loadavg)"
  local drops0; drops0="$(udp_drops)"
  if [ "$name" = socketio ]; then
    timeout "$limit" taskset -c 1 node bench/socketio/load.js --url "https://127.0.0.1:$PORT/chat" \
      --ca "$WORK/certs/cert.pem" --server-pid "$SERVER_PID" --json "$@" > "$json" 2> "$WORK/gen.err" || true
  else
    timeout "$limit" taskset -c 1 "$WTGATE" load --url "https://127.0.0.1:$PORT/chat" \
      --cert-hash "$HASH" --token-secret "$SECRET" --server-pid "$SERVER_PID" --json "$@" \
      > "$json" 2> "$WORK/gen.err" || true
  fi
  if ! jq -e . "$json" >/dev/null 2>&1; then
    echo "  $name $scenario $step: no report" >&2; tail -n 5 "$WORK/gen.err" >&2
    echo '{}' > "$json"
  fi
  local drops1; drops1="$(udp_drops)"
  jq -c --arg s "$name" --arg sc "$scenario" --arg st "$step" --arg la "$loadavg" \
    --arg d "$(( ${drops1:-0} - ${drops0:-0} ))" \
    '. + {server_name: $s, scenario: $sc, step: $st, loadavg_before: ($la | tonumber),
          server_udp_drops: ($d | tonumber)}' \
    "$json" >> "$RESULTS"
  jq -r --arg s "$name" --arg sc "$scenario" --arg st "$step" \
    '"  \($sc) \($s) \($st): \(.deliveries_per_sec // 0 | floor) deliveries/s, p50 \(.latency_ms.p50 // "-") p99 \(.latency_ms.p99 // "-") ms, lost \(.lost // "-"), \(.server.cpu_us_per_delivery // "-") µs/delivery, RSS \(.server.rss_kb_per_session // "-") KiB/session, \(.connects_per_sec // 0 | floor) connects/s"' \
    "$json" >&2
}

# Steps the rate for one server until it falls behind: p99 ≥ 100 ms or loss
# (datagrams: > 1% lost) at two steps in a row. One failed step does not end it:
# with adaptive batching, cost per delivery falls as the rate rises, so a server
# can fail at one rate and hold the next.
step_rates() {
  local name="$1" scenario="$2" rates="$3" dur="$4"; shift 4
  local failed=0
  for rate in $rates; do
    load "$name" "$scenario" "$rate" --clients 200 --rooms 1 --senders 10 --rate "$rate" \
      --duration "$dur" --warmup "$WARM_A" "$@"
    local last; last="$(tail -n 1 "$RESULTS")"
    local ok
    if [ "$scenario" = d ]; then
      ok='(.latency_ms.p99 // 1e9) < 100 and (.expected // 0) > 0 and ((.lost // 1e9) <= 0.01 * .expected)'
    else
      ok='(.latency_ms.p99 // 1e9) < 100 and (.lost // 1) == 0 and (.passed // false)'
    fi
    if jq -e "$ok" <<<"$last" >/dev/null; then
      failed=0
    else
      failed=$((failed + 1))
      [ "$failed" -ge 2 ] && break
    fi
  done
}

IFS=',' read -r -a server_list <<<"$SERVERS"
started=$(date +%s)
for name in "${server_list[@]}"; do
  echo "== $name" >&2
  if [[ ",$ONLY," == *",a,"* ]]; then
    start_server "$name"; step_rates "$name" a "$RATES_A" "$DUR_A"; stop_server
  fi
  if [[ ",$ONLY," == *",b,"* ]]; then
    start_server "$name"
    load "$name" b 2000 --clients 1000 --rooms 10 --senders 100 --rate 2000 \
      --duration "$DUR_B" --warmup "$WARM_B"
    stop_server
  fi
  if [[ ",$ONLY," == *",c,"* ]]; then
    start_server "$name"
    load "$name" c "$IDLE_C" --clients "$IDLE_C" --rooms 50 --senders 0 \
      --duration 2s --warmup 3s
    stop_server
  fi
  if [[ ",$ONLY," == *",d,"* ]]; then
    start_server "$name"; step_rates "$name" d "$RATES_D" "$DUR_D" --mode datagram; stop_server
  fi
done
echo "== done in $(( $(date +%s) - started )) s; raw reports: $RESULTS" >&2

{
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -sr); node $(node --version)"
  echo
  node bench/summarize.mjs "$RESULTS"
} | tee "$OUT/table.md"
