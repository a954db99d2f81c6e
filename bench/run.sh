#!/usr/bin/env bash
# Side-by-side benchmark: wtgate, wtgate over WebSocket, the Socket.IO 4 reference (with
# two generators) and the bare-wtransport "floor", one after the other in the same run,
# each server pinned to cpu0 and its load generator to cpu1 (taskset). Prints a table
# with the ratios wtgate/Socket.IO, wtgate-ws/Socket.IO and wtgate/floor; raw reports
# (one JSON object per line) go to $OUT/results.jsonl. Every run (also --quick and
# --only) first measures the machine's raw UDP floor (examples/udp_floor.rs on cpu0: one
# 100-byte datagram sent and received on loopback), and the table gives (a)'s cost per
# delivery at 10k deliveries/s as a multiple of it.
#
#   bash bench/run.sh            # full run, ≤ ~25 min
#   bash bench/run.sh --quick    # ≤ ~5 min
#   options: --only a,b,c,d,e,f,g,h   --servers wtgate,wtgate-ws,socketio,socketio-rs,floor   --out DIR
#            --no-build   --losses "0 1 2 5"   --charts DIR (default bench/charts)   --no-charts
#
# Servers: wtgate (WebTransport), wtgate-ws (the same server and settings, the
# generator on `wtgate load --transport websocket`: wss:// on the same port's TCP
# side, PROTOCOL.md §16), socketio (bench/socketio/server.js driven by load.js, one Node
# process: its own limit near 100–300k deliveries/s), socketio-rs (the same server driven
# by examples/sio_load.rs, the same workload and report from Rust, which goes further),
# floor (bare wtransport; a, c, d only).
#
# Scenarios (see bench/RESULTS.md):
#   a) 200 clients, 1 room, 10 senders: the rate steps up (from 50 msg/s = 10k
#      deliveries/s) until p99 ≥ 100 ms or loss at two steps in a row
#   b) 1,000 clients, 10 rooms, 100 senders, 2,000 msg/s
#   c) 5,000 idle sessions: server RSS per session and connect rate
#   d) datagrams (Socket.IO: volatile emits) in the shape of (a), until p99 ≥ 100 ms
#      or more than 1% lost, twice in a row
#   e) packet loss (wtgate and Socket.IO): server and generator in two network
#      namespaces joined by a veth pair, nftables dropping a random N‰ of packets on
#      the input hook of both ends (an output-hook drop returns EPERM to the sender;
#      gVisor/this kernel has no netem: loss only, no added delay); 200 clients,
#      10 rooms, 20 senders, 200 msg/s at each of --losses (percent). Needs root,
#      `ip` and `nft` (installed with apt-get when missing); the namespaces are
#      removed on exit, also on failure.
#   f) clients in several rooms: 200 clients, 20 rooms, 4 rooms each, 20 senders,
#      400 msg/s, with the loss of (e) at 0 % and 2 % (in the namespaces): the
#      per-room p99 spread shows whether a loss in one room delays the others
#   g) churn: 200 steady clients (10 rooms, 10 senders, 500 msg/s) while 100
#      sessions/s connect, join, stay 2 s and leave: churn connect latency and the
#      steady sessions' p99, next to the same run without churn
#   h) Centrifugo's shape (their 2020 million-connection benchmark, scaled down):
#      1,000 clients, each in a personal room and a group room of 10, 100-byte
#      bodies, 100 senders, 2,000 msg/s (each message reaches its group's 10)
# Server CPU per delivery = utime+stime of the server over the measured window (from
# /proc/PID/stat, read by the generator at the end of the warmup and of sending)
# ÷ deliveries that arrived in that window.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

QUICK=0
ONLY="a,b,c,d,e,f,g,h"
SERVERS="wtgate,wtgate-ws,socketio,socketio-rs,floor"
OUT=""
BUILD=1
LOSSES="0 1 2 5"
CHARTS="bench/charts"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --only) ONLY="$2"; shift ;;
    --servers) SERVERS="$2"; shift ;;
    --out) OUT="$2"; shift ;;
    --no-build) BUILD=0 ;;
    --losses) LOSSES="$2"; shift ;;
    --charts) CHARTS="$2"; shift ;;
    --no-charts) CHARTS="" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
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
# Network namespaces of scenario (e), named per run so parallel runs never collide.
NS_SRV="wtgb-s-$$"; NS_GEN="wtgb-g-$$"
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  ip netns del "$NS_SRV" 2>/dev/null || true
  ip netns del "$NS_GEN" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in taskset node npm jq; do
  command -v "$tool" >/dev/null || { echo "bench/run.sh needs $tool" >&2; exit 1; }
