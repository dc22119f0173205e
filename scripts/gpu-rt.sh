#!/usr/bin/env bash
# One device call for the runtime's CUDA paths (GPU TimeRipple on reuse steps, GPU block_sparse
# masks, permuted vs row-index kernel call): configure with scripts/gpu-cmake-args.sh, build only
# sparsetune, the kernel and runtime test executables, evaluators_tests and the runtime bench; run
# the [cuda] tests, the per-call bench (gpu-small and Wan2.1-1.3B shapes), then a short gpu-small
# search whose candidates mix TimeRipple reuse with sparse heads, once with the defaults ("after")
# and once with the session-4 paths forced ("before": SPARSETUNE_RT_RIPPLE=oracle,
# SPARSETUNE_RT_MASK=torch, SPARSETUNE_RT_PERMUTE=0), each followed by its candidate table. Every step runs even when an earlier one
# failed; logs under $OUT (at most 8 files), summary.log last.
#
#   OUT=/some/dir ./scripts/gpu-rt.sh
#
# Environment: OUT (default ./out), SPARSETUNE_BUILD_DIR (default build-gpu-rt), SPARSETUNE_JOBS
# (default 16), GPU_RT_BUDGET_S (whole script, default 520 s; the searches share what is left),
# GPU_RT_BENCH_REPEATS (default 15).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

OUT="${OUT:-./out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="${SPARSETUNE_BUILD_DIR:-build-gpu-rt}"
JOBS="${SPARSETUNE_JOBS:-16}"
BUDGET_S="${GPU_RT_BUDGET_S:-520}"
REPEATS="${GPU_RT_BENCH_REPEATS:-15}"
START_S=$SECONDS
BIN="$BUILD/bin/sparsetune"
SUMMARY=()

# step NAME LIMIT_S CMD...: output to $OUT/NAME.log (last lines shown), result into the summary.
step() {
  local name="$1" limit="$2" t0=$SECONDS rc result
  shift 2
  echo "=== [$name] $* (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  if ((rc == 0)); then result="ok"; elif ((rc == 124 || rc == 137)); then result="TIMEOUT"; else result="FAIL($rc)"; fi
  tail -n 15 "$OUT/$name.log"
  SUMMARY+=("$(printf '%-14s %-9s %4ss' "$name" "$result" $((SECONDS - t0)))")
  echo "=== [$name] $result in $((SECONDS - t0))s"
  return 0
}
left_s() { echo $((BUDGET_S - (SECONDS - START_S))); }

{
  date -u
  git rev-parse --short=12 HEAD 2>/dev/null
  git status --short 2>/dev/null | grep -c . | sed 's/^/uncommitted files: /'
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
} >"$OUT/env.log"
cat "$OUT/env.log"

# Configure and build in one log (the files that come back are limited).
# shellcheck disable=SC2016  # $0/$1 and the array expand inside the child shell
step build 300 bash -c 'source scripts/gpu-cmake-args.sh && cmake -S . -B "$0" "${GPU_CMAKE_ARGS[@]}" &&
  cmake --build "$0" -j "$1" --target sparsetune kernels_cuda_runtime_tests kernels_cuda_aux_tests \
    kernels_cuda_tests evaluators_tests sparsetune_cuda_runtime_bench' "$BUILD" "$JOBS"
T="$BUILD/tests"
# All [cuda] tests in one log: the runtime's new paths, the aux kernels, the attention kernel, and
# the evaluators' CUDA runtime cases (bf16 vs CPU float32 on every pattern).
step tests 150 bash -c "'$T/kernels/kernels_cuda_runtime_tests' --reporter compact;
  r1=\$?; '$T/kernels/kernels_cuda_aux_tests' --reporter compact; r2=\$?;
  '$T/kernels/kernels_cuda_tests' --reporter compact; r3=\$?;
  '$T/evaluators/evaluators_tests' '[cuda]' --reporter compact; r4=\$?;
  echo \"rc runtime=\$r1 aux=\$r2 attention=\$r3 evaluators=\$r4\"; exit \$((r1 + r2 + r3 + r4))"
BENCH="$(find "$BUILD" -name sparsetune_cuda_runtime_bench -type f | head -n 1)"
step bench 150 "$BENCH" "$REPEATS" all

# gpu-small with a search space of sparse heads, reuse thresholds and full budgets: every random
# candidate mixes reuse steps with dense, block_sparse and spatial heads. Absolute weights path:
# the config is written under $OUT.
python3 - "$OUT/gpu-small-reuse.json" <<'PY'
import json, os, sys
c = json.load(open("configs/gpu-small.json"))
c["name"] = "gpu-small-reuse"
c["workload"]["weights"] = os.path.abspath("datasets/models/gpu-small.safetensors")
c["search_space"] = {"budgets": [1.0], "warmup_steps": [3, 5],
                     "patterns": ["dense", "block_sparse", "spatial"],
                     "densities": [0.25], "keeps": [0.2, 0.3],
                     "reuse_thresholds": [0.5, 0.7, 0.9]}
c["search"].update({"population": 6, "generations": 1})
c["objective"] = {"metric": "psnr"}
json.dump(c, open(sys.argv[1], "w"), indent=1)
PY
AFTER_S=$(( $(left_s) / 2 ))
((AFTER_S > 150)) && AFTER_S=150
if ((AFTER_S >= 30)); then
  rm -f "$OUT/after.sqlite"
  step search-after "$AFTER_S" "$BIN" run "$OUT/gpu-small-reuse.json" --db "$OUT/after.sqlite" --json
  "$BIN" results candidates 1 --db "$OUT/after.sqlite" >>"$OUT/search-after.log" 2>&1
fi
BEFORE_S=$(left_s)
if ((BEFORE_S >= 30)); then
  rm -f "$OUT/before.sqlite"
  step search-before "$BEFORE_S" env SPARSETUNE_RT_RIPPLE=oracle SPARSETUNE_RT_MASK=torch \
    SPARSETUNE_RT_PERMUTE=0 "$BIN" run "$OUT/gpu-small-reuse.json" --db "$OUT/before.sqlite" --json
  "$BIN" results candidates 1 --db "$OUT/before.sqlite" >>"$OUT/search-before.log" 2>&1
fi
rm -f "$OUT"/*.sqlite "$OUT/gpu-small-reuse.json"

{
  echo "gpu-rt summary ($(date -u +%H:%M:%S) UTC, total $((SECONDS - START_S))s)"
  printf '  %s\n' "${SUMMARY[@]}"
  grep -hE "test cases|assertions|^rc " "$OUT/tests.log" | tail -n 10
  grep -hE "FAILED|failed" "$OUT/tests.log" | head -n 20
  cat "$OUT/bench.log"
  for s in search-after search-before; do
    [[ -f "$OUT/$s.log" ]] || continue
    echo "$s:"
    grep -E "candidates \(|dense references|^\{" "$OUT/$s.log" | tail -n 6
  done
} | tee "$OUT/summary.log"
