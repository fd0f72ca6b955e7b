#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# A profile-guided build of presenced (CMakeLists.txt, PRESENCE_PGO):
#   scripts/pgo.sh BUILD_DIR [TARGET...]
# 1. configures BUILD_DIR (RelWithDebInfo, $CMAKE_FLAGS) with
#    PRESENCE_PGO=GENERATE and builds presenced instrumented, with the load
#    generator that trains it;
# 2. runs bench/pgo_train.py (~20 s on 127.0.0.1), which writes the profile
#    to BUILD_DIR/pgo;
# 3. configures PRESENCE_PGO=USE and builds TARGETs (default: presenced)
#    with that profile.
# `make bench` and `make install` build this way. With PGO=0 in the
# environment, or a compiler other than GCC, it builds TARGETs once, without
# a profile (the one place the plain build is written). Needs loopback.
set -euo pipefail
if [ $# -lt 1 ]; then
  echo "usage: scripts/pgo.sh BUILD_DIR [TARGET...]" >&2
  exit 2
fi
mkdir -p "$1"
B=$(cd "$1" && pwd)
shift
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(presenced)
jobs=${JOBS:-$(nproc)}
# A failed step leaves the directory configured without a profile, not
# instrumented: the benches' other targets build there too.
unprofiled() { cmake -S . -B "$B" -DPRESENCE_PGO=OFF > /dev/null 2>&1 || true; }
trap unprofiled ERR
# GCC's profile format: another compiler (CC=clang) builds without one.
gcc=1
"${CC:-cc}" -v 2>&1 | grep -q '^gcc version' || gcc=0
if [ "${PGO:-1}" = 0 ] || [ $gcc = 0 ]; then
  [ $gcc = 1 ] ||
    echo "scripts/pgo.sh: ${CC:-cc} is not GCC: building without a profile" >&2
  # shellcheck disable=SC2086
  cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRESENCE_PGO=OFF \
    ${CMAKE_FLAGS:-} > /dev/null
  cmake --build "$B" -j "$jobs" --target "${targets[@]}"
  exit 0
fi
# shellcheck disable=SC2086  # CMAKE_FLAGS is a list of flags
cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPRESENCE_PGO=GENERATE \
  -DPRESENCE_PGO_DIR="$B/pgo" ${CMAKE_FLAGS:-} > /dev/null
# A profile of older code would be merged into the new one: start afresh.
rm -rf "$B/pgo"
cmake --build "$B" -j "$jobs" --target presenced presence_load
python3 bench/pgo_train.py --build "$B"
if ! find "$B/pgo" -name '*.gcda' 2>/dev/null | grep -q .; then
  echo "scripts/pgo.sh: the training run wrote no profile under $B/pgo" >&2
  unprofiled
  exit 1
fi
cmake -S . -B "$B" -DPRESENCE_PGO=USE > /dev/null
cmake --build "$B" -j "$jobs" --target "${targets[@]}"
