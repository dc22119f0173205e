#!/usr/bin/env bash
# From a fresh Debian 12 machine: setup, build, run every test (the README's test command).
#
#   ./scripts/test.sh [ctest options]     e.g. ./scripts/test.sh -R kernels
#
# Slow tests (tag [slow]) run only with SPARSETUNE_SLOW_TESTS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
cd "${SPARSETUNE_BUILD_DIR:-build}"
ctest --output-on-failure --timeout 1500 "$@"
