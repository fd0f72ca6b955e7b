#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# sdk/go's suite: sdk/go/test/run.sh <path-to-presenced>
# `go test` of the module against that presenced. The module's one
# dependency (github.com/coder/websocket, pinned in go.sum) comes through the
# Go module proxy into the module cache; when it is not cached and the proxy
# cannot be reached, the suite is skipped (exit 77, a reason printed), never
# failed for the network's sake. Go itself comes from scripts/deps.sh --sdk.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$here/../test-lib.sh"
export PATH="$PATH:/usr/local/go/bin:/usr/lib/go/bin"
command -v go >/dev/null || sdk_setup_failed "go is missing"
export GOFLAGS=-mod=mod
cd "$here"
if ! out=$(timeout 120 go mod download -x 2>&1); then
  echo "$out" | tail -5
  echo "SKIPPED: sdk/go: the module's dependency could not be fetched (Go module proxy unreachable?)"
  exit 77
fi
exec env PRESENCED="$presenced" timeout -k 5 240 go test -count=1 -v ./... 2>&1
