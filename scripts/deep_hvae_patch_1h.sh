#!/bin/bash
# docs/results_budget.md, "The networks on 2x2 patches (:cpu_patch): one hour of one core
# against :cpu": :cpu_patch beside :cpu, each a planned run on its own core (cpu_patch_1h:
# EPOCHS_PATCH=7 on core 0; cpu_1h: EPOCHS_CPU=10 on core 1; epochs chosen from their step
# times to end inside BUDGET, which they are not stopped at), then log p(x) of both beside
# the 2-hour MLP (RUNS_DIR/mlp, from scripts/deep_hvae_cpu_2h.sh) as that script's
# evaluation, on test images 0..END-1 (patch_1h_*.npz; END=500 CHUNK=250 for two chunks, one
# a core; patch_1h.json), and paired with :cpu's (patch_vs_cpu_1h.json); the same command
# resumes either part (a finished run resumed does nothing, so a rerun goes straight to the
# evaluation).
#
#   END=500 CHUNK=250 bash scripts/deep_hvae_patch_1h.sh runs/long 3600
set -u
cd "$(dirname "$0")/.."
source scripts/budget_lib.sh "$@"

(PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 0 cpu_patch_1h fashion_mnist_deep_hvae.py:cpu_patch \
  --config.train.num_epochs=${EPOCHS_PATCH:-7} --config.train.checkpoint_every_steps=2500) &
PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 1 cpu_1h fashion_mnist_deep_hvae.py:cpu \
  --config.train.num_epochs=${EPOCHS_CPU:-10} --config.train.checkpoint_every_steps=2500
wait
full_eval patch_1h deep_hvae_cpu_1h=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/cpu_1h" \
  --run=deep_hvae_patch_1h=$C/fashion_mnist_deep_hvae.py:cpu_patch@"$RUNS/cpu_patch_1h" \
  || exit 1
parts=$(for ((s = 0; s < ${END:-10000}; s += ${CHUNK:-500})); do echo -n "$RUNS/patch_1h_$s.npz,"; done)
python -m scripts.budget_compare --merge="${parts%,}" --base=deep_hvae_cpu_1h \
  --out="$RUNS/patch_vs_cpu_1h.json" > "$RUNS/eval_patch_vs_cpu_1h.out" 2>&1
echo "$(date +%T) all done" >> "$LOG"
exit 0
