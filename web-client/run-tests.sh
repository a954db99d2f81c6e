#!/usr/bin/env bash
# Runs the web client's tests: protocol vectors and malformed input, typings
# (tsc), and the library and demo page in real headless Chromium against a real
# `wtgate serve --dev`. Installs what is missing first: npm packages, Debian's
# chromium, the wtgate binary. Fails (never skips) when any of it is broken.
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

if [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/typescript ] \
   || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "== npm ci"
  npm ci --no-audit --no-fund
fi

CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "== installing chromium (apt)"
  apt-get update -qq
  apt-get install -y -qq chromium
fi
export CHROMIUM

echo "== building wtgate"
(cd .. && cargo build --bin wtgate)

echo "== node --test"
node --test --test-reporter=spec tests/*.test.mjs
