# Shared by the drivers of docs/results_budget.md (scripts/budget_*.sh, scripts/deep_hvae_*.sh,
# scripts/latent_vdm_8bit_15min.sh); sourced from the repository root, not run:
#
#   cd "$(dirname "$0")/.." && source scripts/budget_lib.sh "$@"
#
# Budget-matched training: every model trains for the same wall clock (BUDGET seconds,
# default 900) on one pinned CPU core, two runs at a time on the two cores, then stops
# through SIGTERM (the launcher saves a checkpoint and exits). Compilation counts inside
# the budget, as it does for a user. The comparisons run scripts/budget_compare.py, one per
# core. Arguments of every driver: [RUNS_DIR=runs/budget] [BUDGET=900]; each driver's log is
# RUNS_DIR/budget.log.
RUNS=${1:-runs/budget}
BUDGET=${2:-900}
mkdir -p "$RUNS"
LOG="$RUNS/budget.log"
C=experiments/configs
COMMON=(--config.train.eval_every_steps=1000000000
        --config.train.checkpoint_every_steps=1000000000 --noprogress)
# A run stopped by the budget trains "forever" until SIGTERM; a planned run (PLANNED=1)
# keeps its config's epochs, which its learning-rate schedule follows.
ENDLESS=(--config.train.num_epochs=100000)
# The planned 20-epoch :cpu run of scripts/deep_hvae_cpu_2h.sh, as budget_compare.py's --run
DEEP_CPU=deep_hvae_cpu=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu"

run() {  # core name config [overrides...]
  local core=$1 name=$2 cfg=$3
  shift 3
  echo "$(date +%T) start $name (core $core, ${BUDGET} s)" >> "$LOG"
  taskset -c "$core" timeout -s TERM -k 600 "$BUDGET" \
    python -m experiments.main --config="experiments/configs/$cfg" --workdir="$RUNS/$name" \
    "${COMMON[@]}" $([ "${PLANNED:-0}" = 1 ] || echo "${ENDLESS[@]}") "$@" \
    > "$RUNS/$name.out" 2>&1
  local rc=$?  # (before any $(...): a command substitution sets $? too)
  echo "$(date +%T) end $name rc=$rc (see $name.out: 'Stopped by SIGTERM ... checkpoint saved')" >> "$LOG"
}

EVAL=(--num_samples=1000 --num_test=100 --chunk=10 --batch_size=100 --ll_batch_size=10)
compare() {  # core name runs...
  local core=$1 name=$2
  shift 2
  echo "$(date +%T) start eval $name" >> "$LOG"
  taskset -c "$core" python -m scripts.budget_compare "${EVAL[@]}" "$@" \
    --out="$RUNS/$name.json" > "$RUNS/eval_$name.out" 2>&1
  local rc=$?
  echo "$(date +%T) eval $name rc=$rc" >> "$LOG"
  return $rc
}

full_eval() {  # prefix deep-run [budget_compare flags...]: the deep run's and the MLP's
  # log p(x) (k = 1000) on test images 0..END-1 (default 10000, the FULL test set), in
  # chunks of CHUNK test images (default 500: 15-19 minutes of one core), one worker per core
  # of CORES (default "0 1"). A chunk's figures are kept once complete ($RUNS/PREFIX_START.npz)
  # and skipped afterwards, so the same command resumes an evaluation cut off by the
  # machine (the whole test set: an estimated 2.6 hours of both cores). Once every chunk
  # exists they are joined (--merge) into $RUNS/PREFIX.json, with every paired difference
  # per class too (--by_class).
  local prefix=$1 deep=$2
  shift 2
  local n=${CHUNK:-500} end=${END:-10000} cores=(${CORES:-0 1})
  local mlp=${MLP_NAME:-mlp}=$C/default.py@"$RUNS/${MLP_DIR:-mlp}"
  worker() {  # i: chunks i, i + #cores, ... on core cores[i]
    local i=$1 start
    shift
    for ((start = i * n; start < end; start += ${#cores[@]} * n)); do
      [ -f "$RUNS/${prefix}_$start.npz" ] && continue
      # the ELBO, KL and active units once (with the first range), log p(x) for every range
      compare "${cores[$i]}" "${prefix}_$start" --run="$mlp" --run="$deep" "$@" \
        --test_start=$start --num_test=$n --save="$RUNS/partial_${prefix}_$start.npz" \
        $([ $start = 0 ] || echo --noelbo) &&
        mv "$RUNS/partial_${prefix}_$start.npz" "$RUNS/${prefix}_$start.npz"
    done
  }
  local i
  for i in "${!cores[@]}"; do worker "$i" "$@" & done
  wait
  local parts=() start missing=0
  for ((start = 0; start < end; start += n)); do
    parts+=("$RUNS/${prefix}_$start.npz")
    [ -f "$RUNS/${prefix}_$start.npz" ] || missing=$((missing + 1))
  done
  if [ $missing -gt 0 ]; then  # (a chunk failed: its eval_PREFIX_START.out says why)
    echo "$(date +%T) $prefix evaluation: $missing of ${#parts[@]} chunks missing" >> "$LOG"
    return 1
  fi
  python -m scripts.budget_compare --merge="$(IFS=,; echo "${parts[*]}")" \
    --by_class=fashion_mnist --out="$RUNS/$prefix.json" > "$RUNS/eval_$prefix.out" 2>&1
  local rc=$?
  echo "$(date +%T) $prefix evaluation joined: rc=$rc ($RUNS/$prefix.json)" >> "$LOG"
}
with_plain() {  # prefix out: PREFIX's chunks of test images 0..END-1 joined with the plain
  # 20-epoch run's (full_*) into $RUNS/OUT.json, every run paired with deep_hvae_cpu
  local prefix=$1 out=$2 parts=() start
  for ((start = 0; start < ${END:-10000}; start += ${CHUNK:-500})); do
    parts+=("$RUNS/full_$start.npz" "$RUNS/${prefix}_$start.npz")
  done
  python -m scripts.budget_compare --merge="$(IFS=,; echo "${parts[*]}")" \
    --base=deep_hvae_cpu --out="$RUNS/$out.json" > "$RUNS/eval_$out.out" 2>&1
  echo "$(date +%T) $prefix against the plain run: rc=$? ($RUNS/$out.json)" >> "$LOG"
}
# PHASES (a space-separated list, each driver sets its default) picks a driver's phases
phase() { [[ " $PHASES " == *" $1 "* ]]; }
