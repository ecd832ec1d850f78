#!/usr/bin/env bash
# Set up (or reuse) .venv with the test extras and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-venv.sh test
export PYTHONHASHSEED=0
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
