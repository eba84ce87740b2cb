#!/bin/bash
# Budget-matched training for docs/results_budget.md: every model trains for the same wall
# clock (BUDGET seconds, default 900) on one pinned CPU core, two runs at a time on the two
# cores, then stops through SIGTERM (the launcher saves a checkpoint and exits).
# Compilation counts inside the budget, as it does for a user. Then both comparisons
# (benchmarks/budget_compare.py, one per core): binarized (MLP VAE, deep HVAE, VDM) and
# 8-bit (conv VAE, deep HVAE, VDM), log p(x) with k = 1000 on the first 100 test images,
# the latent VDM against the MLP, the MLP's log p(x) on the full test set.
# About 100 minutes on 2 cores; docs/results_budget.md reports what it printed.
#
#   bash benchmarks/budget_runs.sh [RUNS_DIR=runs/budget] [BUDGET=900]
#   ONLY=cpu bash benchmarks/budget_runs.sh ...   # only the CPU-sized deep HVAE and the MLP
#   ONLY=cpu_full bash benchmarks/budget_runs.sh runs/long 7200
#       # the CPU-sized deep HVAE's whole planned run (its config's epochs and cosine
#       # schedule; not stopped, so it must end inside BUDGET) beside the MLP VAE trained for
#       # BUDGET, then both compared with log p(x) on the FULL test set, in chunks of
#       # CHUNK=500 images over the two cores
#   ONLY=cpu_full_eval bash benchmarks/budget_runs.sh runs/long
#       # that evaluation alone, resumed: chunks already saved are skipped; CORES="1" runs
#       # it on core 1 alone (default "0 1"), and it is joined once all 20 chunks exist
#       # (END=4500: only test images 0-4499, joined into the same full.json)
#   ONLY=cpu_warmup bash benchmarks/budget_runs.sh runs/long 7200
#       # the same planned deep run with a KL warm-up (beta 0 -> 1 over its first 7500
#       # steps, 20 %) on core 0, then its test ELBO, KL per layer and active units beside
#       # the MLP's and the plain run's (all 10 000 test images, the same key)
#   END=1000 ONLY=cpu_warmup_eval bash benchmarks/budget_runs.sh runs/long
#       # its log p(x) on the first END test images, as cpu_full_eval, and paired with the
#       # plain run's (whose chunks of those images must exist)
#   ONLY=cpu_extend bash benchmarks/budget_runs.sh runs/long
#       # cpu_full's two runs carried on from their ends, in copies of their workdirs
#       # (deep_cpu_30, mlp_x): the deep run resumed with EPOCHS=30 (its cosine stretched to
#       # 30 epochs: the learning rate restarts at the stretched curve's 5e-4 and decays to 0
#       # at step 56 250) on core 0, the MLP on core 1 for exactly as long (stopped with one
#       # SIGTERM when the deep run ends); then their test ELBO, KL, active units and
#       # log p(x) as cpu_full_eval (END=1000: images 0-999), joined with cpu_full_eval's
#       # chunks of the same images (x_vs_20.json: every run paired with the 20-epoch one)
#   ONLY=cpu_patch bash benchmarks/budget_runs.sh runs/long 3600
#       # :cpu_patch (the networks on 2x2 patches) beside :cpu, each a planned run on its own
#       # core (cpu_patch_1h: EPOCHS_PATCH=7 on core 0; cpu_1h: EPOCHS_CPU=10 on core 1;
#       # epochs chosen from their step times to end inside BUDGET, which they are not
#       # stopped at), then log p(x) of both beside the 2-hour MLP (runs/long/mlp) as
#       # cpu_full_eval, on test images 0..END-1 (patch_1h_*.npz; END=500 CHUNK=250 for
#       # two chunks, one a core; patch_1h.json), and paired with :cpu's
#       # (patch_vs_cpu_1h.json); the same command resumes either part
#   ONLY=cpu_patch_2h bash benchmarks/budget_runs.sh runs/long 7200
#       # :cpu_patch's planned 2-hour run beside the MLP VAE for 2 hours, then both
#       # evaluated into benchmarks/results/cpu_patch_2h (committed: a session's checkout
#       # keeps no runs/): the deep model's exported parameters, both models' ELBO, KL and
#       # active units, the MLP's log p(x) in 20 chunks of 500, and the deep model's chunks
#       # one by one; ONLY=cpu_patch_2h_eval goes on with the deep chunks in a later session
#       # from the parameter file alone; full.json pairs whatever images are done so far;
#       # PHASES="export baseline" runs only those of its phases (train export baseline
#       # chunks join)
#   ONLY=latent8bit bash benchmarks/budget_runs.sh ...   # the 8-bit latent VDM beside the
#       # conv VAE (the same network with the N(0, I) prior)
set -u
cd "$(dirname "$0")/.."
RUNS=${1:-runs/budget}
BUDGET=${2:-900}
mkdir -p "$RUNS"
LOG="$RUNS/budget.log"
COMMON=(--config.train.eval_every_steps=1000000000
        --config.train.checkpoint_every_steps=1000000000 --noprogress)
