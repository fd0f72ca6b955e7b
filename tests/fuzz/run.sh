#!/bin/bash
# SPDX-License-Identifier: MIT
# Run every libFuzzer harness of a fuzz build for a set time.
#   tests/fuzz/run.sh BUILD_DIR SECONDS [JOBS]
# Each harness starts from its committed seeds (tests/fuzz/corpus/NAME, read
# only) plus what earlier runs found (BUILD_DIR/fuzz-corpus/NAME). A crash
# leaves its input in BUILD_DIR/fuzz-artifacts/ and fails the run: turn it
# into a regression case under tests/data/ and fix the bug.
set -u -o pipefail
build=${1:?build dir}
secs=${2:-60}
jobs=${3:-2}
src=$(cd "$(dirname "$0")" && pwd)
bin=$build/tests/fuzz
mkdir -p "$build/fuzz-artifacts" "$build/fuzz-logs"
harnesses=$(cd "$bin" && ls fuzz_* 2>/dev/null | grep -v '\.')
[ -n "$harnesses" ] || { echo "no fuzzers in $bin" >&2; exit 1; }

one() {
  name=$1
  mkdir -p "$build/fuzz-corpus/$name"
  dict=()
  [ -f "$src/$name.dict" ] && dict=(-dict="$src/$name.dict")
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$bin/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
    -max_len=8192 -print_final_stats=1 "${dict[@]}" \
    -artifact_prefix="$build/fuzz-artifacts/$name-" \
    "$build/fuzz-corpus/$name" "$src/corpus/$name" \
    >"$build/fuzz-logs/$name.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$build/fuzz-logs/$name.log" | grep -o '[0-9]*$')
  cov=$(grep -o 'cov: [0-9]*' "$build/fuzz-logs/$name.log" | tail -1)
  if [ $rc -eq 0 ]; then
    echo "$name: ok, ${secs}s, ${execs:-?} execs, $cov"
  else
    echo "$name: FAILED (exit $rc), see $build/fuzz-logs/$name.log"
    grep -E 'ERROR|runtime error|SUMMARY|Test unit written' "$build/fuzz-logs/$name.log" | head -5
  fi
  return $rc
}
export -f one
export build secs src bin
printf '%s\n' $harnesses | xargs -P "$jobs" -I{} bash -c 'one {}'
