#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Entry point of the JS and browser tests:  tests/browser/run.sh <path-to-presenced>
#
# Installs what is missing (Debian chromium via scripts/deps.sh --browser; the
# npm packages of package-lock.json via `npm ci` when node_modules is missing
# or stale), then runs, each bounded in time:
#   1. clients/js unit tests (fake WebSocket and clock; web/ copy check),
#   2. clients/js in node (npm ws) against a real presenced,
#   3. two chromium users and the WebSocket interop checks against a real presenced.
# Screenshots go to tests/browser/artifacts/. The last line is "N passed, M failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
if [ $# -lt 1 ] || [ ! -x "$1" ]; then
  echo "usage: $0 <path-to-presenced>" >&2
  echo "0 passed, 1 failed"
  exit 2
fi
presenced=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
SUITE_TIMEOUT=${SUITE_TIMEOUT:-240}

fail_setup() { echo "run.sh: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

bash "$root/scripts/deps.sh" --browser || fail_setup "scripts/deps.sh --browser failed"
command -v node >/dev/null || fail_setup "node is missing"
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM:-}" ] || fail_setup "chromium is missing"

# npm ci when node_modules is missing or does not match package-lock.json.
# A lock keeps two concurrent runs (two build trees) from installing at once.
(
  flock -w 300 9 || exit 1
  cd "$here"
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  have=$(cat node_modules/.package-lock.sha256 2>/dev/null || true)
  if [ "$want" != "$have" ] || [ ! -d node_modules/playwright-core ] || [ ! -d node_modules/ws ]; then
    echo "run.sh: npm ci"
    npm ci --no-audit --no-fund --loglevel=error || exit 1
    echo "$want" > node_modules/.package-lock.sha256
  fi
) 9>"${TMPDIR:-/tmp}/presenced-browser-npm.lock" || fail_setup "npm ci failed"

mkdir -p "$here/artifacts"
passed=0
failed=0

# Run one node --test suite in its own process group, bounded in time; on a
# timeout the group (node, the presenced and chromium it started) is stopped.
run_suite() {
  local name=$1; shift
  local out="$here/artifacts/$name.tap"
  echo "== $name"
  ( cd "$root" && exec setsid env PRESENCED="$presenced" node --test --test-reporter=tap \
      --test-timeout=120000 "$@" ) >"$out" 2>&1 &
  local pid=$! waited=0
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$waited" -ge $((SUITE_TIMEOUT * 10)) ]; then
      echo "run.sh: $name timed out after ${SUITE_TIMEOUT}s, stopping it" >&2
      kill -TERM -- "-$pid" 2>/dev/null; sleep 3; kill -KILL -- "-$pid" 2>/dev/null
      break
    fi
    sleep 0.1; waited=$((waited + 1))
  done
  wait "$pid"; local rc=$?
  grep -E '^(not )?ok [0-9]+ ' "$out" | sed 's/^/  /'
  local p f c
  p=$(sed -n 's/^# pass \([0-9]*\)$/\1/p' "$out" | tail -1)
  f=$(sed -n 's/^# fail \([0-9]*\)$/\1/p' "$out" | tail -1)
  c=$(sed -n 's/^# cancelled \([0-9]*\)$/\1/p' "$out" | tail -1)
  p=${p:-0}; f=$(( ${f:-0} + ${c:-0} ))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi   # crashed or timed out
  if [ "$f" -ne 0 ]; then
    echo "---- $name output (failures) ----"
    grep -v -E '^\s+(duration_ms|\.\.\.|---)' "$out" | grep -A 25 '^\s*not ok' | head -120
  fi
  passed=$((passed + p)); failed=$((failed + f))
}

run_suite unit clients/js/test/
run_suite node-client tests/browser/node-client.test.js
run_suite browser tests/browser/browser.test.js
run_suite rooms tests/browser/rooms.test.js
run_suite status tests/browser/status.test.js
run_suite origin tests/browser/origin.test.js
run_suite readme tests/browser/readme.test.js
run_suite network tests/browser/network.test.js

echo "screenshots: $here/artifacts/"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
