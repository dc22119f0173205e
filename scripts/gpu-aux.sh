#!/usr/bin/env bash
# One device call for the auxiliary CUDA kernels (kernels/cuda/aux_ops.h): configure, build only
# their test and benchmark, run the [cuda] tests, compute-sanitizer (memcheck on every aux test,
# racecheck on the small mask case), then the event-timed benchmark at the
# Wan2.1-1.3B shape. Logs under $OUT (default ./out); a summary at the end.
#
#   OUT=/some/dir ./scripts/gpu-aux.sh
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

OUT="${OUT:-./out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="${SPARSETUNE_BUILD_DIR:-build-gpu-aux}"
JOBS="${SPARSETUNE_JOBS:-16}"
SUMMARY=()

# step NAME LIMIT_S CMD...: output to $OUT/NAME.log, result into the summary.
step() {
  local name="$1" limit="$2" t0=$SECONDS rc
  shift 2
  echo "=== [$name] $*"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  tail -n 30 "$OUT/$name.log"
  SUMMARY+=("$(printf '%-14s rc=%-4s %4ss' "$name" "$rc" $((SECONDS - t0)))")
  echo "=== [$name] rc=$rc in $((SECONDS - t0))s"
  return 0
}

{
  date -u
  git rev-parse --short=12 HEAD 2>/dev/null
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
} >"$OUT/env.log"
cat "$OUT/env.log"

source scripts/gpu-cmake-args.sh
step configure 120 cmake -S . -B "$BUILD" "${GPU_CMAKE_ARGS[@]}"
step build 240 cmake --build "$BUILD" -j "$JOBS" --target kernels_cuda_aux_tests sparsetune_cuda_aux_bench
TEST="$(find "$BUILD" -name kernels_cuda_aux_tests -type f | head -n 1)"
BENCH="$(find "$BUILD" -name sparsetune_cuda_aux_bench -type f | head -n 1)"
step tests 120 "$TEST" --reporter compact -s
step bench 120 "$BENCH" 30
step memcheck 150 compute-sanitizer --tool memcheck --error-exitcode 9 "$TEST" --reporter compact
step racecheck 100 compute-sanitizer --tool racecheck --error-exitcode 9 "$TEST" \
  "GPU mask prediction on a small case" --reporter compact

{
  echo "gpu-aux summary ($(date -u +%H:%M:%S) UTC)"
  printf '  %s\n' "${SUMMARY[@]}"
  grep -E "test cases|assertions" "$OUT/tests.log" | tail -n 2
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/memcheck.log" "$OUT/racecheck.log"
  cat "$OUT/bench.log"
} | tee "$OUT/summary.log"
