#!/usr/bin/env bash
# Installs everything sparsetune needs to build and run on Debian 12, idempotently.
#
#   ./scripts/setup.sh            Debian packages (as root, or through sudo) + libtorch from the
#                                 PyPI torch wheel into .venv/ (git-ignored)
#
# Environment:
#   SPARSETUNE_PYTHON=/path/python   use a Python that already has PyTorch instead of .venv
#                                    (its torch.utils.cmake_prefix_path is used by the build)
#   SPARSETUNE_SKIP_APT=1            do not touch Debian packages (air-gapped hosts, see
#                                    docs/offline-build.md)
#   SPARSETUNE_TORCH_VERSION=2.11.0  the torch wheel to install (pinned to the GPU host's version)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION="${SPARSETUNE_TORCH_VERSION:-2.11.0}"
PACKAGES=(build-essential cmake ninja-build pkg-config git python3 python3-venv python3-pip
          libeigen3-dev libsqlite3-dev nlohmann-json3-dev libcli11-dev catch2 ffmpeg sqlite3)

log() { echo "[setup] $*"; }

if [[ "${SPARSETUNE_SKIP_APT:-0}" != "1" ]]; then
  missing=()
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    SUDO=""
    if [[ $(id -u) -ne 0 ]]; then
      command -v sudo >/dev/null || { echo "[setup] need root or sudo to install: ${missing[*]}" >&2; exit 1; }
      SUDO="sudo"
    fi
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    log "Debian packages present"
  fi
fi

if [[ -n "${SPARSETUNE_PYTHON:-}" ]]; then
  "$SPARSETUNE_PYTHON" -c 'import torch' 2>/dev/null || {
    echo "[setup] SPARSETUNE_PYTHON=$SPARSETUNE_PYTHON has no torch module" >&2; exit 2; }
  log "using PyTorch $("$SPARSETUNE_PYTHON" -c 'import torch;print(torch.__version__)') from $SPARSETUNE_PYTHON"
  exit 0
fi

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" 2>/dev/null; then
  log "installing torch==$TORCH_VERSION from PyPI into .venv (a few GB with its CUDA libraries)"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q "torch==$TORCH_VERSION"
fi
# Reference tools for test fixtures (scikit-image SSIM, Python safetensors); small.
.venv/bin/python -c 'import numpy, safetensors, skimage' 2>/dev/null ||
  .venv/bin/pip install -q numpy safetensors scikit-image
log "libtorch $(.venv/bin/python -c 'import torch;print(torch.__version__)') ready in .venv"
