#!/bin/sh
# SPDX-License-Identifier: MIT
# Install the build into a temporary DESTDIR, then build and run
# examples/basic_usage.c against the installed libpresence, as a user of the
# library would: with pkg-config (mode "pkgconfig") or with
# find_package(presence) in a small CMake project (mode "cmake"). Mode
# "system" installs as a distribution package would (PREFIX=/usr): the
# libraries in the multiarch directory, the systemd unit running the
# installed binary (checked by systemd-analyze verify), the Redis store's
# header, library and pkg-config file (a program built against them), and a
# licence field in every package file.
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
[ "$mode" = system ] && prefix=/usr

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
# The soname follows the ABI: 0.<minor> while a 0.x minor may break it (as
# the CMake package's version file says), the major version from 1.0 on.
version=$(sed -n 's/^Version: //p' "$root/$libdir/pkgconfig/libpresence.pc")
case $version in
0.*) want_soname=libpresence.so.$(echo "$version" | cut -d. -f1,2) ;;
*) want_soname=libpresence.so.${version%%.*} ;;
esac
soname=$(readelf -d "$root/$libdir/libpresence.so" | sed -n 's/.*Library soname: \[\(.*\)\]/\1/p')
[ "$soname" = "$want_soname" ] || fail "libpresence.so's soname is $soname, not $want_soname (version $version)"
[ -e "$root/$libdir/$want_soname" ] || fail "not installed: $prefix/$libdir/$want_soname"
"$root/bin/presenced" --version | grep -q '^presenced ' || fail "presenced --version"
"$root/bin/presencectl" --version | grep -q '^presencectl ' || fail "presencectl --version"

grep -q "^ExecStartPre=$prefix/bin/presenced " "$root/lib/systemd/system/presenced.service" ||
  fail "the installed unit's check step does not run $prefix/bin/presenced"

# The shared library's dynamic symbols are exactly the functions the
# installed headers declare (presence.h, presence_store.h): no internal
# (presence__*) an embedder could link against and we could never change
# again, nothing outside the prefix to collide with an embedder's names,
# and no declared function missing.
if command -v nm >/dev/null 2>&1; then
  for h in presence.h presence_store.h; do
    cc -E -P -I"$root/include" "$root/include/$h"
  done | grep -o '\bpresence_[A-Za-z0-9_]*[[:space:]]*(' | sed 's/[[:space:]]*($//' |
    sort -u >"$tmp/declared"
  [ -s "$tmp/declared" ] || fail "no function found in presence.h and presence_store.h"
  nm -D --defined-only "$root/$libdir/libpresence.so" | awk 'NF == 3 {print $3}' |
    sort -u >"$tmp/exported"
  extra=$(comm -13 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
  missing=$(comm -23 "$tmp/declared" "$tmp/exported" | tr '\n' ' ')
  [ -z "$extra" ] || fail "libpresence.so exports what no installed header declares: $extra"
  [ -z "$missing" ] || fail "libpresence.so does not export what presence.h declares: $missing"
  echo "libpresence.so exports the $(wc -l <"$tmp/exported") functions of its headers, nothing else"
fi

cflags=""
[ -n "$san" ] && cflags="-fsanitize=$san"

# An embedder of the Redis store: the store on a libuv loop, attached to a
# presence_t and freed with it (the Redis it names is not there: nothing is
# sent). It calls into the store, the store into libpresence's internals.
cat >"$tmp/uses_redis.c" <<'C'
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <uv.h>
#include "presence.h"
#include "presence_redis.h"
int main(void) {
  presence_redis_options_t o = {0};
  presence_store_t *st = NULL;
  /* No loop: refused with a documented error, nothing started. */
  if (presence_store_redis_new(&o, &st) != PRESENCE_EINVAL) return 1;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 2;
  o.loop = &loop;
  o.url = "redis://127.0.0.1:1/0";
  if (presence_store_redis_new(&o, &st) != 0) return 3;
  presence_options_t po = {0};
  po.store = st;
  presence_t *p = NULL;
  if (presence_new(&po, &p) != 0) return 4;
  uv_run(&loop, UV_RUN_NOWAIT);
  presence_free(p);
  uv_run(&loop, UV_RUN_DEFAULT);
  if (uv_loop_close(&loop) != 0) return 5;
  printf("attached and freed\n");
  return 0;
}
C
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
  # Every installed header on its own, as strict C11 and as C++ (extern "C"):
  # an embedder's warnings as errors must not trip on ours.
  for h in presence.h presence_store.h presence_redis.h; do
    [ -e "$root/include/$h" ] || continue
    printf '#include <%s>\nint presence_header_check_;\n' "$h" >"$tmp/h.c"
    # shellcheck disable=SC2086
    cc -std=c11 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags libpresence) \
      -c "$tmp/h.c" -o "$tmp/h.o" || fail "$h is not clean C11 (-Wall -Wextra -pedantic)"
    if command -v c++ >/dev/null 2>&1; then
      cp "$tmp/h.c" "$tmp/h.cc"
      # shellcheck disable=SC2086
      c++ -std=c++11 -Wall -Wextra -Werror -pedantic $(pkg-config --cflags libpresence) \
        -c "$tmp/h.cc" -o "$tmp/h.o" || fail "$h does not compile as C++"
    fi
  done
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
  # The Redis store through the package's component, in a project whose
  # own HIREDIS_*/LIBUV_* variables (its own pkg_check_modules, a vendored
  # hiredis) the package must neither set nor change: a package gives
  # targets, and find_package(presence) must not clobber the consumer's
  # variables or add its own.
  if [ -e "$root/$libdir/cmake/presence/presenceRedisTargets.cmake" ]; then
    mkdir -p "$tmp/rproj"
    cp "$tmp/uses_redis.c" "$tmp/rproj/"
    cat >"$tmp/rproj/CMakeLists.txt" <<'CMK'