done
if [ "$(nproc --all)" -lt 2 ]; then echo "bench/run.sh needs 2 cores (cpu0, cpu1)" >&2; exit 1; fi

if [ "$BUILD" = 1 ]; then
  echo "== building (release)" >&2
  cargo build --release --quiet --bin wtgate --example floor_server --example loop_floor --example udp_floor \
    --example sio_load
fi
# WTGATE_BIN runs another build (e.g. a copy of the previous commit's, for before/after).
WTGATE="${WTGATE_BIN:-$ROOT/target/release/wtgate}"
FLOOR="$ROOT/target/release/examples/floor_server"
LOOP_FLOOR="$ROOT/target/release/examples/loop_floor"
UDP_FLOOR="$ROOT/target/release/examples/udp_floor"
SIO_LOAD="$ROOT/target/release/examples/sio_load"
if [ ! -x "$UDP_FLOOR" ]; then
  echo "no $UDP_FLOOR: build it (cargo build --release --example udp_floor) or drop --no-build" >&2
  exit 1
fi
if [[ ",$SERVERS," == *",socketio-rs,"* ]] && [ ! -x "$SIO_LOAD" ]; then
  echo "no $SIO_LOAD: build it (cargo build --release --example sio_load) or drop --no-build" >&2
  exit 1
fi
if [ ! -d bench/socketio/node_modules ]; then
  (cd bench/socketio && npm ci --no-audit --no-fund --silent)
fi

SECRET="bench-secret-$(date +%s)-0123456789"
# 14 days: `wtgate serve` renews a certificate that expires within a day.
"$WTGATE" certs --out "$WORK/certs" --days 14 > "$WORK/certs.out"
HASH="$(tail -n 1 "$WORK/certs.out")"

if [ "$QUICK" = 1 ]; then
  RATES_A="50 250 1000 2000"; DUR_A=3s; WARM_A=1s
  DUR_B=5s; WARM_B=1s
  IDLE_C=1000
  RATES_D="250 1000"; DUR_D=3s
  DUR_E=5s; WARM_E=1s
  DUR_F=5s; CLIENTS_H=500
else
  RATES_A="50 250 500 1000 1500 2000 3000 4000 6000"; DUR_A=5s; WARM_A=1s
  DUR_B=10s; WARM_B=2s
  IDLE_C=5000
  RATES_D="250 500 1000 2000 4000"; DUR_D=5s
  DUR_E=15s; WARM_E=2s
  DUR_F=10s; CLIENTS_H=1000
fi

# Where servers listen and how processes are started: loopback, or (scenario e)
# the two network namespaces (SRV_EXEC / GEN_EXEC prefix the server's and the
# generator's commands).
HOST=127.0.0.1
SRV_EXEC=()
GEN_EXEC=()

# start_server NAME: starts it pinned to cpu0, sets SERVER_PID and PORT.
start_server() {
  local name="$1" log="$WORK/$1.out"
  rm -rf "$WORK/data"
  case "$name" in
    wtgate|wtgate-ws|wtgate-loop|wtgate-wtransport)
      PORT=4433
      local engine="${WTGATE_ENGINE:-loop}"
      [ "$name" = wtgate-loop ] && engine=loop
      [ "$name" = wtgate-wtransport ] && engine=wtransport
      "${SRV_EXEC[@]}" taskset -c 0 "$WTGATE" serve --engine "$engine" --listen "$HOST:$PORT" --secret "$SECRET" \
        --certs-dir "$WORK/certs" --data-dir "$WORK/data" --config bench/wtgate-bench.toml \
        --log warn > "$log" 2>&1 &
      ;;
    floor)
      PORT=4434
      "${SRV_EXEC[@]}" taskset -c 0 "$FLOOR" --listen "$HOST:$PORT" --certs-dir "$WORK/certs" > "$log" 2>&1 &
      ;;
    loop-floor)
      PORT=4436
      "${SRV_EXEC[@]}" taskset -c 0 "$LOOP_FLOOR" --listen "$HOST:$PORT" --certs-dir "$WORK/certs" > "$log" 2>&1 &
      ;;
    socketio|socketio-rs)
      PORT=4435
      "${SRV_EXEC[@]}" taskset -c 0 node bench/socketio/server.js --port "$PORT" --host "$HOST" \
        --cert "$WORK/certs/cert.pem" --key "$WORK/certs/key.pem" > "$log" 2>&1 &
      ;;
  esac
  # `ip netns exec` and `taskset` exec their command: $! is the server itself.
  SERVER_PID=$!
  for _ in $(seq 100); do
    if [[ "$name" == socketio* ]]; then
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
  "${SRV_EXEC[@]}" ss -uanmH "sport = :$PORT" 2>/dev/null | grep -o 'd[0-9]*)' | tr -dc '0-9' || true
}

