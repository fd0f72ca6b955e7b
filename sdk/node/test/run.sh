#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# sdk/node's suite: sdk/node/test/run.sh <path-to-presenced>
# Installs node and npm when missing (scripts/deps.sh --sdk) and the locked
# npm packages (scripts/npm-ci.sh), then runs
# node's test runner over test/ against that presenced, bounded in time.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$here/../test-lib.sh"
bash "$root/scripts/npm-ci.sh" "$here" ws express fastify socket.io socket.io-client typescript || sdk_setup_failed "npm ci failed"
cd "$here"
exec env PRESENCED="$presenced" timeout -k 5 240 node --test --test-timeout=60000 test/
