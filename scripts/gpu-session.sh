#!/usr/bin/env bash
# Everything one device call checks on the GPU host, in one go (one build shared by both parts):
#   1. scripts/gpu-check.sh: build, all tests ([cuda] included), profiles, CUPTI overhead, the
#      gpu-small search and the best candidate's profile;
#   2. scripts/gpu-attn.sh: the block-sparse kernel's tests under each kernel variant,
#      compute-sanitizer, `bench attention` at the model shapes, FlexAttention side by side.
# A device call brings back at most 8 files, so the logs of each part are packed into one archive.
#
#   OUT=/some/dir scripts/gpu-session.sh
#
# Environment: OUT (default ./out), GPU_CHECK_BUDGET_S (part 1, default 330 s), GPU_ATTN_TILES and
# GPU_ATTN_EXTRA_TILES (part 2, see gpu-attn.sh), GPU_ATTN_LIMIT_S (part 2 at most, default 300 s; it also stops 25 s short of the 600 s call).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
FINAL="${OUT:-./out}"
mkdir -p "$FINAL"
FINAL="$(cd "$FINAL" && pwd)"
WORK="$(mktemp -d /tmp/gpu-session.XXXXXX)"
export SPARSETUNE_BUILD_DIR="${SPARSETUNE_BUILD_DIR:-build-gpu}"
GPU_ATTN_LIMIT_S="${GPU_ATTN_LIMIT_S:-300}"

OUT="$WORK/check" GPU_CHECK_BUDGET_S="${GPU_CHECK_BUDGET_S:-330}" \
  GPU_CHECK_CTEST_EXCLUDE=kernels_cuda_tests bash scripts/gpu-check.sh >"$WORK/check.txt" 2>&1
echo "gpu-check.sh exit $?" >>"$WORK/check.txt"
# Part 2 gets what is left of the call's 600 s (minus 25 s to pack and return).
LEFT=$((575 - SECONDS))
((LEFT > GPU_ATTN_LIMIT_S)) && LEFT=$GPU_ATTN_LIMIT_S
OUT="$WORK/attn" GPU_ATTN_ELAPSED_S=$SECONDS timeout --kill-after=10 "$LEFT" bash scripts/gpu-attn.sh \
  >"$WORK/attn.txt" 2>&1
echo "gpu-attn.sh exit $?" >>"$WORK/attn.txt"

# Back: the two summaries as text, the search database, and one archive per part.
cp "$WORK/check.txt" "$WORK/attn.txt" "$FINAL/"
[[ -f "$WORK/check/gpu.sqlite" ]] && cp "$WORK/check/gpu.sqlite" "$FINAL/"
rm -f "$WORK/check/gpu.sqlite" "$WORK/check/trace.json"
tar czf "$FINAL/check-logs.tgz" -C "$WORK" check
tar czf "$FINAL/attn-logs.tgz" -C "$WORK" attn
tail -n 40 "$WORK/check.txt"
tail -n 30 "$WORK/attn.txt"
