#!/usr/bin/env bash
# The benchmarks and the accelerator-sensitive tests on whatever accelerator JAX finds.
# Each part has its own time limit, so one slow or failing part does not hide the others.
#   bash benchmarks/accelerator.sh            # from the repository root: every part
#   PARTS=models bash benchmarks/accelerator.sh   # only the parts named (comma list) of:
#     tests       the maths tests (≤ 400 s)
#     throughput  train_throughput.py, MLP and conv VAE (≤ 290 s)
#     loglik      eval_throughput.py, log p(x) with k = 5000 (≤ 120 s)
#     models      gpu_models.py (≤ 565 s): deep HVAE and VDM steps/s and
#                 MFU on 32x32x3 (random data), then their 8-bit Fashion-MNIST bits/dim
#                 after 1000 steps each, from the IDX files in $FMNIST_DIR
# Needs the package's dependencies and Fashion-MNIST under /usr/share/datasets/fashion-mnist
# (train_throughput.py) or FMNIST_DIR (gpu_models.py); eval_throughput.py and gpu_models.py's
# speed part need no data. Figures: benchmarks/README.md.
set -u
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
part() { echo; echo "### $*"; timeout "${LIMIT:-240}" "$@" || echo "### exit $? from: $*"; }
parts=${PARTS:-all}
want() { [ "$parts" = all ] || [[ ",$parts," == *",$1,"* ]]; }
for p in ${parts//,/ }; do
  case $p in all|tests|throughput|loglik|models) ;;
    *) echo "PARTS=$parts: unknown part '$p'; valid: tests, throughput, loglik, models, all" >&2
       exit 2 ;;
  esac
done

$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"
if want tests; then
# the maths on this backend: bit-identical random streams, closed forms, known values
# (compile-bound: these took over 150 s on an H200)
LIMIT=400 part $py -m pytest -q -p no:cacheprovider tests/test_rng.py tests/test_losses.py \
  tests/test_distributions.py tests/test_losses_iwae.py tests/test_hvae.py
fi
if want throughput; then
# default MLP at batch 128: fusion overhead from 10 to 1000 steps per dispatch, then the conv VAE
LIMIT=110 part $py -m benchmarks.train_throughput --models=mlp --steps=2000 --repeats=5 \
  --steps_per_call=10,100,1000
LIMIT=110 part $py -m benchmarks.train_throughput --models=conv --steps=1000 --repeats=5 \
  --steps_per_call=100,1000
# a batch that fills the chip better
LIMIT=70 part $py -m benchmarks.train_throughput --models=mlp --batch_size=1024 --steps=1000 \
  --repeats=5 --steps_per_call=100
fi
if want loglik; then
# importance-sampled log p(x), k = 5000 on 10,000 images (the paper's setting)
LIMIT=120 part $py -m benchmarks.eval_throughput --num_images=10000 --k=5000
fi
if want models; then
# the deep HVAE and the VDM: steps/s and MFU at batch 128 on 32x32x3, float32 ("highest" products)
# and bf16, each model under its own limit (compilation dominates), then the fixed short
# budget (1000 steps each, the launcher capped so that --mode=eval still fits the limit)
LIMIT=200 part $py -m benchmarks.gpu_models --part=speed --models=deep_hvae
LIMIT=110 part $py -m benchmarks.gpu_models --part=speed --models=vdm
LIMIT=145 part $py -m benchmarks.gpu_models --part=budget --models=deep_hvae \
  --budget_steps=1000 --budget_seconds=95
LIMIT=110 part $py -m benchmarks.gpu_models --part=budget --models=vdm \
  --budget_steps=1000 --budget_seconds=70
fi
