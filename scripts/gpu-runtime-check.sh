#!/usr/bin/env bash
# One device call for the runtime's CUDA path (issue #6): configure like gpu-check.sh, build only
# evaluators_tests, kernels_cuda_tests and sparsetune, run the [cuda] runtime tests and the kernel
# tests, then profile gpu-small dense, with block_sparse keep 0.2 on every head, and with an
# Astraea budget of 0.4 (dense heads). Every step runs even when an earlier one failed.
#
#   OUT=/some/dir ./scripts/gpu-runtime-check.sh      # OUT defaults to ./out
#
# Environment: OUT (logs, 7 files), SPARSETUNE_BUILD_DIR (default build-gpu), SPARSETUNE_JOBS
# (default 16). Step limits fit one 240 s device call once the machine is up.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

OUT="${OUT:-./out}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="${SPARSETUNE_BUILD_DIR:-build-gpu}"
JOBS="${SPARSETUNE_JOBS:-16}"
BIN="$BUILD/bin/sparsetune"
START_S=$SECONDS
NAMES=()
RESULTS=()

# step NAME TIMEOUT_S CMD...: output to $OUT/NAME.log (last lines shown), result recorded.
step() {
  local name="$1" limit="$2"
  shift 2
  local log="$OUT/$name.log" t0=$SECONDS rc result
  echo "=== [$name] $* (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$log" 2>&1
  rc=$?
  if ((rc == 0)); then result="ok"; elif ((rc == 124 || rc == 137)); then result="TIMEOUT"; else result="FAIL($rc)"; fi
  tail -n 20 "$log"
  echo "=== [$name] $result in $((SECONDS - t0))s"
  NAMES+=("$name")
  RESULTS+=("$result")
  return 0
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -n 1
# shellcheck disable=SC2016  # $0/$1 and the array expand inside the child shell
step build 200 bash -c 'set -o pipefail; source scripts/gpu-cmake-args.sh &&
  cmake -S . -B "$0" "${GPU_CMAKE_ARGS[@]}" | grep -E "sparsetune:|Error|error" &&
  cmake --build "$0" -j "$1" --target evaluators_tests kernels_cuda_tests sparsetune' "$BUILD" "$JOBS"
step cuda-runtime-tests 40 "$BUILD/tests/evaluators/evaluators_tests" "[cuda]" --reporter compact
step kernels-cuda-tests 20 "$BUILD/tests/kernels/kernels_cuda_tests" --reporter compact

# Schedules for the gpu-small geometry: block_sparse keep 0.2 after 5 dense steps (as gpu-check.sh),
# and dense heads with an Astraea budget of 0.4 after 5 dense steps.
MODEL='{"name": "tiny-vdit/gpu-small", "layers": 6, "heads": 3, "head_dim": 64,
        "grid": [16, 32, 32], "text_tokens": 8, "text_position": "front", "steps": 30}'
SCHED="$(mktemp -d)"
cat >"$SCHED/gpu-small-block-sparse.json" <<JSON
{
  "format": "sparsetune.schedule",
  "version": 1,
  "model": $MODEL,
  "block_size": 64,
  "token_order": {"kind": "tiles", "tile": [1, 8, 8]},
  "dense_warmup_steps": 5,
  "heads": {"pattern": "block_sparse", "keep": 0.2, "first_frame_sink": true, "mask_refresh": 2},
  "provenance": {"note": "gpu-runtime-check: block-sparse keep 0.2 on every head of gpu-small"}
}
JSON
BUDGET=$(python3 -c 'print(", ".join(["1.0"] * 5 + ["0.4"] * 25))')
cat >"$SCHED/gpu-small-budget-0.4.json" <<JSON
{
  "format": "sparsetune.schedule",
  "version": 1,
  "model": $MODEL,
  "block_size": 64,
  "token_order": {"kind": "tiles", "tile": [1, 8, 8]},
  "dense_warmup_steps": 5,
  "token_budget": [$BUDGET],
  "heads": {"pattern": "dense"},
  "provenance": {"note": "gpu-runtime-check: Astraea budget 0.4 after 5 dense steps, dense heads"}
}
JSON
step profile-dense 30 "$BIN" profile configs/gpu-small.json --json --top 12
step profile-block-sparse 30 "$BIN" profile configs/gpu-small.json \
  --schedule "$SCHED/gpu-small-block-sparse.json" --json --top 12
step profile-budget 30 "$BIN" profile configs/gpu-small.json \
  --schedule "$SCHED/gpu-small-budget-0.4.json" --json --top 12

{
  echo
  echo "gpu-runtime-check summary (total $((SECONDS - START_S))s)"
  for i in "${!NAMES[@]}"; do printf '  %-22s %s\n' "${NAMES[$i]}" "${RESULTS[$i]}"; done
  grep -hE "test cases|assertions" "$OUT/cuda-runtime-tests.log" "$OUT/kernels-cuda-tests.log" | tail -n 4
  for f in profile-dense profile-block-sparse profile-budget; do
    python3 - "$OUT/$f.log" "$f" <<'PY' 2>/dev/null
import json, sys
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        j = json.loads(line)
        cats = ", ".join(f"{c['name']} {c['per_generation_ms']:.1f}" for c in j["categories"])
        top = "; ".join(f"{k['name'][:50]} {k['per_generation_ms']:.1f}" for k in j.get("kernels", [])[:6])
        print(f"  {sys.argv[2]}: {j['median_ms']:.1f} ms ({j['source']}, density {j['density']:.3f}); ms/gen: {cats}")
        print(f"    top: {top}")
PY
  done
} | tee "$OUT/summary.log"
