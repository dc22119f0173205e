#!/usr/bin/env bash
# From a fresh Debian 12 machine: setup, build, then the main job on the embedded default:
#   sparsetune run configs/default.json
# Extra arguments go to `sparsetune run` (e.g. --json, --db PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
exec "${SPARSETUNE_BUILD_DIR:-build}/bin/sparsetune" run configs/default.json "$@"
