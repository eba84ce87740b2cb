"""Test log p(x) (IWAE-k, k = 5000 by default), ELBO with per-layer KLs and active units per
layer for a trained checkpoint; prints one JSON line. Used for docs/results_hvae.md.

    python benchmarks/hvae_loglik.py --config=experiments/configs/fashion_mnist_hvae.py:2layer \
        --workdir=runs/fm_2layer [--num_samples=5000] [--num_test=10000]

log p(x) is the importance-sampled estimate log (1/k) Σ_i p(x, z_i)/q(z_i|x) over all latent
layers, computed in chunks of ``--chunk`` samples with a running logsumexp (a chunked IWAE-k;
it does not depend on the chunk size beyond float rounding). The test images are binarized
once with the evaluation key (dynamic binarization = one fixed Bernoulli draw).
"""

import functools
import json
import math
import os
import sys
import time

# this checkout's package and configs, whatever `pip install -e` points at
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from vae_jax import data, evaluate, losses  # noqa: E402
from vae_jax.evaluate import active_units
from vae_jax.run import experiment
from vae_jax.run import build

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.")
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
flags.DEFINE_integer("num_samples", 5000, "k for the importance-sampled log p(x).")
flags.DEFINE_integer("chunk", 500, "Samples per chunk (memory: chunk x batch x pixels).")
flags.DEFINE_integer("batch_size", 100, "Test images per jitted call.")
flags.DEFINE_integer("num_test", 0, "Use the first N test images (0 = all).")
flags.mark_flags_as_required(["config", "workdir"])


def _log_px_batch(params, x_uint8, key, *, model, binarization, num_samples, chunk):
    """[b] importance-sampled log p(x): logsumexp over num_samples/chunk chunks − log k."""
    k_bin, k_z = jax.random.split(key)
    x = data.preprocess(x_uint8, k_bin, binarization=binarization)

    def body(acc, i):
        log_w = losses.log_importance_weights(params, x, jax.random.fold_in(k_z, i),
                                              model=model, num_samples=chunk)
        return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=0)), None

    init = jnp.full(x.shape[:1], -jnp.inf)
    acc, _ = jax.lax.scan(body, init, jnp.arange(num_samples // chunk))
    return {"log_px": acc - math.log(num_samples)}


def main(argv):
    del argv
    config = FLAGS.config
    if FLAGS.num_samples % FLAGS.chunk:
        raise ValueError("--num_samples must be a multiple of --chunk.")
    s = experiment.setup(config, FLAGS.workdir)
    config, ds, model = s.config, s.ds, s.model
    state = experiment.restore_state(config, FLAGS.workdir, model, ds.image_shape)
    params = state.ema_params if config.eval.use_ema else state.params
    images = ds.test_images[:FLAGS.num_test] if FLAGS.num_test else ds.test_images
    key = build.root_keys(config.seed)["eval"]
    binarization = config.data.binarization

    t0 = time.perf_counter()
    elbo_fn = evaluate.make_elbo_fn(model, binarization=binarization, num_samples=1)
    terms = evaluate.summarize(evaluate.per_example(elbo_fn, params, images, key,
                                                    batch_size=FLAGS.batch_size), "test_")
    fn = jax.jit(functools.partial(_log_px_batch, model=model, binarization=binarization,
                                   num_samples=FLAGS.num_samples, chunk=FLAGS.chunk))
    log_px = evaluate.per_example(fn, params, images, key, batch_size=FLAGS.batch_size)["log_px"]
    var = active_units.posterior_mean_variance(params, images, model=model, key=key,
                                               binarization=binarization,
                                               batch_size=min(1000, len(images)))
    result = {
        "config_model": config.model.to_dict(), "loss": config.loss.name,
        "step": int(state.step), "num_test_images": len(images), "k": FLAGS.num_samples,
        "test_log_px": float(np.mean(log_px)),
        "test_log_px_stderr": float(np.std(log_px) / math.sqrt(len(log_px))),
        **terms,
        "active_units": {layer: int(np.sum(v > active_units.THRESHOLD))
                         for layer, v in var.items()},
        "latent_units": {layer: int(v.size) for layer, v in var.items()},
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(result, default=str))


if __name__ == "__main__":
    app.run(main)
