#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The type-check of presence.d.ts: `tsc --strict` over a browser program (DOM
# WebSocket) and a node program (npm `ws`), with typescript, ws and their
# types pinned in clients/js/package-lock.json (installed here by npm ci when
# missing). The last line is "N passed, M failed".
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
js=$(cd "$here/../.." && pwd)
root=$(cd "$js/../.." && pwd)
if ! bash "$root/scripts/npm-ci.sh" "$js" typescript ws @types/ws @types/node; then
  echo "0 passed, 1 failed"; exit 1
fi
passed=0 failed=0
for cfg in browser node; do
  if (cd "$here" && "$js/node_modules/.bin/tsc" -p "tsconfig.$cfg.json"); then
    echo "ok: presence.d.ts under tsc --strict, $cfg"; passed=$((passed + 1))
  else
    echo "FAILED: presence.d.ts under tsc --strict, $cfg"; failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
