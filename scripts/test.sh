#!/usr/bin/env bash
# Sets up .venv and runs the whole test suite (unit, doctests, torch parity,
# demo and benchmark smoke tests) plus the linter, the formatter check and the
# type checker on the package. Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh test
# torch 2.13.0 is the CPU build pip finds on this project's machines; the
# parity tests skip if it cannot be installed.
.venv/bin/python -m pip install -q torch==2.13.0 ||
  echo "warning: torch==2.13.0 not installed; torch parity tests will be skipped"
bash scripts/setup_data.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check optax_decay
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
