#!/bin/bash
# docs/results_budget.md, "The CPU-sized deep HVAE's whole run against the MLP VAE": the
# CPU-sized deep HVAE's whole planned run (fashion_mnist_deep_hvae.py:cpu, its config's
# epochs and cosine schedule; not stopped, so it must end inside BUDGET) on core 0 beside
# the MLP VAE trained for BUDGET on core 1, then both compared with log p(x) on the FULL
# test set, in chunks of CHUNK=500 images over the two cores.
#
#   bash scripts/deep_hvae_cpu_2h.sh runs/long 7200
#   PHASES=eval bash scripts/deep_hvae_cpu_2h.sh runs/long
#       # that evaluation alone, resumed: chunks already saved are skipped; CORES="1" runs
#       # it on core 1 alone (default "0 1"), and it is joined once all 20 chunks exist
#       # (END=4500: only test images 0-4499, joined into the same full.json)
#
# Phases (PHASES, default "train eval"): train, eval.
set -u
cd "$(dirname "$0")/.."
source scripts/budget_lib.sh "$@"
PHASES=${PHASES:-train eval}

if phase train; then
  # The deep run's wall clock is its own (its epochs and schedule are planned to fit); the
  # MLP (converged long before) gets all of BUDGET. A safety timeout of 1.5 x BUDGET on the
  # deep run; $RUNS/deep_cpu.out's last lines and its metrics.jsonl give its time.
  # Checkpoints every few minutes (deep: 2500 steps; MLP: 100 000), so that a machine
  # that restarts mid-run loses minutes, not the run (the same command resumes it).
  (PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 0 deep_cpu fashion_mnist_deep_hvae.py:cpu \
    --config.train.checkpoint_every_steps=2500) &
  run 1 mlp default.py --config.train.checkpoint_every_steps=100000 & wait
fi
phase eval && full_eval full "$DEEP_CPU"
phase train && echo "$(date +%T) all done" >> "$LOG"
exit 0
