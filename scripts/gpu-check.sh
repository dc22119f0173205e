#!/usr/bin/env bash
# One-shot GPU check: configure, build, run every test (the [cuda] ones included), then profile
# and search on the GPU. Made for one device call on the GPU host (Ubuntu 24.04, no network,
# system PyTorch as python3, SQLite from the git-ignored .deps/sqlite); docs/gpu.md explains the
# output. Every step runs even when an earlier one failed; the summary at the end lists them.
#
#   OUT=/some/dir ./scripts/gpu-check.sh      # OUT defaults to ./out
#
# Environment: OUT (logs, trace, database), SPARSETUNE_BUILD_DIR (default build-gpu),
# SPARSETUNE_JOBS (default 16), GPU_CHECK_BUDGET_S (whole script, default 500 s: the search gets
# what is left of it, at most 300 s; rerun `sparsetune run ... --resume` to finish a cut search).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

OUT="${OUT:-./out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="${SPARSETUNE_BUILD_DIR:-build-gpu}"
JOBS="${SPARSETUNE_JOBS:-16}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-500}"
START_S=$SECONDS
BIN="$BUILD/bin/sparsetune"

NAMES=()
RESULTS=()
TIMES=()

# step NAME TIMEOUT_S CMD...: runs CMD with a timeout, output to $OUT/NAME.log (last lines shown),
# records pass/fail/timeout and the seconds it took.
step() {
  local name="$1" limit="$2"
  shift 2
  local log="$OUT/$name.log" t0=$SECONDS rc
  echo "=== [$name] $* (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  local dt=$((SECONDS - t0)) result
  if ((rc == 0)); then
    result="ok"
  elif ((rc == 124 || rc == 137)); then
    result="TIMEOUT"
  else
    result="FAIL($rc)"
  fi
  tail -n 25 "$log"
  echo "=== [$name] $result in ${dt}s"
  NAMES+=("$name")
  RESULTS+=("$result")
  TIMES+=("$dt")
  return 0
}

left_s() { echo $((BUDGET_S - (SECONDS - START_S))); }

# ---- environment ---------------------------------------------------------------------------------
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "device", torch.cuda.is_available())' 2>&1
  command -v nvcc && nvcc --version | tail -n 2
  cmake --version | head -n 1
} | tee "$OUT/env.log"

source scripts/gpu-cmake-args.sh
# Without nvcc the build goes on without CUDA (a later -D wins over gpu-cmake-args.sh's ON).
CUDA_FLAG=-DSPARSETUNE_CUDA=ON
if ! command -v nvcc >/dev/null && [[ ! -x /usr/local/cuda/bin/nvcc ]]; then
  CUDA_FLAG=-DSPARSETUNE_CUDA=AUTO
  echo "WARNING: no nvcc: building without CUDA/CUPTI (the [cuda] latency tests will fail)"
fi

# ---- build and test ------------------------------------------------------------------------------
step configure 120 cmake -S . -B "$BUILD" "${GPU_CMAKE_ARGS[@]}" "$CUDA_FLAG"
grep -E "sparsetune:" "$OUT/configure.log"
step build 300 cmake --build "$BUILD" -j "$JOBS"
# Tests in parallel with few threads each, so they do not fight over the cores.
# GPU_CHECK_CTEST_EXCLUDE: a ctest -E regex of executables another part of the call runs anyway
# (gpu-session.sh leaves kernels_cuda_tests to gpu-attn.sh).
CTEST_EXCLUDE=()
[[ -n "${GPU_CHECK_CTEST_EXCLUDE:-}" ]] && CTEST_EXCLUDE=(-E "$GPU_CHECK_CTEST_EXCLUDE")
step ctest 200 bash -c "cd '$BUILD' && OMP_NUM_THREADS=2 ctest --output-on-failure --timeout 180 -j 8 ${CTEST_EXCLUDE[*]}"
# The [cuda] tests' own report (skips would show as 'skipped: no CUDA device').
step cuda-tests 90 "$BUILD/tests/evaluators/evaluators_tests" "[cuda]" -s --reporter compact

