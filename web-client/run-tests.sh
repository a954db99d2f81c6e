#!/usr/bin/env bash
# Runs the web client's tests: protocol vectors and malformed input, typings
# (tsc), and the library and demo page in real headless Chromium and Firefox ESR
# against a real `wtgate serve --dev`. Installs what is missing first: npm
# packages, Debian's chromium and firefox-esr, the wtgate binary. Fails (never
# skips) when any of it is broken: a browser that does not start fails its tests.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing node and npm (apt)"
  apt-get update -qq
  apt-get install -y -qq nodejs npm
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "node $node_major is too old: the tests need node >= 20" >&2
  exit 1
fi

if [ ! -d node_modules/puppeteer-core ] || [ ! -d node_modules/typescript ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
fi

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
FIREFOX="${FIREFOX:-/usr/bin/firefox-esr}"
browsers=()
[ -x "$CHROMIUM" ] || browsers+=(chromium)
[ -x "$FIREFOX" ] || browsers+=(firefox-esr)
if [ ${#browsers[@]} -gt 0 ]; then
  echo "== installing ${browsers[*]} (apt)"
  apt-get update -qq
  apt-get install -y -qq "${browsers[@]}"
fi
export CHROMIUM FIREFOX
echo "== engines: ${WTGATE_BROWSERS:-chromium,firefox}"
echo "== browsers: $("$CHROMIUM" --version 2>/dev/null | tail -1); $("$FIREFOX" --version 2>/dev/null | tail -1)"

echo "== building wtgate"
(cd .. && cargo build --bin wtgate)

echo "== node --test"
node --test --test-reporter=spec tests/*.test.mjs