# A run stopped by the budget trains "forever" until SIGTERM; a planned run (PLANNED=1)
# keeps its config's epochs, which its learning-rate schedule follows.
ENDLESS=(--config.train.num_epochs=100000)

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
  taskset -c "$core" python benchmarks/budget_compare.py "${EVAL[@]}" "$@" \
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
  python benchmarks/budget_compare.py --merge="$(IFS=,; echo "${parts[*]}")" \
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
  python benchmarks/budget_compare.py --merge="$(IFS=,; echo "${parts[*]}")" \
    --base=deep_hvae_cpu --out="$RUNS/$out.json" > "$RUNS/eval_$out.out" 2>&1
  echo "$(date +%T) $prefix against the plain run: rc=$? ($RUNS/$out.json)" >> "$LOG"
}
# The KL-warm-up variant of the planned :cpu run (ONLY=cpu_warmup, cpu_warmup_eval): its
# overrides, given to the launcher (--config.X) and to budget_compare.py (--set=name:X)
WU_NAME=deep_hvae_cpu_warmup
WU_SET=(loss.warmup_steps=7500 eval.num_importance_samples=0)
C=experiments/configs
DEEP_CPU=deep_hvae_cpu=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu"
if [ "${ONLY:-}" = cpu_full ]; then
  # The deep run's wall clock is its own (its epochs and schedule are planned to fit); the
  # MLP (converged long before) gets all of BUDGET. A safety timeout of 1.5 x BUDGET on the
  # deep run; $RUNS/deep_cpu.out's last lines and its metrics.jsonl give its time.
  # Checkpoints every few minutes (deep: 2500 steps; MLP: 100 000), so that a machine
  # that restarts mid-run loses minutes, not the run (the same command resumes it).
  (PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 0 deep_cpu fashion_mnist_deep_hvae.py:cpu \
    --config.train.checkpoint_every_steps=2500) &
  run 1 mlp default.py --config.train.checkpoint_every_steps=100000 & wait
  full_eval full "$DEEP_CPU"
  echo "$(date +%T) all done" >> "$LOG"
  exit 0
fi
if [ "${ONLY:-}" = cpu_full_eval ]; then  # only (or the rest of) cpu_full's evaluation
  full_eval full "$DEEP_CPU"
  exit 0
