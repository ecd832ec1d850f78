#!/usr/bin/env bash
# Create or reuse the local virtual environment (.venv) and install clibd_toolkit with the given extras.
#
#   scripts/setup-venv.sh [EXTRAS]        e.g. scripts/setup-venv.sh test   (default: weights,viz,notebooks)
#
# torch is installed FIRST, as a CPU build, and then pinned while everything else installs, so that no
# dependency can pull a multi-GB CUDA build. Environment overrides:
#   PYTHON=python3.11            interpreter used to create the venv
#   CLIBD_VENV=.venv             where the venv lives
#   CLIBD_TORCH="torch==2.13.0"  torch requirement (e.g. CLIBD_TORCH=torch for your platform's default/CUDA build)
#   CLIBD_TORCH_INDEX=https://download.pytorch.org/whl/cpu   extra index for the CPU build (used when reachable)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-weights,viz,notebooks}"
PYTHON="${PYTHON:-python3}"
VENV="${CLIBD_VENV:-.venv}"
TORCH_SPEC="${CLIBD_TORCH:-torch==2.13.0}"
TORCH_INDEX="${CLIBD_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"

log() { printf '[setup] %s\n' "$*" >&2; }

if [ ! -x "$VENV/bin/python" ]; then
    log "creating virtual environment $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
    index_args=()
    # Only name the CPU index when it answers: an unreachable extra index makes pip retry for minutes.
    if "$VENV/bin/python" - "$TORCH_INDEX" <<'PY' >/dev/null 2>&1
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/torch/", timeout=5)
PY
    then
        index_args=(--extra-index-url "$TORCH_INDEX")
    fi
    log "installing $TORCH_SPEC (CPU build first) ${index_args[*]:-}"
    "${PIP[@]}" install -q "$TORCH_SPEC" "${index_args[@]}"
fi
TORCH_VERSION="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
printf 'torch==%s\n' "$TORCH_VERSION" > "$VENV/clibd-torch-constraint.txt"

stamp="$VENV/.clibd-installed-$(printf '%s' "$EXTRAS" | tr ',' '-')"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    log "installing clibd_toolkit[$EXTRAS] (torch pinned at $TORCH_VERSION)"
    "${PIP[@]}" install -q -c "$VENV/clibd-torch-constraint.txt" -e ".[$EXTRAS]"
    # bioscan-dataset declares torchvision, which has no build matching a CPU-only torch here; its metadata loaders
    # need none of it, so it is installed without dependencies (clibd_toolkit supplies a shim, see readers/bioscan.py).
    "${PIP[@]}" install -q --no-deps "bioscan-dataset>=1.2"
    touch "$stamp"
fi
log "environment ready: $VENV (torch $TORCH_VERSION)"