# load NAME SCENARIO STEP ARGS...: one generator run pinned to cpu1; appends its
# report, tagged, to $RESULTS and prints a one-line summary.
load() {
  local name="$1" scenario="$2" step="$3"; shift 3
  local json="$WORK/run.json" limit=180
  local loadavg; loadavg="$(cut -d' ' -f1 /proc/loadavg)"
  local drops0; drops0="$(udp_drops)"
  if [[ "$name" == socketio* ]]; then
    # socketio-rs: the same flags and report, from the Rust generator.
    local gen=(node bench/socketio/load.js)
    [ "$name" = socketio-rs ] && gen=("$SIO_LOAD")
    timeout "$limit" "${GEN_EXEC[@]}" taskset -c 1 "${gen[@]}" --url "https://$HOST:$PORT/chat" \
      --ca "$WORK/certs/cert.pem" --tls-name localhost --server-pid "$SERVER_PID" --json "$@" > "$json" 2> "$WORK/gen.err" || true
  else
    local transport=webtransport
    [ "$name" = wtgate-ws ] && transport=websocket
    timeout "$limit" "${GEN_EXEC[@]}" taskset -c 1 "$WTGATE" load --url "https://$HOST:$PORT/chat" \
      --transport "$transport" --cert-hash "$HASH" --token-secret "$SECRET" \
      --server-pid "$SERVER_PID" --json "$@" > "$json" 2> "$WORK/gen.err" || true
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
      # An `if`, not `&&`: a failed last step must not end the script (set -e).
      if [ "$failed" -ge 2 ]; then break; fi
    fi
  done
}

# Scenario (e)'s network: server namespace 10.77.0.1, generator namespace
# 10.77.0.2, one veth pair; loss set per step with set_loss.
netns_up() {
  command -v nft >/dev/null || apt-get install -y -q nftables >/dev/null
  command -v ip >/dev/null || apt-get install -y -q iproute2 >/dev/null
  ip netns add "$NS_SRV"
  ip netns add "$NS_GEN"
  ip link add wtgb-s netns "$NS_SRV" type veth peer name wtgb-g netns "$NS_GEN"
  ip -n "$NS_SRV" addr add 10.77.0.1/24 dev wtgb-s
  ip -n "$NS_GEN" addr add 10.77.0.2/24 dev wtgb-g
  for ns in "$NS_SRV" "$NS_GEN"; do
    ip -n "$ns" link set lo up
    ip netns exec "$ns" nft add table inet wtgb
    ip netns exec "$ns" nft add chain inet wtgb input '{ type filter hook input priority 0; policy accept; }'
  done
  ip -n "$NS_SRV" link set wtgb-s up
  ip -n "$NS_GEN" link set wtgb-g up
  HOST=10.77.0.1
  SRV_EXEC=(ip netns exec "$NS_SRV")
  GEN_EXEC=(ip netns exec "$NS_GEN")
}
netns_down() {
  ip netns del "$NS_SRV" 2>/dev/null || true
  ip netns del "$NS_GEN" 2>/dev/null || true
  HOST=127.0.0.1; SRV_EXEC=(); GEN_EXEC=()
}
# set_loss PERCENT: drop that share of the packets arriving on each veth end.
set_loss() {
  local permille; permille="$(awk -v p="$1" 'BEGIN { printf "%d", p * 10 }')"
  for pair in "$NS_SRV:wtgb-s" "$NS_GEN:wtgb-g"; do
    local ns="${pair%%:*}" dev="${pair##*:}"
    ip netns exec "$ns" nft flush chain inet wtgb input
    if [ "$permille" -gt 0 ]; then
      ip netns exec "$ns" nft add rule inet wtgb input iifname "$dev" numgen random mod 1000 "<" "$permille" drop
    fi
  done
}

