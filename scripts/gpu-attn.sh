#!/usr/bin/env bash
# One device call for the CUDA block-sparse attention kernel (kernels/cuda/NOTES.md): configure and
# build the kernel tests and the CLI, run the [cuda] tests, compute-sanitizer (memcheck, racecheck)
# on a small case, the CUPTI bench at the model shapes and FlexAttention side by side.
#
#   OUT=/some/dir ./scripts/gpu-attn.sh [shapes...]   # default: all three shapes
#
# Environment: OUT (logs and results, default ./out), SPARSETUNE_BUILD_DIR (default build-gpu),
# GPU_ATTN_FLEX_SHAPES (shapes FlexAttention runs at, default wan2.1-1.3b-480p; empty = none),
# GPU_ATTN_TILES (kernel tile settings benched and tested, SPARSETUNE_ATTN_TILE values; default
# "0" = the launcher's choice; the first is benched at every shape, into $OUT), GPU_ATTN_EXTRA_TILES
# (settings benched at the first shape only, table in the log).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-./out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="${SPARSETUNE_BUILD_DIR:-build-gpu}"
SHAPES=("$@")
((${#SHAPES[@]})) || SHAPES=(wan2.1-1.3b-480p cogvideox-5b hunyuan-720p)
FLEX_SHAPES="${GPU_ATTN_FLEX_SHAPES-wan2.1-1.3b-480p}"
TILES="${GPU_ATTN_TILES:-0}"
EXTRA_TILES="${GPU_ATTN_EXTRA_TILES:-}"
LOG="$OUT/gpu-attn.log"
T0=$SECONDS
say() { echo "[$((SECONDS - T0))s] $*" | tee -a "$LOG"; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  git rev-parse --short=12 HEAD
} >>"$LOG" 2>&1
TP="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
S="$PWD/.deps/sqlite/usr"
say configure
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TP" \
  -DSPARSETUNE_CUDA=ON -DSQLite3_INCLUDE_DIR="$S/include" \
  -DSQLite3_LIBRARY="$S/lib/x86_64-linux-gnu/libsqlite3.a" \
  "-DCMAKE_CXX_STANDARD_LIBRARIES=-ldl -lpthread -lm" >"$OUT/build.log" 2>&1 || say "configure FAILED"
say "build kernels_cuda_tests"
cmake --build "$BUILD" -j16 --target kernels_cuda_tests >>"$OUT/build.log" 2>&1 || { say "build FAILED"; tail -40 "$OUT/build.log"; }
(cmake --build "$BUILD" -j16 --target sparsetune >"$OUT/build-cli.log" 2>&1; echo "cli build rc $?" >>"$OUT/build-cli.log") &
CLI_PID=$!
TEST="$BUILD/tests/kernels/kernels_cuda_tests"
say "tests"
for t in $TILES; do
  say "tests, SPARSETUNE_ATTN_TILE=$t"
  SPARSETUNE_ATTN_TILE=$t timeout 120 "$TEST" 2>&1 | tail -25 | tee -a "$LOG"
done
say "compute-sanitizer memcheck + racecheck (N=300 case)"
timeout 120 compute-sanitizer --tool memcheck --error-exitcode 9 "$TEST" "cuda attention: empty rows*" 2>&1 | tail -5 | tee -a "$LOG"
timeout 120 compute-sanitizer --tool racecheck --error-exitcode 9 "$TEST" "cuda attention: empty rows*" >/tmp/racecheck.txt 2>&1
grep -m2 -A3 "Warning\|Error" /tmp/racecheck.txt | tee -a "$LOG"
tail -3 /tmp/racecheck.txt | tee -a "$LOG"
wait "$CLI_PID"
tail -3 "$OUT/build-cli.log" | tee -a "$LOG"
table() {
  python3 - "$1" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(j["card"], j["shape"]["name"], j["timing"], j["commit"], j["date"])
for r in j["rows"]:
    print(f"  {r['path']:<12} {r['sparsity']:6.3f} {r['time_ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s "
          f"{r['speedup']:6.2f}x {r['peak_mib']:9.1f} MiB")
PY
}
bench() {  # bench SHAPE TILE FILE
  say "bench $1 SPARSETUNE_ATTN_TILE=$2"
  SPARSETUNE_ATTN_TILE=$2 timeout 150 "$BUILD/bin/sparsetune" bench attention --device cuda \
    --shape "$1" --repeats 5 --json >"$3" 2>>"$LOG"
  table "$3"
}
FIRST_TILE="${TILES%% *}"
for s in "${SHAPES[@]}"; do
  bench "$s" "$FIRST_TILE" "$OUT/bench-$s.json"
done
for t in $EXTRA_TILES; do
  bench "${SHAPES[0]}" "$t" "/tmp/bench-${SHAPES[0]}-tile$t.json"
done
for s in $FLEX_SHAPES; do
  say "flex $s"
  timeout 200 python3 scripts/flex_attention_bench.py --shape "$s" >"$OUT/flex-$s.json" 2>>"$LOG"
  tail -6 "$LOG"
done
say done
