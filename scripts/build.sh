#!/usr/bin/env bash
# Configures and builds sparsetune into build/ (after scripts/setup.sh).
#
#   ./scripts/build.sh [extra cmake -D options]
#
# Environment: SPARSETUNE_PYTHON (a Python with PyTorch; default .venv/bin/python),
# SPARSETUNE_BUILD_DIR (default build), SPARSETUNE_JOBS (default: number of cores).
set -euo pipefail
cd "$(dirname "$0")/.."

PY="${SPARSETUNE_PYTHON:-.venv/bin/python}"
BUILD="${SPARSETUNE_BUILD_DIR:-build}"
JOBS="${SPARSETUNE_JOBS:-$(nproc)}"
TORCH_PREFIX="$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')"
GEN=()
command -v ninja >/dev/null && GEN=(-G Ninja)
if [[ ! -f "$BUILD/CMakeCache.txt" ]]; then
  cmake -S . -B "$BUILD" "${GEN[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$TORCH_PREFIX" "$@"
elif (($#)); then
  cmake -S . -B "$BUILD" "$@"
fi
echo "[build] building in $BUILD with $JOBS jobs"
cmake --build "$BUILD" -j "$JOBS"
