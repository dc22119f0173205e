#!/usr/bin/env bash
# One device call for a change to the CUDA attention kernel (kernels/cuda/NOTES.md), made to fit
# ~400 s on an H200: build the kernel tests and the CLI, run the [cuda] kernel tests per kernel
# setting, the Wan-shape bench (identity and row-index paths at 0, 0.8, 0.9, mask prediction) and
# FlexAttention with the same (CUPTI) timer, alternated twice, Nsight Compute on one setting at
# 80% (identity and indexed launches, full set with stall sampling), compute-sanitizer on the small
# row-index cases, CogVideoX (D=64) last. Every step runs under `timeout`; later steps are skipped
# near the time limit.
#
#   OUT=/some/dir scripts/gpu-kern.sh      (carry .deps: the static SQLite)
#
# Environment: OUT (default ./out), SPARSETUNE_BUILD_DIR (default build-gpu), GPU_KERN_TILES
# (SPARSETUNE_ATTN_TILE settings tested and benched, default "0" = the launcher's default; the
# first is the one profiled and sanitized unless GPU_KERN_FOCUS_TILE names another), GPU_KERN_LIMIT_S (the call's
# limit, default 400), GPU_KERN_NCU (0 skips Nsight Compute).
# $OUT gets at most 8 files: gpu-kern.log (every table and summary), build.log, bench-wan.json,
# flex-wan.json (first alternation), ncu-80.ncu-rep, ncu-details.txt, ncu-raw.csv, ncu-sass.csv.
# Used for kernels/cuda/NOTES.md's session-4 entries: GPU_KERN_TILES="0 5" (v4 then), then
# GPU_KERN_TILES="0 6" GPU_KERN_FOCUS_TILE=6.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-./out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="${SPARSETUNE_BUILD_DIR:-build-gpu}"
TILES="${GPU_KERN_TILES:-0}"
LIMIT="${GPU_KERN_LIMIT_S:-400}"
LOG="$OUT/gpu-kern.log"
TMP="$(mktemp -d)"
T0=$SECONDS
say() { echo "[$((SECONDS - T0))s] $*" | tee -a "$LOG"; }
left() { echo $((LIMIT - (SECONDS - T0))); }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  echo "commit $(git rev-parse --short=12 HEAD)"
  git status --short -- kernels/cuda scripts tests/kernels | head -20
} >>"$LOG" 2>&1
source scripts/gpu-cmake-args.sh
say configure
timeout 120 cmake -S . -B "$BUILD" "${GPU_CMAKE_ARGS[@]}" >"$OUT/build.log" 2>&1 ||
  say "configure FAILED"
say "build kernels_cuda_tests sparsetune"
timeout 240 cmake --build "$BUILD" -j16 --target kernels_cuda_tests sparsetune >>"$OUT/build.log" 2>&1 ||
  { say "build FAILED"; grep -m20 -B2 -A8 "error" "$OUT/build.log" | tail -60 | tee -a "$LOG"; }
TEST="$BUILD/tests/kernels/kernels_cuda_tests"
CLI="$BUILD/bin/sparsetune"

say "resource usage (v4 wgmma kernels; template args: dtype, D, block, warpgroups, indexed)"
timeout 60 cuobjdump -res-usage "$BUILD/kernels/libsparsetune_kernels.a" 2>/dev/null |
  awk '/Function/ {f = $2} /REG:/ && f ~ /Wgmma/ {sub(/^.*WgmmaKernel/, "", f); print "  " substr(f, 1, 60), $1, $2}' |
  head -20 | tee -a "$LOG"

for t in $TILES; do
  say "tests, SPARSETUNE_ATTN_TILE=$t"
  SPARSETUNE_ATTN_TILE=$t timeout 150 "$TEST" '[cuda]~[variant]' 2>&1 | tail -25 | tee -a "$LOG"
done

table() {
  python3 - "$1" <<'PY' 2>&1 | tee -a "$LOG"
import json, sys
j = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(j["card"], j["shape"]["name"], j["timing"], j["date"])
rows = j["rows"]
for r in rows:
    print(f"  {r['path']:<20} {r['sparsity']:6.3f} {r['time_ms']:9.3f} ms {r['tflops']:7.1f} TFLOP/s "
          f"{r['speedup']:6.2f}x")
ident = {round(r["sparsity"], 3): r["time_ms"] for r in rows if r["path"] == "ours_sparse"}
for r in rows:
    if r["path"] == "ours_sparse_gather" and round(r["sparsity"], 3) in ident:
        print(f"  gather / identity at {r['sparsity']:.3f}: {r['time_ms'] / ident[round(r['sparsity'], 3)]:.3f}")
for r in j.get("mask_predict", []):
    print(f"  {r['path']:<26} keep {r['keep']:.2f} {r['time_ms']:8.3f} ms "
          f"{100 * r['share_of_dense_sdpa']:6.2f} % of dense_sdpa")
PY
}
bench() {  # bench TILE FILE [SHAPE]
  local shape="${3:-wan2.1-1.3b-480p}"
  say "bench $shape SPARSETUNE_ATTN_TILE=$1"
  SPARSETUNE_ATTN_TILE="$1" timeout 90 "$CLI" bench attention --device cuda --shape "$shape" \
    --sparsity 0,0.8,0.9 --repeats 7 --json >"$2" 2>>"$LOG" || say "bench rc $?"
  table "$2"
}
flex() {  # flex FILE
  say "flex wan2.1-1.3b-480p (kineto kernel time)"
  timeout 150 python3 scripts/flex_attention_bench.py --shape wan2.1-1.3b-480p --sparsity 0,0.8,0.9 \
    --timer kineto >"$1" 2>"$TMP/flex.err" || say "flex rc $?"
  tail -6 "$TMP/flex.err" | tee -a "$LOG"
}

