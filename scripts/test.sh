#!/usr/bin/env bash
# Sets up .venv and runs the fast tier of the test suite (the package's unit and
# property tests, doctests, the shared example modules, the README's code) plus the
# linter, the formatter check and the type checker. Arguments go to pytest:
# `bash scripts/test.sh -m slow` runs the slow tier (the heavy suites, the scripts end
# to end, the notebooks), `-m ""` everything; tests/conftest.py says which are slow.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh test
# torch 2.13.0 is the CPU build pip finds on this project's machines; the
# parity tests skip if it cannot be installed.
.venv/bin/python -m pip install -q torch==2.13.0 ||
  echo "warning: torch==2.13.0 not installed; torch parity tests will be skipped"
# The peers of tests/test_peers.py, with --no-deps so that they cannot replace torch
# (timm's modules are loaded without its torchvision); their tests skip if absent.
.venv/bin/python -m pip install -q --no-deps heavyball==3.2.1 opt-einsum==3.4.0 ||
  echo "warning: heavyball==3.2.1 not installed; its parity tests will be skipped"
.venv/bin/python -m pip install -q --no-deps timm==1.0.31 ||
  echo "warning: timm==1.0.31 not installed; its parity tests will be skipped"
bash scripts/setup_data.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two or more workers (pytest-xdist), each test file on one worker.
.venv/bin/python -m pytest -n auto --dist loadfile -m "not slow" "$@"