# ---- CLI on the GPU ------------------------------------------------------------------------------
step version 20 "$BIN" --version

# A block-sparse schedule for the gpu-small geometry (keep 20% of key blocks after 5 dense steps).
cat >"$OUT/gpu-small-block-sparse.json" <<'JSON'
{
  "format": "sparsetune.schedule",
  "version": 1,
  "model": {"name": "tiny-vdit/gpu-small", "layers": 6, "heads": 3, "head_dim": 64,
            "grid": [16, 32, 32], "text_tokens": 8, "text_position": "front", "steps": 30},
  "block_size": 64,
  "token_order": {"kind": "tiles", "tile": [1, 8, 8]},
  "dense_warmup_steps": 5,
  "heads": {"pattern": "block_sparse", "keep": 0.2, "first_frame_sink": true, "mask_refresh": 2},
  "provenance": {"note": "gpu-check: block-sparse keep 0.2 on every head of gpu-small"}
}
JSON
step validate 30 bash -c "'$BIN' validate configs/gpu-small.json && \
  '$BIN' validate configs/wan2.1-1.3b-shape.json && \
  '$BIN' validate '$OUT/gpu-small-block-sparse.json' --config configs/gpu-small.json"
step profile-dense 60 "$BIN" profile configs/gpu-small.json --json --top 15
step profile-block-sparse 60 "$BIN" profile configs/gpu-small.json \
  --schedule "$OUT/gpu-small-block-sparse.json" --json --top 15
# CUPTI's own cost: plain vs traced generations, both timed with CUDA events.
step cupti-overhead 120 "$BIN" profile configs/gpu-small.json --overhead 3 --repeats 3 --json
step profile-wan-shape 60 "$BIN" profile configs/wan2.1-1.3b-shape.json --trace "$OUT/trace.json"

# ---- the search ----------------------------------------------------------------------------------
RUN_S=$(left_s)
((RUN_S > 300)) && RUN_S=300
if ((RUN_S >= 60)); then
  rm -f "$OUT/gpu.sqlite"
  step run "$RUN_S" "$BIN" run configs/gpu-small.json --db "$OUT/gpu.sqlite" --json
else
  echo "=== [run] skipped: only ${RUN_S}s of the budget left"
  NAMES+=("run"); RESULTS+=("SKIPPED"); TIMES+=(0)
fi

# The best feasible candidate's per-category table (issue #6's evidence: dense vs best schedule).
if [[ -f "$OUT/gpu.sqlite" ]] && "$BIN" export --db "$OUT/gpu.sqlite" --job 1 --best \
     -o "$OUT/gpu-small-best.json" >"$OUT/export-best.log" 2>&1; then
  step profile-best 60 "$BIN" profile configs/gpu-small.json --schedule "$OUT/gpu-small-best.json" \
    --json --top 15
else
  echo "=== [profile-best] skipped: no best feasible candidate ($(tail -n 1 "$OUT/export-best.log" 2>/dev/null))"
fi

# ---- summary -------------------------------------------------------------------------------------
{
  echo
  echo "gpu-check summary ($(date -u +%H:%M:%S) UTC, total $((SECONDS - START_S))s, logs in $OUT)"
  printf '  %-22s %-10s %6s\n' step result seconds
  for i in "${!NAMES[@]}"; do
    printf '  %-22s %-10s %6s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}"
  done
  grep -E "tests passed|tests failed|Passed|Failed" "$OUT/ctest.log" | tail -n 15
  for f in profile-dense profile-block-sparse profile-best; do
    python3 - "$OUT/$f.log" "$f" <<'PY' 2>/dev/null
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        j = json.loads(line)
        cats = ", ".join(f"{c['name']} {c['per_generation_ms']:.1f}" for c in j["categories"])
        print(f"  {sys.argv[2]}: {j['median_ms']:.1f} ms ({j['source']}, density {j['density']:.3f}); ms/gen: {cats}")
PY
  done
} | tee "$OUT/summary.log"
