#!/usr/bin/env bash
# One device call for the CUDA block-sparse attention kernel (kernels/cuda/NOTES.md): configure and
# build the kernel tests and the CLI, run the [cuda] tests per kernel setting, compute-sanitizer
# (memcheck, racecheck) on small cases per setting, the CUPTI bench (with mask prediction) at the
# model shapes and FlexAttention at the same shape in the same call.
#
#   OUT=/some/dir ./scripts/gpu-attn.sh [shapes...]   # default: all three shapes
#
# Environment: OUT (logs and results, default ./out), SPARSETUNE_BUILD_DIR (default build-gpu),
# GPU_ATTN_FLEX_SHAPES (shapes FlexAttention runs at, default wan2.1-1.3b-480p; empty = none),
# GPU_ATTN_TILES (kernel settings tested and sanitized, SPARSETUNE_ATTN_TILE values; default "0" =
# the launcher's choice: v6, v4 for indexed calls at D=128; the first is benched at every shape),
# GPU_ATTN_EXTRA_TILES (settings benched at the first shape only, right after it; setting 4 (v5)
# also with 2 and 3 K/V stages).
# Every step has a timeout; about 300 s on an H200 after the build (sanitizers and the fixed-depth
# v5 rows are skipped when the call nears the 600 s limit). $OUT gets at most 8 files:
# gpu-attn.log (everything summarised), build.log, bench-SHAPE.json per shape, flex-SHAPE.json,
# bench-SHAPE-tileT.json per extra setting (skipped past 8 files; their tables are in the log).
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
TMP="$(mktemp -d)"
# GPU_ATTN_ELAPSED_S: seconds the device call had already run before this script (its time
# checks are against the call's 600 s limit).
T0=$((SECONDS - ${GPU_ATTN_ELAPSED_S:-0}))
say() { echo "[$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
# Files already under $OUT (at most 8 come back).
room() { (($(find "$OUT" -maxdepth 1 -type f | wc -l) < 8)); }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  git rev-parse --short=12 HEAD
  git status --short -- kernels/cuda scripts | head -20
} >>"$LOG" 2>&1
source scripts/gpu-cmake-args.sh
say configure
timeout 120 cmake -S . -B "$BUILD" "${GPU_CMAKE_ARGS[@]}" >"$OUT/build.log" 2>&1 ||
  say "configure FAILED"
say "build kernels_cuda_tests sparsetune"
timeout 420 cmake --build "$BUILD" -j16 --target kernels_cuda_tests sparsetune >>"$OUT/build.log" 2>&1 ||
  { say "build FAILED"; grep -m20 -B2 -A8 "error" "$OUT/build.log" | tail -60 | tee -a "$LOG"; }
TEST="$BUILD/tests/kernels/kernels_cuda_tests"
CLI="$BUILD/bin/sparsetune"

# Registers and spills of the attention kernels (v4/v6 BlockSparseAttnWgmmaKernel, v5 BlockSparseAttnV5Kernel).
say "resource usage"
LIB="$BUILD/kernels/libsparsetune_kernels.a"
timeout 60 cuobjdump -res-usage "$LIB" 2>/dev/null |
  awk '/Function/ {f = $2} /REG:/ && f ~ /Wgmma|V5/ {sub(/^_ZN10sparsetune4cuda[^B]*/, "", f); print "  " substr(f, 1, 70), $0}' |
  sed 's/  */ /g' | head -40 | tee -a "$LOG"

for t in $TILES; do
  say "tests, SPARSETUNE_ATTN_TILE=$t"
  SPARSETUNE_ATTN_TILE=$t timeout 180 "$TEST" 2>&1 | tail -25 | tee -a "$LOG"
done

