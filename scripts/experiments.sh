#!/usr/bin/env bash
# Runs the experiments of the README at their full defaults on Fashion-MNIST
# (each within about 15 minutes on 2 CPU cores) and copies their figures and summaries
# into docs/experiments/, where the README shows them. Arguments go to every script
# (e.g. --seed 1). Outputs: out/<experiment>/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh demo
bash scripts/setup_data.sh
for name in lr_wd_map adamw_vs_adamp scale_freeness batchnorm_decay modern_decay finetune_center \
  sparsity_frontier norm_control; do
  echo "== $name"
  start=$SECONDS
  .venv/bin/python "examples/$name.py" --out "out/$name" "$@"
  echo "== $name: $((SECONDS - start)) s"
  mkdir -p "docs/experiments/$name"
  cp "out/$name"/*.png "out/$name/summary.md" "docs/experiments/$name/"
done
# Scale-freeness again with eps out of the picture (AdamW/ProxAdam: round-off only).
.venv/bin/python examples/scale_freeness.py --eps 1e-30 --out out/scale_freeness_eps0 "$@"
mkdir -p docs/experiments/scale_freeness_eps0
cp out/scale_freeness_eps0/*.png out/scale_freeness_eps0/summary.md docs/experiments/scale_freeness_eps0/
