#!/bin/bash
# docs/results_budget.md, ":cpu_patch for two hours of one core against the MLP VAE, kept in
# the repository": :cpu_patch's planned 2-hour run (13 epochs; checkpoints every 500 steps,
# so the same command resumes it) on core 0 beside the MLP VAE for BUDGET (7200) on core 1,
# then both evaluated: the deep model's exported parameters into pretrained/, both
# models' ELBO, KL and active units over the 10 000 test images (on core 1), the MLP's
# log p(x) in 20 chunks of 500, and the deep model's chunks one by one on both cores (hours),
# each chunk kept in RES (default RUNS/patch_2h) once complete; the join pairs whatever
# images are done so far (per class too) and writes them to pretrained/ as one per-image
# file and its figures.
#
#   bash scripts/deep_hvae_patch_2h.sh runs/long 7200   # train both, then every phase
#   PHASES="chunks join" bash scripts/deep_hvae_patch_2h.sh runs/long
#       # the rest of the deep model's chunks, from its parameter file alone (no workdir),
#       # then the join (END=5000: images 0-4999 only; CORES="1": core 1)
#
# Phases (PHASES, default "train export baseline chunks join"): train, export, baseline,
# chunks, join.
set -u
cd "$(dirname "$0")/.."
source scripts/budget_lib.sh "$@"
PHASES=${PHASES:-train export baseline chunks join}

RES=${RES:-$RUNS/patch_2h}
OUT=pretrained/fashion_mnist_deep_hvae_cpu_patch   # .npz parameters, _test.npz/.json figures
PATCH_NPZ=$OUT.npz
PATCH_RUN=deep_hvae_patch=$C/fashion_mnist_deep_hvae.py:cpu_patch@$PATCH_NPZ
MLP_RUN=mlp=$C/default.py@"$RUNS/mlp"
patch_export() {  # the deep run's evaluation parameters -> $PATCH_NPZ
  [ -f "$PATCH_NPZ" ] && return 0
  taskset -c 0 python -m experiments.main --mode=export --noprogress \
    --config=$C/fashion_mnist_deep_hvae.py:cpu_patch --workdir="$RUNS/deep_patch" &&
    cp "$(ls -t "$RUNS"/deep_patch/params_*.npz | head -1)" "$PATCH_NPZ"
  local rc=$?
  echo "$(date +%T) exported deep_patch: rc=$rc ($PATCH_NPZ)" >> "$LOG"
  return $rc
}
patch_baseline() {  # core: both models' ELBO, KL and active units over the 10 000 test
  # images ($RES/elbo.npz, elbo.json), then the MLP's log p(x) in 20 chunks of 500
  local core=$1 start
  [ -f "$RES/elbo.npz" ] || { compare "$core" patch_2h_elbo --num_samples=0 \
    --run="$MLP_RUN" --run="$PATCH_RUN" --save="$RES/elbo.npz" &&
    cp "$RUNS/patch_2h_elbo.json" "$RES/elbo.json"; }
  for ((start = 0; start < 10000; start += 500)); do
    [ -f "$RES/mlp_$start.npz" ] || compare "$core" "mlp_2h_$start" --run="$MLP_RUN" \
      --noelbo --test_start=$start --num_test=500 --save="$RES/mlp_$start.npz"
  done
}
patch_chunks() {  # the deep model's log p(x) chunks from its parameter file, 500 images
  # each from 0 to END (default 10000), on the cores of CORES (default "0 1"), skipping
  # those already in $RES; the same keys as the MLP's chunks of the same ranges
  local end=${END:-10000} cores=(${CORES:-0 1}) i
  patch_worker() {
    local i=$1 start
    for ((start = i * 500; start < end; start += ${#cores[@]} * 500)); do
      [ -f "$RES/deep_$start.npz" ] && continue
      compare "${cores[$i]}" "patch_2h_$start" --run="$PATCH_RUN" --noelbo \
        --test_start=$start --num_test=500 --save="$RUNS/partial_deep_$start.npz" &&
        mv "$RUNS/partial_deep_$start.npz" "$RES/deep_$start.npz"
    done
  }
  for i in "${!cores[@]}"; do patch_worker "$i" & done
  wait
}
patch_join() {  # the images evaluated so far, deep paired with the MLP, per class too (all
  # 10 000 once every chunk exists) -> ${OUT}_test.npz (per image) and ${OUT}_test.json
  local parts=("$RES/elbo.npz") start
  for ((start = 0; start < 10000; start += 500)); do
    parts+=("$RES/mlp_$start.npz")
    [ -f "$RES/deep_$start.npz" ] && parts+=("$RES/deep_$start.npz")
  done
  python -m scripts.budget_compare --merge="$(IFS=,; echo "${parts[*]}")" \
    --by_class=fashion_mnist --save="${OUT}_test.npz" --out="${OUT}_test.json" \
    > "$RUNS/eval_patch_2h.out" 2>&1
  echo "$(date +%T) patch_2h joined: rc=$? (${OUT}_test.json)" >> "$LOG"
}

mkdir -p "$RES"
if phase train; then
  (PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 0 deep_patch fashion_mnist_deep_hvae.py:cpu_patch \
    --config.train.checkpoint_every_steps=500) &
  [ -f "$RUNS/mlp.out" ] || run 1 mlp default.py --config.train.checkpoint_every_steps=100000
  wait
fi
phase export && { patch_export || exit 1; }
phase baseline && patch_baseline 1
phase chunks && patch_chunks
phase join && patch_join
exit 0