table() {
  python3 - "$1" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(j["card"], j["shape"]["name"], j["timing"], j["commit"], j["date"])
for r in j["rows"]:
    print(f"  {r['path']:<12} {r['sparsity']:6.3f} {r['time_ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s "
          f"{r['speedup']:6.2f}x {r['peak_mib']:9.1f} MiB")
for r in j.get("mask_predict", []):
    print(f"  {r['path']:<26} keep {r['keep']:.2f} density {r['density']:.3f} {r['time_ms']:8.3f} ms "
          f"{100 * r['share_of_dense_sdpa']:6.2f} % of dense_sdpa")
if "mask_predict_note" in j:
    print("  " + j["mask_predict_note"])
PY
}
bench() {  # bench SHAPE TILE FILE REPEATS [VAR=VALUE...]
  local shape=$1 tile=$2 file=$3 repeats=$4
  shift 4
  say "bench $shape SPARSETUNE_ATTN_TILE=$tile repeats $repeats $*"
  env SPARSETUNE_ATTN_TILE="$tile" "$@" timeout 150 "$CLI" bench attention --device cuda \
    --shape "$shape" --repeats "$repeats" --json >"$file" 2>>"$LOG" || say "bench rc $?"
  table "$file"
}
# Where a result goes: under $OUT while fewer than 8 files are there, else the scratch folder.
dest() { if room; then echo "$OUT/$1"; else echo "$TMP/$1"; fi; }

# Priority order (the call may be cut at its limit): the first shape with every setting and
# FlexAttention, then the other shapes, then the sanitizers, then optional pipeline-depth rows.
FIRST_TILE="${TILES%% *}"
bench "${SHAPES[0]}" "$FIRST_TILE" "$(dest "bench-${SHAPES[0]}.json")" 5
for t in $EXTRA_TILES; do
  bench "${SHAPES[0]}" "$t" "$(dest "bench-${SHAPES[0]}-tile$t.json")" 5
done
for s in $FLEX_SHAPES; do
  say "flex $s"
  timeout 240 python3 scripts/flex_attention_bench.py --shape "$s" >"$(dest "flex-$s.json")" \
    2>"$TMP/flex.txt" || say "flex rc $?"
  tail -8 "$TMP/flex.txt" | tee -a "$LOG"
done
for s in "${SHAPES[@]:1}"; do
  # HunyuanVideo dense is ~0.6 s per call on v1: 3 repeats keep the shape near 30 s.
  reps=5
  [[ $s == hunyuan-720p ]] && reps=3
  bench "$s" "$FIRST_TILE" "$(dest "bench-$s.json")" "$reps"
done

# Sanitizers per setting: memcheck on two small cases in one process, D=64 block 64 with an empty
# row (N=300) and D=128 block 128 dense in bf16 and fp16 (N=777), both ending in a partial block;
# racecheck (slower) on the first only (the pipeline code is the same template for both D).
# Skipped once the call nears 600 s.
SMALL="cuda attention: empty rows*"
for t in $TILES; do
  for tool in memcheck racecheck; do
    cases="$SMALL"
    [[ $tool == memcheck ]] && cases="$SMALL,cuda attention: dense variant*"
    if ((SECONDS - T0 > 520)); then
      say "skipped: $tool SPARSETUNE_ATTN_TILE=$t (time)"
      continue
    fi
    say "$tool SPARSETUNE_ATTN_TILE=$t: $cases"
    SPARSETUNE_ATTN_TILE=$t timeout 150 compute-sanitizer --tool $tool --error-exitcode 9 "$TEST" \
      "$cases" >"$TMP/$tool.txt" 2>&1
    echo "  rc $?" | tee -a "$LOG"
    grep -m3 -A4 "Invalid\|Error\|Warning" "$TMP/$tool.txt" | head -24 | tee -a "$LOG"
    tail -3 "$TMP/$tool.txt" | tee -a "$LOG"
  done
done

# v5 at a fixed K/V pipeline depth, when the call has time left (the default depth is one of them).
if [[ " $TILES $EXTRA_TILES " == *" 4 "* ]]; then
  for st in 2 3; do
    if ((SECONDS - T0 < 470)); then
      bench "${SHAPES[0]}" 4 "$TMP/bench-stages$st.json" 5 SPARSETUNE_ATTN_V5_STAGES=$st
    else
      say "skipped: v5 with $st stages (time)"
    fi
  done
fi
rm -rf "$TMP"
say done
