#!/usr/bin/env bash
# The benchmarks and the accelerator-sensitive tests on whatever accelerator JAX finds.
# Each part has its own time limit, so one slow or failing part does not hide the others.
#   bash benchmarks/accelerator.sh            # from the repository root
# Needs the package's dependencies and Fashion-MNIST under /usr/share/datasets/fashion-mnist
# (train_throughput.py); eval_throughput.py needs no data. Figures: benchmarks/README.md.
set -u
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=3 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
part() { echo; echo "### $*"; timeout "${LIMIT:-240}" "$@" || echo "### exit $? from: $*"; }

$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())"
# the maths on this backend: bit-identical random streams, closed forms, known values
# (compile-bound: these took over 150 s on an H200)
LIMIT=400 part $py -m pytest -q -p no:cacheprovider tests/test_rng.py tests/test_losses.py \
  tests/test_distributions.py tests/test_losses_iwae.py tests/test_hvae.py
# default MLP at batch 128: fusion overhead from 10 to 1000 steps per dispatch, then the conv VAE
LIMIT=110 part $py benchmarks/train_throughput.py --models=mlp --steps=2000 --repeats=5 \
  --steps_per_call=10,100,1000
LIMIT=110 part $py benchmarks/train_throughput.py --models=conv --steps=1000 --repeats=5 \
  --steps_per_call=100,1000
# a batch that fills the chip better
LIMIT=70 part $py benchmarks/train_throughput.py --models=mlp --batch_size=1024 --steps=1000 \
  --repeats=5 --steps_per_call=100
# importance-sampled log p(x), k = 5000 on 10,000 images (the paper's setting)
LIMIT=120 part $py benchmarks/eval_throughput.py --num_images=10000 --k=5000
