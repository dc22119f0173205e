#!/usr/bin/env bash
# One device call that trains a tiny-vdit preset on the GPU host and brings back its weights,
# model card, log and contact sheets (docs/training.md):
#
#   OUT=/some/dir scripts/gpu-train.sh cpu-tiny|gpu-small [more `sparsetune train` options]
#
# Needs the git-ignored clips (carry "datasets/clips") and, on the GPU host, the static SQLite
# (carry ".deps"). Builds only the `sparsetune` target. Writes two files under $OUT (a device call
# brings back at most 8): <preset>.safetensors (the EMA weights) and <preset>-evidence.tgz holding
# models/<preset>.{md,json} (the model card), train-<preset>.log (GPU, build time, training
# progress), sample-<preset>-c<class>.png and analyze-<preset>.txt (`sparsetune analyze`: attention
# mass on same-frame and same-position keys per head, the evidence issue #7 asks for).
# Environment: OUT (default ./out), SPARSETUNE_BUILD_DIR (default build-gpu), SPARSETUNE_JOBS (16),
# SAMPLE_CLASSES (default "0 3"), ANALYZE (default 1; 0 skips analyze).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PRESET="${1:?usage: scripts/gpu-train.sh cpu-tiny|gpu-small [train options]}"
shift
FINAL="${OUT:-./out}"
mkdir -p "$FINAL"
FINAL="$(cd "$FINAL" && pwd)"
OUT="/tmp/sparsetune-train-$PRESET-out"
rm -rf "$OUT"
mkdir -p "$OUT/models"
BUILD="${SPARSETUNE_BUILD_DIR:-build-gpu}"
JOBS="${SPARSETUNE_JOBS:-16}"
LOG="$OUT/train-$PRESET.log"
BIN="$BUILD/bin/sparsetune"
case "$PRESET" in
  cpu-tiny) JOB=configs/default.json; SCALE=4; ANALYZE="${ANALYZE:-1}" ;;
  gpu-small) JOB=configs/gpu-small.json; SCALE=2; ANALYZE="${ANALYZE:-1}" ;;
  *) echo "unknown preset '$PRESET' (cpu-tiny, gpu-small)" >&2; exit 2 ;;
esac

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} >"$LOG" 2>&1

if [[ ! -x "$BIN" ]]; then
  source scripts/gpu-cmake-args.sh 2>>"$LOG"
  T0=$SECONDS
  if ! cmake -S . -B "$BUILD" "${GPU_CMAKE_ARGS[@]}" >"$OUT/configure.txt" 2>&1; then
    tail -20 "$OUT/configure.txt" >>"$LOG"
    cp "$LOG" "$FINAL/"
    exit 1
  fi
  if ! cmake --build "$BUILD" -j "$JOBS" --target sparsetune >"$OUT/build.txt" 2>&1; then
    grep -B2 -A8 "error" "$OUT/build.txt" | head -80 >>"$LOG"
    cp "$LOG" "$FINAL/"
    exit 1
  fi
  echo "configure + build: $((SECONDS - T0)) s" >>"$LOG"
  rm -f "$OUT/configure.txt" "$OUT/build.txt"
fi

T0=$SECONDS
"$BIN" train "configs/train-$PRESET.json" --out "$OUT/models" \
  --checkpoint-dir "/tmp/sparsetune-train-$PRESET" "$@" >>"$LOG" 2>&1
RC=$?
echo "train: exit $RC after $((SECONDS - T0)) s" >>"$LOG"
if ((RC != 0)); then
  cp "$LOG" "$FINAL/"
  exit "$RC"
fi

# The job config of the preset with the fresh weights, for sample and analyze.
python3 - "$JOB" "$OUT/models/$PRESET.safetensors" "/tmp/job-$PRESET.json" <<'PY'
import json, sys
job = json.load(open(sys.argv[1]))
job["workload"]["weights"] = sys.argv[2]
json.dump(job, open(sys.argv[3], "w"), indent=2)
PY
for C in ${SAMPLE_CLASSES:-0 3}; do
  "$BIN" sample "/tmp/job-$PRESET.json" --class "$C" --seed 1 --scale "$SCALE" \
    -o "$OUT/sample-$PRESET-c$C.png" >>"$LOG" 2>&1
done
if ((ANALYZE)); then
  "$BIN" analyze "/tmp/job-$PRESET.json" >"$OUT/analyze-$PRESET.txt" 2>>"$LOG"
fi
echo "done: $((SECONDS)) s in all" >>"$LOG"
cp "$OUT/models/$PRESET.safetensors" "$FINAL/"
rm "$OUT/models/$PRESET.safetensors"
tar czf "$FINAL/$PRESET-evidence.tgz" -C "$OUT" .
