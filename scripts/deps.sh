#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Install the Debian 12 packages the build and the tests need, and only those
# that are missing: apt-get runs only when something is absent, so a machine
# that has everything is left untouched (and needs no network).
set -euo pipefail

want=(
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libuv1-dev libhttp-parser-dev libcjson-dev libssl-dev
  libhiredis-dev libcurl4-openssl-dev libcmocka-dev libwslay-dev
  redis-server python3 python3-websockets curl
  openssl  # the CLI: the Redis TLS tests and bench_redis make their certificates
  # systemd-analyze, which checks the installed unit (tests/install).
  systemd
)
# Extra groups, asked for by the Makefile targets that need them.
for arg in "$@"; do
  case "$arg" in
    --browser) want+=(chromium nodejs) ;;
    # `make docs-images`: the pictures of docs/img/*.dot (their SVGs are
    # committed, so only changing a picture needs it).
    --docs) want+=(graphviz) ;;
    # The SDKs' suites (sdk/tests.cmake): pytest with Flask and FastAPI (on
    # uvicorn) for the Python SDK's webhook helpers, node and npm for the
    # Node SDK and the type-checks, Go for the Go SDK.
    --sdk) want+=(python3-pytest python3-flask python3-fastapi python3-uvicorn nodejs npm golang-go) ;;
    *) echo "deps.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

missing=()
for pkg in "${want[@]}"; do
  # nodejs may come from elsewhere than Debian (node 20 on this image).
  if [ "$pkg" = nodejs ] && command -v node >/dev/null 2>&1; then continue; fi
  if [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1; then continue; fi
  if [ "$pkg" = golang-go ] && command -v go >/dev/null 2>&1; then continue; fi
  status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = installed ] || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "deps.sh: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged redis-server starts a system instance; the tests start their
# own servers on private ports and sockets, so that one is left alone.