cmake_minimum_required(VERSION 3.16)
project(uses_presence_redis C)
set(HIREDIS_LIBRARIES "mine")
set(LIBUV_INCLUDE_DIRS "mine too")
macro(deps_vars out)
  get_cmake_property(_v VARIABLES)
  get_cmake_property(_c CACHE_VARIABLES)
  set(${out} ${_v} ${_c})
  list(FILTER ${out} INCLUDE REGEX "^(HIREDIS|LIBUV)_")
  list(REMOVE_DUPLICATES ${out})
  list(SORT ${out})
endmacro()
deps_vars(before)
find_package(presence 0.1 REQUIRED COMPONENTS redis)
deps_vars(after)
if(NOT before STREQUAL after)
  message(FATAL_ERROR "find_package(presence COMPONENTS redis) left variables: before [${before}], after [${after}]")
endif()
if(NOT HIREDIS_LIBRARIES STREQUAL "mine" OR NOT LIBUV_INCLUDE_DIRS STREQUAL "mine too")
  message(FATAL_ERROR "find_package(presence COMPONENTS redis) changed the project's variables: HIREDIS_LIBRARIES=[${HIREDIS_LIBRARIES}] LIBUV_INCLUDE_DIRS=[${LIBUV_INCLUDE_DIRS}]")
endif()
add_executable(uses_redis uses_redis.c)
target_link_libraries(uses_redis PRIVATE presence::redis)
CMK
    cmake -S "$tmp/rproj" -B "$tmp/rproj/build" -DCMAKE_PREFIX_PATH="$root" \
      -DCMAKE_C_FLAGS="$cflags" >"$tmp/rcmake.log" 2>&1 ||
      { cat "$tmp/rcmake.log" >&2; fail "find_package(presence COMPONENTS redis)"; }
    cmake --build "$tmp/rproj/build" >"$tmp/rbuild.log" 2>&1 ||
      { cat "$tmp/rbuild.log" >&2; fail "cannot build with presence::redis"; }
    "$tmp/rproj/build/uses_redis" | grep -q "attached and freed" ||
      fail "the presence::redis program does not run"
  fi
  ;;