IFS=',' read -r -a server_list <<<"$SERVERS"
started=$(date +%s)

# The machine's raw UDP floor, once per run, on the servers' core: one 100-byte datagram
# sent and received on loopback, 500,000 times or 5 s; µs of CPU per packet.
echo "== udp-floor" >&2
loadavg="$(cut -d' ' -f1 /proc/loadavg)"
if taskset -c 0 "$UDP_FLOOR" --packets 500000 --seconds 5 --bytes 100 > "$WORK/udp.json" \
  && jq -e . "$WORK/udp.json" >/dev/null 2>&1; then
  jq -c --arg la "$loadavg" \
    '. + {server_name: "udp-floor", scenario: "udp", step: "100", loadavg_before: ($la | tonumber)}' \
    "$WORK/udp.json" >> "$RESULTS"
  jq -r '"  udp-floor: \(.us_per_packet // "-") µs CPU (\(.wall_us_per_packet) µs wall) per \(.bytes)-byte datagram sent + received, \(.packets) packets"' \
    "$WORK/udp.json" >&2
else
  echo "  udp-floor: no report" >&2
fi
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
  [[ "$name" == *floor ]] && continue   # the floor has one room per session and no churn story
  if [[ ",$ONLY," == *",g,"* ]]; then
    for churn in 0 100; do
      start_server "$name"
      load "$name" g "$churn" --clients 200 --rooms 10 --senders 10 --rate 500 \
        --duration "$DUR_F" --warmup 2s --churn-rate "$churn" --churn-life 2s
      stop_server
    done
  fi
  if [[ ",$ONLY," == *",h,"* ]]; then
    start_server "$name"
    load "$name" h "$CLIENTS_H" --clients "$CLIENTS_H" --group-size 10 --senders 100 --rate 2000 \
      --body 100 --duration "$DUR_F" --warmup 2s
    stop_server
  fi
done
# (e) side by side per loss level, so both servers see the same minutes.
if [[ ",$ONLY," == *",e,"* ]]; then
  echo "== e: packet loss $LOSSES %" >&2
  netns_up
  for loss in $LOSSES; do
    set_loss "$loss"
    for name in "${server_list[@]}"; do
      [[ "$name" == *floor ]] && continue
      start_server "$name"
      load "$name" e "$loss" --clients 200 --rooms 10 --senders 20 --rate 200 \
        --duration "$DUR_E" --warmup "$WARM_E"
      stop_server
    done
  done
  netns_down
fi
# (f) in the namespaces too: clean, then with 2 % loss.
if [[ ",$ONLY," == *",f,"* ]]; then
  echo "== f: 4 rooms per client" >&2
  netns_up
  for loss in 0 2; do
    set_loss "$loss"
    for name in "${server_list[@]}"; do
      [[ "$name" == *floor ]] && continue
      start_server "$name"
      load "$name" f "$loss" --clients 200 --rooms 20 --rooms-per-client 4 --senders 20 \
        --rate 400 --duration "$DUR_F" --warmup 2s
      stop_server
    done
  done
  netns_down
fi
echo "== done in $(( $(date +%s) - started )) s; raw reports: $RESULTS" >&2

{
  echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')), $(free -g | awk '/Mem:/{print $2}') GiB; $(uname -sr); node $(node --version)"
  echo
  node bench/summarize.mjs "$RESULTS"
} | tee "$OUT/table.md"

# Charts (matplotlib, installed with pip when missing) next to RESULTS.md.
if [ -n "$CHARTS" ]; then
  if ! python3 -c 'import matplotlib' 2>/dev/null; then
    python3 -m pip install --quiet matplotlib >&2 || echo "no matplotlib: charts skipped" >&2
  fi
  python3 bench/charts.py "$CHARTS" "$RESULTS" || echo "charts failed" >&2
fi
