#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# sdk/node's suite: sdk/node/test/run.sh <path-to-presenced>
# Installs node and npm when missing (scripts/deps.sh --sdk) and the locked
# npm packages (scripts/npm-ci.sh), then runs
# node's test runner over test/ against that presenced, bounded in time.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=$(cd "$here/../.." && pwd)
[ $# -ge 1 ] && [ -x "$1" ] || { echo "usage: $0 <path-to-presenced>" >&2; exit 2; }
presenced=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
bash "$root/scripts/deps.sh" --sdk || { echo "0 passed, 1 failed"; exit 1; }
bash "$root/scripts/npm-ci.sh" "$here" ws express fastify typescript || { echo "0 passed, 1 failed"; exit 1; }
cd "$here"
exec env PRESENCED="$presenced" timeout -k 5 240 node --test --test-timeout=60000 test/
