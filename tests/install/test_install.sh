#!/bin/sh
# SPDX-License-Identifier: MIT
# Install the build into a temporary DESTDIR, then build and run
# examples/basic_usage.c against the installed libpresence, as a user of the
# library would: with pkg-config (mode "pkgconfig") or with
# find_package(presence) in a small CMake project (mode "cmake").
#
#   test_install.sh MODE BUILD_DIR SOURCE_DIR [SANITIZERS]
#
# SANITIZERS: the -DSANITIZE of the build (e.g. address,undefined); a
# sanitized libpresence needs the same runtime in the program that links it.
set -eu
mode=$1 build=$2 src=$3 san=${4:-}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/presence-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
dest=$tmp/dest
prefix=/usr/local

fail() { echo "FAIL: $*" >&2; exit 1; }

DESTDIR=$dest cmake --install "$build" --prefix "$prefix" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; fail "cmake --install"; }

root=$dest$prefix
libdir=$(cd "$root" && ls -d lib/*/pkgconfig lib/pkgconfig lib64/pkgconfig 2>/dev/null | head -1 | sed 's,/pkgconfig$,,')
[ -n "$libdir" ] || fail "no libpresence.pc under $root/lib*"
for f in bin/presenced bin/presencectl include/presence.h include/presence_store.h \
         "$libdir/libpresence.a" "$libdir/libpresence.so" "$libdir/pkgconfig/libpresence.pc" \
         "$libdir/cmake/presence/presenceConfig.cmake" \
         "$libdir/cmake/presence/presenceConfigVersion.cmake" \
         "$libdir/cmake/presence/presenceTargets.cmake" \
         share/man/man8/presenced.8 share/man/man1/presencectl.1 share/man/man3/libpresence.3 \
         lib/systemd/system/presenced.service; do
  [ -e "$root/$f" ] || fail "not installed: $prefix/$f"
done
grep -q "^ExecStart=$prefix/bin/presenced" "$root/lib/systemd/system/presenced.service" ||
  fail "the installed unit does not run $prefix/bin/presenced"
"$root/bin/presenced" --version | grep -q '^presenced ' || fail "presenced --version"
"$root/bin/presencectl" --version | grep -q '^presencectl ' || fail "presencectl --version"

cflags=""
[ -n "$san" ] && cflags="-fsanitize=$san"
export LD_LIBRARY_PATH="$root/$libdir"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"

case $mode in
pkgconfig)
  export PKG_CONFIG_PATH="$root/$libdir/pkgconfig"
  pkg-config --exists libpresence || fail "pkg-config does not find libpresence"
  flags=$(pkg-config --cflags --libs libpresence)
  echo "pkg-config --cflags --libs libpresence: $flags"
  case $flags in *"$dest"*) ;; *) fail "pkg-config paths do not point into DESTDIR: $flags" ;; esac
  # shellcheck disable=SC2086
  cc -std=c11 -Wall -Werror $cflags -o "$tmp/basic_usage" "$src/examples/basic_usage.c" $flags ||
    fail "cannot build against the installed library"
  # The shared library must be the one used.
  ldd "$tmp/basic_usage" | grep -q "$root/$libdir/libpresence.so" ||
    fail "not linked with the installed libpresence.so"
  ;;
cmake)
  mkdir -p "$tmp/proj"
  cp "$src/examples/basic_usage.c" "$tmp/proj/"
  cat >"$tmp/proj/CMakeLists.txt" <<'CMK'
cmake_minimum_required(VERSION 3.16)
project(uses_presence C)
find_package(presence 0.1 REQUIRED)
add_executable(basic_usage basic_usage.c)
target_link_libraries(basic_usage PRIVATE presence::presence)
add_executable(basic_usage_static basic_usage.c)
target_link_libraries(basic_usage_static PRIVATE presence::presence_static)
CMK
  cmake -S "$tmp/proj" -B "$tmp/proj/build" -DCMAKE_PREFIX_PATH="$root" \
    -DCMAKE_C_FLAGS="$cflags" >"$tmp/cmake.log" 2>&1 ||
    { cat "$tmp/cmake.log" >&2; fail "find_package(presence)"; }
  cmake --build "$tmp/proj/build" >"$tmp/build.log" 2>&1 ||
    { cat "$tmp/build.log" >&2; fail "cannot build with find_package(presence)"; }
  cp "$tmp/proj/build/basic_usage" "$tmp/basic_usage"
  "$tmp/proj/build/basic_usage_static" >"$tmp/out_static.txt" || fail "the static build does not run"
  grep -q "full cleanup" "$tmp/out_static.txt" || fail "unexpected output (static)"
  ;;
*) fail "unknown mode $mode" ;;
esac

"$tmp/basic_usage" >"$tmp/out.txt" || { cat "$tmp/out.txt"; fail "the program does not run"; }
grep -q "full cleanup" "$tmp/out.txt" || { cat "$tmp/out.txt"; fail "unexpected output"; }
echo "ok: $mode"