system)
  # The multiarch directory (GNUInstallDirs on Debian), whatever the
  # prefix was at configure time.
  triplet=$(cc -print-multiarch 2>/dev/null || true)
  if [ -n "$triplet" ]; then
    [ "$libdir" = "lib/$triplet" ] || fail "libraries in $prefix/$libdir, not $prefix/lib/$triplet"
  fi
  for f in include/presence_redis.h "$libdir/libpresence_redis.a" \
           "$libdir/pkgconfig/libpresence_redis.pc" \
           "$libdir/cmake/presence/presenceRedisTargets.cmake"; do
    [ -e "$root/$f" ] || fail "not installed: $prefix/$f"
  done
  # Every package file names the licence.
  for f in "$root/$libdir/pkgconfig/libpresence.pc" "$root/$libdir/pkgconfig/libpresence_redis.pc"; do
    grep -q '^License: MIT$' "$f" || fail "no License: MIT in $f"
  done
  grep -q 'Licence: MIT' "$root/$libdir/cmake/presence/presenceConfig.cmake" ||
    fail "presenceConfig.cmake does not name the licence"
  for f in clients/js/package.json sdk/node/package.json tests/browser/package.json; do
    [ -e "$src/$f" ] || continue
    grep -q '"license": "MIT"' "$src/$f" || fail "no \"license\": \"MIT\" in $f"
  done
  [ ! -e "$src/sdk/python/pyproject.toml" ] ||
    grep -q '^license = { text = "MIT" }' "$src/sdk/python/pyproject.toml" ||
    fail "no licence in sdk/python/pyproject.toml"
  [ ! -e "$src/sdk/go/go.mod" ] || [ -e "$src/sdk/go/LICENSE" ] ||
    fail "sdk/go has no LICENSE (go.mod has no licence field)"

  # The unit, as systemd reads it: a root holding the installed unit and
  # binary beside this machine's own targets (sysinit.target and the like).
  if command -v systemd-analyze >/dev/null 2>&1 && [ -d /usr/lib/systemd/system ]; then
    vroot=$tmp/vroot
    mkdir -p "$vroot/usr/lib/systemd/system" "$vroot$prefix/bin" "$vroot/etc"
    cp -a /usr/lib/systemd/system/*.target "$vroot/usr/lib/systemd/system/"
    cp "$root/lib/systemd/system/presenced.service" "$vroot/usr/lib/systemd/system/"
    cp "$root/bin/presenced" "$vroot$prefix/bin/"
    # --man=no: the Documentation= pages are checked above as files; man(1)
    # itself is not needed to run presenced.
    systemd-analyze verify --man=no --root="$vroot" presenced.service \
      >"$tmp/verify.log" 2>&1 || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify"; }
    echo "systemd-analyze verify: the installed unit is valid"
  else
    echo "SKIP systemd-analyze verify: no systemd-analyze or no systemd units on this machine (install the Debian package systemd)"
  fi

  # A program against the installed Redis store, through pkg-config.
  export PKG_CONFIG_PATH="$root/$libdir/pkgconfig"
  flags=$(pkg-config --cflags --libs libpresence_redis) ||
    fail "pkg-config does not find libpresence_redis"
  # shellcheck disable=SC2086
  cc -std=c11 -Wall -Werror $cflags -o "$tmp/uses_redis" "$tmp/uses_redis.c" $flags ||
    fail "cannot build against the installed Redis store"
  "$tmp/uses_redis" | grep -q "attached and freed" || fail "the Redis store program does not run"
  # The store links the static libpresence (libpresence.so keeps its
  # internals to itself): one copy of the library in the program.
  ! ldd "$tmp/uses_redis" | grep -q 'libpresence\.so' ||
    fail "the Redis store program loads libpresence.so beside the static library"
  # The library program, as in mode pkgconfig.
  # shellcheck disable=SC2086
  cc -std=c11 -Wall -Werror $cflags -o "$tmp/basic_usage" "$src/examples/basic_usage.c" \
    $(pkg-config --cflags --libs libpresence) || fail "cannot build against libpresence"
  ;;
*) fail "unknown mode $mode" ;;
esac

"$tmp/basic_usage" >"$tmp/out.txt" || { cat "$tmp/out.txt"; fail "the program does not run"; }
grep -q "full cleanup" "$tmp/out.txt" || { cat "$tmp/out.txt"; fail "unexpected output"; }
echo "ok: $mode"
