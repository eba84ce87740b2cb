#!/bin/bash
# The step-matched recipe comparison behind fashion_mnist_deep_hvae.py:cpu's batch and
# learning rate (docs/results_budget.md): the same network trained on the same number of
# training images (IMAGES, default 128 000, about 2.1 epochs) at four (batch, Adam learning
# rate) pairs with a constant rate, two runs at a time on the two pinned cores, then each
# model's test ELBO over all 10 000 test images (one draw, the evaluation key of seed 0,
# batches of 500) and its KL per layer. About 50 minutes on 2 cores.
#
#   bash scripts/deep_hvae_recipes.sh [RUNS_DIR=runs/recipes] [IMAGES=128000]
set -u
cd "$(dirname "$0")/.."
RUNS=${1:-runs/recipes}
IMAGES=${2:-128000}
mkdir -p "$RUNS"

train() {  # core batch lr
  local core=$1 batch=$2 lr=$3 name="b$2_lr$3"
  taskset -c "$core" python -m experiments.main \
    --config=experiments/configs/fashion_mnist_deep_hvae.py:cpu --workdir="$RUNS/$name" \
    --config.train.num_steps=$((IMAGES / batch)) --config.train.batch_size="$batch" \
    --config.optim.learning_rate="$lr" --config.optim.schedule=constant \
    --config.train.eval_every_steps=1000000000 --config.train.checkpoint_every_steps=1000000000 \
    --noprogress > "$RUNS/$name.out" 2>&1
  taskset -c "$core" python -m scripts.budget_compare --num_samples=0 --batch_size=500 \
    --au_images=100 --au_samples=1 \
    --run="$name=experiments/configs/fashion_mnist_deep_hvae.py:cpu@$RUNS/$name" \
    --set="$name:optim.schedule=constant" \
    --out="$RUNS/$name.json" > "$RUNS/eval_$name.out" 2>&1
  echo "$name rc=$? $(python -c "import json; r = json.load(open('$RUNS/$name.json'))['$name']; \
print('test ELBO', r['test_elbo_all'], 'steps', r['step'])")"
}
train 0 64 5e-4 & train 1 32 5e-4 & wait
train 0 32 1e-3 & train 1 32 2e-3 & wait
