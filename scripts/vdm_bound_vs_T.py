"""The L_T-vs-T curve of one trained diffusion model (``vdm`` or ``latent_vdm``): the test
negative ELBO with the T-step diffusion loss L_T for each --timesteps (0 = continuous time
L_∞), same schedule, ε-network, decoder and prior (``vae_jax.models.vdm.bounds``).

    python -m scripts.vdm_bound_vs_T --config=experiments/configs/fashion_mnist_vdm.py \
        --workdir=runs/vdm [--timesteps=10,100,1000,0] [--num_test=1000] [--num_draws=1]

Prints one row per T (nats, bits/dim, each with its standard error over the test images,
and the paired difference to the last T listed, whose standard error is much smaller: every
T sees the same draws of t and ε), then one JSON line. The test images are binarized once
with the evaluation key, as in ``--mode=eval``.
"""

from __future__ import annotations

import functools
import json
import math
import time

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from vae_jax import data, evaluate
from vae_jax.models.vdm import bounds as vdm_bounds
from vae_jax.run import build, experiment

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file.")
flags.DEFINE_string("workdir", None, "Training workdir holding checkpoints/.")
flags.DEFINE_list("timesteps", ["10", "100", "1000", "0"], "T values; 0 = continuous time.")
flags.DEFINE_integer("num_test", 1000, "Use the first N test images (0 = all).")
flags.DEFINE_integer("num_draws", 1, "Draws of (t, ε) per image and T.")
flags.DEFINE_integer("batch_size", 100, "Test images per jitted call.")
flags.mark_flags_as_required(["config", "workdir"])


def _batch(params, x_uint8, key, *, model, binarization, timesteps, num_draws):
    k_bin, k_z = jax.random.split(key)
    x = data.preprocess(x_uint8, k_bin, binarization=binarization)
    out = vdm_bounds.bounds_vs_timesteps(model, params, x, k_z, timesteps=timesteps,
                                         num_draws=num_draws)
    return {f"{T}/{name}": v for T, row in out.items() for name, v in row.items()}


def _mean_se(v: np.ndarray) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std() / math.sqrt(v.size))


def main(argv):
    del argv
    steps = tuple(int(t) for t in FLAGS.timesteps)
    s = experiment.setup(FLAGS.config, FLAGS.workdir, check_workdir=False)
    config, ds, model = s.config, s.ds, s.model
    if config.model.name not in ("vdm", "latent_vdm"):
        raise ValueError(f"--config is model {config.model.name!r}; this needs a diffusion "
                         "model (vdm or latent_vdm).")
    state = experiment.restore_state(config, FLAGS.workdir, model, ds.image_shape)
    params = state.ema_params if config.eval.use_ema else state.params
    images = ds.test_images[:FLAGS.num_test] if FLAGS.num_test else ds.test_images
    key = build.root_keys(config.seed)["eval"]
    t0 = time.perf_counter()
    fn = jax.jit(functools.partial(_batch, model=model, binarization=config.data.binarization,
                                   timesteps=steps, num_draws=FLAGS.num_draws))
    per = evaluate.per_example(fn, params, images, key,
                               batch_size=min(FLAGS.batch_size, len(images)), mesh=s.mesh)
    seconds = time.perf_counter() - t0
    ref = steps[-1]
    rows = []
    print(f"{config.model.name} step {int(state.step)}, {len(images)} test images, "
          f"{FLAGS.num_draws} draw(s) of (t, eps) each; trained with "
          f"timesteps={model.diffusion.timesteps}")
    print(f"{'T':>6} {'-ELBO nats':>18} {'bits/dim':>16} {'diffusion nats':>16} "
          f"{'minus T=' + str(ref or 'inf'):>20}")
    for T in steps:
        total, total_se = _mean_se(per[f"{T}/total"])
        bpd, bpd_se = _mean_se(per[f"{T}/bpd"])
        diff, _ = _mean_se(per[f"{T}/diffusion"])
        gap, gap_se = _mean_se(per[f"{T}/total"] - per[f"{ref}/total"])
        rows.append({"T": T, "neg_elbo": total, "neg_elbo_stderr": total_se, "bpd": bpd,
                     "bpd_stderr": bpd_se, "diffusion": diff, "minus_ref": gap,
                     "minus_ref_stderr": gap_se})
        print(f"{T or 'inf':>6} {total:>10.3f} ± {total_se:<5.3f} {bpd:>8.4f} ± {bpd_se:<5.4f}"
              f" {diff:>16.3f} {gap:>11.3f} ± {gap_se:<6.3f}")
    print(json.dumps({"model": config.model.name, "step": int(state.step),
                      "num_test_images": len(images), "num_draws": FLAGS.num_draws,
                      "trained_timesteps": model.diffusion.timesteps, "rows": rows,
                      "seconds": round(seconds, 1)}))


if __name__ == "__main__":
    app.run(main)
