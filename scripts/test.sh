#!/usr/bin/env bash
# Sets up .venv and runs the fast tier of the test suite (the package's unit and
# property tests, doctests, the shared example modules, the README's code) plus the
# linter, the formatter check and the type checker. Arguments go to pytest.
# `bash scripts/test_slow.sh` installs the peers and runs the slow tier (the peers, the
# heavy suites, the scripts end to end); tests/conftest.py says which. The notebooks are
# executed by `bash scripts/docs.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh test
bash scripts/setup_data.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# Two or more workers (pytest-xdist), each test file on one worker.
.venv/bin/python -m pytest -n auto --dist loadfile -m "not slow" "$@"
