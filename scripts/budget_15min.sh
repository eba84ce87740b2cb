#!/bin/bash
# docs/results_budget.md, "Binarized Fashion-MNIST" and "8-bit Fashion-MNIST": every model
# family (MLP VAE, conv VAE, deep HVAE, VDM, latent VDM) trained for the same wall clock
# (BUDGET seconds, default 900) on one pinned CPU core each, stopped by SIGTERM, then both
# comparisons (scripts/budget_compare.py, one per core): binarized (MLP VAE, deep HVAE, VDM)
# and 8-bit (conv VAE, deep HVAE, VDM), log p(x) with k = 1000 on the first 100 test images,
# the latent VDM against the MLP, the MLP's log p(x) on the full test set.
# About 100 minutes on 2 cores; docs/results_budget.md reports what it printed.
#
#   bash scripts/budget_15min.sh [RUNS_DIR=runs/budget] [BUDGET=900]
set -u
cd "$(dirname "$0")/.."
source scripts/budget_lib.sh "$@"

run 0 deep_bin fashion_mnist_deep_hvae.py:binary & run 1 mlp_bin default.py & wait
run 0 deep_8bit fashion_mnist_deep_hvae.py:8bit & run 1 conv_8bit fmnist_8bit_conv.py & wait
run 0 vdm_8bit fashion_mnist_vdm.py:8bit & run 1 vdm_bin fashion_mnist_vdm.py:binary & wait
# core 0: the latent VDM's budget, then the 8-bit comparison; core 1: the binarized one,
# then the latent VDM against the MLP (ELBO) and the MLP's log p(x) on the full test set.
(run 0 latent_bin fashion_mnist_vdm.py:latent
 compare 0 8bit --run=conv_vae=$C/fmnist_8bit_conv.py@"$RUNS/conv_8bit" \
   --run=deep_hvae=$C/fashion_mnist_deep_hvae.py:8bit@"$RUNS/deep_8bit" \
   --run=vdm=$C/fashion_mnist_vdm.py:8bit@"$RUNS/vdm_8bit") &
(compare 1 binary --run=mlp=$C/default.py@"$RUNS/mlp_bin" \
   --run=deep_hvae=$C/fashion_mnist_deep_hvae.py:binary@"$RUNS/deep_bin" \
   --run=vdm=$C/fashion_mnist_vdm.py:binary@"$RUNS/vdm_bin"
 while ! grep -q "end latent_bin" "$LOG"; do sleep 5; done
 compare 1 latent --run=mlp=$C/default.py@"$RUNS/mlp_bin" \
   --run=latent_vdm=$C/fashion_mnist_vdm.py:latent@"$RUNS/latent_bin"
 compare 1 mlp_full --run=mlp=$C/default.py@"$RUNS/mlp_bin" --num_test=0) &
wait
echo "$(date +%T) all done" >> "$LOG"
