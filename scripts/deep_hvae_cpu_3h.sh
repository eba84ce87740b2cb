#!/bin/bash
# docs/results_budget.md, "Three hours of one core each": scripts/deep_hvae_cpu_2h.sh's two
# runs carried on from their ends, in copies of their workdirs (deep_cpu_30, mlp_x): the
# deep run resumed with EPOCHS=30 (its cosine stretched to 30 epochs: the learning rate
# restarts at the stretched curve's 5e-4 and decays to 0 at step 56 250) on core 0, the MLP
# on core 1 for exactly as long (stopped with one SIGTERM when the deep run ends); then their
# test ELBO, KL, active units and log p(x) as scripts/deep_hvae_cpu_2h.sh's evaluation
# (END=1000: images 0-999), joined with that evaluation's chunks of the same images
# (x_vs_20.json: every run paired with the 20-epoch one). Run it on the RUNS_DIR of
# scripts/deep_hvae_cpu_2h.sh; the same command resumes the evaluation afterwards.
#
#   END=1000 bash scripts/deep_hvae_cpu_3h.sh runs/long 3600
set -u
cd "$(dirname "$0")/.."
source scripts/budget_lib.sh "$@"

DEEP_X=deep_hvae_cpu_${EPOCHS:-30}=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu_${EPOCHS:-30}"
if [ ! -f "$RUNS/mlp_x.out" ]; then  # (the first time: train; the same command resumes
  # the evaluation afterwards)
  [ -d "$RUNS/mlp_x" ] || cp -a "$RUNS/mlp" "$RUNS/mlp_x"
  [ -d "$RUNS/deep_cpu_${EPOCHS:-30}" ] || cp -a "$RUNS/deep_cpu" "$RUNS/deep_cpu_${EPOCHS:-30}"
  echo "$(date +%T) start deep_cpu_${EPOCHS:-30} and mlp_x" >> "$LOG"
  taskset -c 1 timeout -s TERM -k 600 $((BUDGET * 3)) \
    python -m experiments.main --config=$C/default.py --workdir="$RUNS/mlp_x" \
    "${COMMON[@]}" "${ENDLESS[@]}" --config.train.checkpoint_every_steps=100000 \
    > "$RUNS/mlp_x.out" 2>&1 &
  mlp_pid=$!  # timeout's: it passes one SIGTERM on to the launcher, which saves and exits
  PLANNED=1 BUDGET=$((BUDGET * 3)) run 0 deep_cpu_${EPOCHS:-30} fashion_mnist_deep_hvae.py:cpu \
    --config.train.num_epochs=${EPOCHS:-30} --config.train.checkpoint_every_steps=2500
  kill -TERM $mlp_pid
  wait $mlp_pid
  echo "$(date +%T) end mlp_x rc=$?" >> "$LOG"
fi
MLP_NAME=mlp_x MLP_DIR=mlp_x full_eval x_full "$DEEP_X" || exit 1
with_plain x_full x_vs_20
exit 0
