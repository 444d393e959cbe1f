#!/usr/bin/env bash
# The slow tier of the test suite: the peers (torch.optim, heavyball, timm, jaxopt,
# pytorch_optimizer, pytorch-cpr) step by
# step, the heavy suites and every script end to end (tests/conftest.py
# lists them). Installs what scripts/test.sh installs, plus the peers; arguments go to
# pytest (e.g. `-k peers`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh test
# torch 2.13.0 is the CPU build pip finds on this project's machines. heavyball and timm
# come with --no-deps, so that they cannot replace it (timm's optimizer modules are
# loaded without its torchvision). Each peer's tests skip if it cannot be installed.
.venv/bin/python -m pip install -q torch==2.13.0 ||
  echo "warning: torch==2.13.0 not installed; the torch, heavyball and timm tests will be skipped"
.venv/bin/python -m pip install -q --no-deps heavyball==3.2.1 opt-einsum==3.4.0 timm==1.0.31 ||
  echo "warning: heavyball or timm not installed; their parity tests will be skipped"
# The peers of issue 13: pytorch_optimizer (AdamS), pytorch-cpr (AdamCPR), jaxopt (prox ops).
.venv/bin/python -m pip install -q --no-deps pytorch_optimizer==4.1.0 pytorch-cpr==0.3.1 jaxopt==0.8.5 ||
  echo "warning: pytorch_optimizer, pytorch-cpr or jaxopt not installed; their tests will be skipped"
bash scripts/setup_data.sh
.venv/bin/python -m pytest -n auto --dist loadfile -m slow "$@"
