#!/usr/bin/env bash
# The demo: trains a small Flax NNX MLP on scikit-learn's digits with every
# optimizer and prints accuracy and weight norm. Arguments go to examples/demo.py.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh demo
.venv/bin/python examples/demo.py "$@"
