#!/bin/bash
# docs/results_budget.md, "The latent VDM on 8-bit pixels": the 8-bit latent VDM
# (fashion_mnist_vdm.py:latent8bit) beside the conv VAE it is built from (the same network
# with the N(0, I) prior), BUDGET seconds (default 900) on one pinned core each, stopped by
# SIGTERM, then both compared (scripts/budget_compare.py, log p(x) with k = 1000 on the
# first 100 test images).
#
#   bash scripts/latent_vdm_8bit_15min.sh [RUNS_DIR=runs/budget] [BUDGET=900]
set -u
cd "$(dirname "$0")/.."
source scripts/budget_lib.sh "$@"

run 0 latent_8bit fashion_mnist_vdm.py:latent8bit & run 1 conv_8bit fmnist_8bit_conv.py & wait
compare 0 latent8bit --run=conv_vae=$C/fmnist_8bit_conv.py@"$RUNS/conv_8bit" \
  --run=latent_vdm=$C/fashion_mnist_vdm.py:latent8bit@"$RUNS/latent_8bit"
echo "$(date +%T) all done" >> "$LOG"
exit 0
