#!/usr/bin/env bash
# Set up (or reuse) .venv and run the main job on the embedded default (the built-in survey simulator):
# simulate a survey, train the `cpu` preset on image + DNA + taxonomy text, evaluate it, and write the report.
#   scripts/quickstart.sh [OUTPUT_DIR]          (default: clibd-output)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh weights,viz,notebooks
exec .venv/bin/clibd demo --out "${1:-clibd-output}"
