#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# scripts/npm-ci.sh DIR [MODULE...]: make DIR/node_modules match
# DIR/package-lock.json, running `npm ci` only when it does not (the lock's
# hash is kept in node_modules/.package-lock.sha256) or when a MODULE named
# is missing. A file lock keeps two test runs (two build trees under ctest
# -j2) from installing into the same directory at once. Exits non-zero with a
# message when npm is missing or `npm ci` fails.
set -euo pipefail
dir=$(cd "$1" && pwd); shift
command -v npm >/dev/null || { echo "npm-ci.sh: npm is missing" >&2; exit 1; }
lock="${TMPDIR:-/tmp}/presenced-npm-$(echo "$dir" | sha256sum | cut -c1-16).lock"
(
  flock -w 300 9 || { echo "npm-ci.sh: $dir is locked" >&2; exit 1; }
  cd "$dir"
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  have=$(cat node_modules/.package-lock.sha256 2>/dev/null || true)
  stale=0
  [ "$want" = "$have" ] || stale=1
  for m in "$@"; do [ -d "node_modules/$m" ] || stale=1; done
  if [ "$stale" = 1 ]; then
    echo "npm-ci.sh: npm ci in $dir"
    npm ci --no-audit --no-fund --loglevel=error >&2
    echo "$want" > node_modules/.package-lock.sha256
  fi
) 9>"$lock"
