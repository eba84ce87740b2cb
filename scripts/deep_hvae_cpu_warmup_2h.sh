#!/bin/bash
# docs/results_budget.md, "The same run with a KL warm-up": scripts/deep_hvae_cpu_2h.sh's
# planned deep run with a KL warm-up (beta 0 -> 1 over its first 7500 steps, 20 %) on
# core 0, then its test ELBO, KL per layer and active units beside the MLP's and the plain
# run's (all 10 000 test images, the same key). Run it on the RUNS_DIR of
# scripts/deep_hvae_cpu_2h.sh, whose MLP and plain deep run it compares with.
#
#   bash scripts/deep_hvae_cpu_warmup_2h.sh runs/long 7200
#   END=1000 PHASES=eval bash scripts/deep_hvae_cpu_warmup_2h.sh runs/long
#       # its log p(x) on the first END test images, as scripts/deep_hvae_cpu_2h.sh's
#       # evaluation, and paired with the plain run's (whose chunks of those images must
#       # exist)
#
# Phases (PHASES, default "train elbo"): train, elbo, eval.
set -u
cd "$(dirname "$0")/.."
source scripts/budget_lib.sh "$@"
PHASES=${PHASES:-train elbo}
# The KL-warm-up variant of the planned :cpu run: its overrides, given to the launcher
# (--config.X) and to budget_compare.py (--set=name:X)
WU_NAME=deep_hvae_cpu_warmup
WU_SET=(loss.warmup_steps=7500 eval.num_importance_samples=0)

# The plain run codes with one channel per 7x7 layer, one or two units per 1x1 layer and
# none at 14x14: the early collapse a warm-up is meant to prevent. On core 0 only, so that
# core 1 can evaluate. The in-run evaluation skips log p(x) (hours at k = 1000);
# budget_compare.py measures it.
if phase train; then
  PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 0 deep_cpu_wu fashion_mnist_deep_hvae.py:cpu \
    --config.train.checkpoint_every_steps=2500 "${WU_SET[@]/#/--config.}"
fi
if phase elbo; then
  compare 0 warmup --num_samples=0 --run=mlp=$C/default.py@"$RUNS/mlp" --run="$DEEP_CPU" \
    --run=$WU_NAME=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu_wu" \
    "${WU_SET[@]/#/--set=$WU_NAME:}"
  echo "$(date +%T) all done" >> "$LOG"
fi
if phase eval; then
  # the warm-up run's log p(x) beside the MLP's in chunks, as scripts/deep_hvae_cpu_2h.sh's
  # (END=1000: the first 1000 test images), then paired with the plain run's chunks of the
  # same images
  full_eval wu_full $WU_NAME=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu_wu" \
    "${WU_SET[@]/#/--set=$WU_NAME:}" || exit 1
  with_plain wu_full wu_vs_plain
fi
exit 0