fi
if [ "${ONLY:-}" = cpu_warmup ]; then
  # cpu_full's deep run with a KL warm-up over its first 20 % (the plain run codes with one
  # channel per 7x7 layer, one or two units per 1x1 layer and none at 14x14: the early
  # collapse a warm-up is meant to prevent), on core 0 only, so that core 1 can evaluate.
  # The in-run evaluation skips log p(x) (hours at k = 1000); budget_compare.py measures it.
  PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 0 deep_cpu_wu fashion_mnist_deep_hvae.py:cpu \
    --config.train.checkpoint_every_steps=2500 "${WU_SET[@]/#/--config.}"
  compare 0 warmup --num_samples=0 --run=mlp=$C/default.py@"$RUNS/mlp" --run="$DEEP_CPU" \
    --run=$WU_NAME=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu_wu" \
    "${WU_SET[@]/#/--set=$WU_NAME:}"
  echo "$(date +%T) all done" >> "$LOG"
  exit 0
fi
if [ "${ONLY:-}" = cpu_warmup_eval ]; then
  # the warm-up run's log p(x) beside the MLP's in chunks, as cpu_full_eval (END=1000: the
  # first 1000 test images), then paired with the plain run's chunks of the same images
  full_eval wu_full $WU_NAME=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu_wu" \
    "${WU_SET[@]/#/--set=$WU_NAME:}" || exit 1
  with_plain wu_full wu_vs_plain
  exit 0
fi
if [ "${ONLY:-}" = cpu_extend ]; then
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
fi
if [ "${ONLY:-}" = cpu_patch ]; then
  # (a finished run resumed does nothing, so a rerun goes straight to the evaluation)
  (PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 0 cpu_patch_1h fashion_mnist_deep_hvae.py:cpu_patch \
    --config.train.num_epochs=${EPOCHS_PATCH:-7} --config.train.checkpoint_every_steps=2500) &
  PLANNED=1 BUDGET=$((BUDGET * 3 / 2)) run 1 cpu_1h fashion_mnist_deep_hvae.py:cpu \
    --config.train.num_epochs=${EPOCHS_CPU:-10} --config.train.checkpoint_every_steps=2500
  wait
  full_eval patch_1h deep_hvae_cpu_1h=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/cpu_1h" \
    --run=deep_hvae_patch_1h=$C/fashion_mnist_deep_hvae.py:cpu_patch@"$RUNS/cpu_patch_1h" \
    || exit 1
  parts=$(for ((s = 0; s < ${END:-10000}; s += ${CHUNK:-500})); do echo -n "$RUNS/patch_1h_$s.npz,"; done)
  python benchmarks/budget_compare.py --merge="${parts%,}" --base=deep_hvae_cpu_1h \
    --out="$RUNS/patch_vs_cpu_1h.json" > "$RUNS/eval_patch_vs_cpu_1h.out" 2>&1
  echo "$(date +%T) all done" >> "$LOG"
  exit 0
fi
# ONLY=cpu_patch_2h: what a session's checkout keeps is what is committed (runs/ is not),
# so the 2-hour :cpu_patch run's evaluation is kept in the repository, chunk by chunk, and
# goes on in later sessions from its exported parameters (no workdir needed).
RES=${RES:-benchmarks/results/cpu_patch_2h}
PATCH_NPZ=$RES/deep_hvae_patch.npz
PATCH_RUN=deep_hvae_patch=$C/fashion_mnist_deep_hvae.py:cpu_patch@$PATCH_NPZ
MLP_RUN=mlp=$C/default.py@"$RUNS/mlp"
patch_export() {  # the deep run's evaluation parameters (its EMA) -> $PATCH_NPZ
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
patch_join() {  # the images evaluated so far, deep paired with the MLP -> $RES/full.json
  # (all 10 000 once every chunk exists), per class too
  local parts=("$RES/elbo.npz") start
  for ((start = 0; start < 10000; start += 500)); do
    parts+=("$RES/mlp_$start.npz")
    [ -f "$RES/deep_$start.npz" ] && parts+=("$RES/deep_$start.npz")
  done
  python benchmarks/budget_compare.py --merge="$(IFS=,; echo "${parts[*]}")" \
    --by_class=fashion_mnist --out="$RES/full.json" > "$RUNS/eval_patch_2h.out" 2>&1
  echo "$(date +%T) patch_2h joined: rc=$? ($RES/full.json)" >> "$LOG"
}
phase() { [[ " ${PHASES:-train export baseline chunks join} " == *" $1 "* ]]; }
if [ "${ONLY:-}" = cpu_patch_2h ]; then
  # :cpu_patch's planned run (13 epochs; checkpoints every 500 steps, so the same command
  # resumes it) on core 0 beside the MLP VAE for BUDGET (7200) on core 1; then the deep
  # model's parameters exported, the baseline figures on core 1 and the deep model's
  # log p(x) chunks on both cores (hours: ONLY=cpu_patch_2h_eval goes on with them in a
  # later session), joined into $RES/full.json. PHASES="export baseline" runs only those
  # phases (of: train export baseline chunks join). Commit $RES: a later session needs
  # nothing else.
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
fi
if [ "${ONLY:-}" = cpu_patch_2h_eval ]; then  # the rest of the deep model's chunks, from
  # its parameter file, then the join (END=5000: images 0-4999 only; CORES="1": core 1)
  patch_chunks
  patch_join
  exit 0
fi
if [ "${ONLY:-}" = latent8bit ]; then
  run 0 latent_8bit fashion_mnist_vdm.py:latent8bit & run 1 conv_8bit fmnist_8bit_conv.py & wait
  compare 0 latent8bit --run=conv_vae=$C/fmnist_8bit_conv.py@"$RUNS/conv_8bit" \
    --run=latent_vdm=$C/fashion_mnist_vdm.py:latent8bit@"$RUNS/latent_8bit"
  echo "$(date +%T) all done" >> "$LOG"
  exit 0
fi
if [ "${ONLY:-}" = cpu ]; then
  # The CPU-sized deep HVAE (fashion_mnist_deep_hvae.py:cpu) against the MLP VAE alone, side by
  # side, then its binarized comparison (log p(x) on the first 100 test images) on core 0 and
  # the MLP's log p(x) on the full test set on core 1. About 35 minutes at BUDGET=900.
  run 0 deep_cpu_bin fashion_mnist_deep_hvae.py:cpu & run 1 mlp_bin default.py & wait
  compare 0 binary_cpu --run=mlp=$C/default.py@"$RUNS/mlp_bin" \
    --run=deep_hvae_cpu=$C/fashion_mnist_deep_hvae.py:cpu@"$RUNS/deep_cpu_bin" &
  compare 1 mlp_full --run=mlp=$C/default.py@"$RUNS/mlp_bin" --num_test=0 & wait
  echo "$(date +%T) all done" >> "$LOG"
  exit 0
fi
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