# Alternation 1: every setting, then FlexAttention.
first=1
for t in $TILES; do
  if ((first)); then bench "$t" "$OUT/bench-wan.json"; else bench "$t" "$TMP/bench-wan-tile$t.json"; fi
  first=0
done
flex "$OUT/flex-wan.json"

# Nsight Compute on the first setting at 80%: the bench under ncu falls back to the wall clock
# (ncu holds CUPTI), so every row runs 2 warm-ups + 1 timed + 1 peak-memory call. Kernel launches
# of BlockSparseAttnWgmma*: 0-3 density 1, 4-7 identity 80%, 8-11 indexed 80%; 6, 7 and 8, 9 are
# profiled (full set: stall reasons, pipe utilisation, shared-memory and L2 traffic).
FIRST_TILE="${TILES%% *}"
NCU_TILE="${GPU_KERN_FOCUS_TILE:-$FIRST_TILE}"
if [[ "${GPU_KERN_NCU:-1}" != 0 ]] && (($(left) > 120)); then
  say "ncu SPARSETUNE_ATTN_TILE=$NCU_TILE, 80%, launches 6-9"
  SPARSETUNE_ATTN_TILE=$NCU_TILE timeout $(($(left) - 60)) ncu --clock-control none --set full \
    -k regex:BlockSparseAttnWgmma --launch-skip 6 --launch-count 4 -f -o "$OUT/ncu-80" \
    "$CLI" bench attention --device cuda --shape wan2.1-1.3b-480p --sparsity 0.8 --repeats 1 \
    >"$TMP/ncu.txt" 2>&1
  say "ncu rc $?"
  grep "==PROF==\|==ERROR==\|==WARNING==" "$TMP/ncu.txt" | head -8 | tee -a "$LOG"
  if [[ -f "$OUT/ncu-80.ncu-rep" ]]; then
    timeout 60 ncu -i "$OUT/ncu-80.ncu-rep" --page details >"$OUT/ncu-details.txt" 2>&1
    timeout 60 ncu -i "$OUT/ncu-80.ncu-rep" --page raw --csv >"$OUT/ncu-raw.csv" 2>&1
    timeout 60 ncu -i "$OUT/ncu-80.ncu-rep" --page source --csv --print-source sass \
      >"$OUT/ncu-sass.csv" 2>&1
    # Headline per launch: duration, SM and tensor throughput, warp stall breakdown.
    grep -E "^  [A-Za-z_].*\(|Duration|Compute \(SM\) Throughput|Memory Throughput|Registers Per|Achieved Occupancy|Issued Warp Per|No Eligible|Warp Cycles Per Issued" \
      "$OUT/ncu-details.txt" | head -60 | tee -a "$LOG"
  fi
else
  say "skipped: ncu"
fi

# Sanitizers on the small row-index cases (the path this change touched) and the empty-row case.
if (($(left) > 100)); then
  say "memcheck SPARSETUNE_ATTN_TILE=$NCU_TILE: row index + empty rows"
  SPARSETUNE_ATTN_TILE=$NCU_TILE timeout $(($(left) - 60)) compute-sanitizer --tool memcheck \
    --error-exitcode 9 "$TEST" "cuda attention: a row index*,cuda attention: empty rows*" \
    >"$TMP/memcheck.txt" 2>&1
  echo "  rc $?" | tee -a "$LOG"
  grep -m3 -A4 "Invalid\|Error\|Warning" "$TMP/memcheck.txt" | head -20 | tee -a "$LOG"
  tail -3 "$TMP/memcheck.txt" | tee -a "$LOG"
fi
if (($(left) > 90)); then
  say "racecheck SPARSETUNE_ATTN_TILE=$NCU_TILE: row index"
  SPARSETUNE_ATTN_TILE=$NCU_TILE timeout $(($(left) - 60)) compute-sanitizer --tool racecheck \
    --error-exitcode 9 "$TEST" "cuda attention: a row index*" >"$TMP/racecheck.txt" 2>&1
  echo "  rc $?" | tee -a "$LOG"
  grep -m3 -A4 "Error\|Warning\|Hazard" "$TMP/racecheck.txt" | head -20 | tee -a "$LOG"
  tail -3 "$TMP/racecheck.txt" | tee -a "$LOG"
fi

# Alternation 2 (run-to-run drift), tables in the log only.
if (($(left) > 70)); then
  for t in $TILES; do bench "$t" "$TMP/bench2-tile$t.json"; done
fi
if (($(left) > 45)); then flex "$TMP/flex2.json"; fi
# CogVideoX (D=64) per setting, when time is left.
for t in $TILES; do
  if (($(left) > 30)); then bench "$t" "$TMP/bench-cog-tile$t.json" cogvideox-5b; fi
done
rm -rf "$TMP"
say done
