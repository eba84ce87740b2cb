"""How much the matrix-product precision moves the reported nats, on this backend.

Trains the default MLP VAE for ``--steps`` steps on Fashion-MNIST, then evaluates the test
ELBO and the importance-sampled log p(x) of the first ``--num_images`` test images with
``--k`` samples under each matmul precision (``precision.at_precision``). On the CPU every
setting computes float32 products; on a GPU "default" lets XLA use TF32 (10-bit mantissas).

  python -m scripts.precision_check --out=/tmp/prec          # train here, save params
  python -m scripts.precision_check --params=/tmp/prec/params.npz   # same params, here

``--out`` writes params.npz (plain arrays, no pickle) and results.json, so parameters
trained on one backend can be evaluated on another with the same keys: the two runs draw
the same binarizations and samples (Threefry bits are backend independent), so their
figures differ only by arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from vae_jax import config as config_lib, data, evaluate, parallel, train
from vae_jax.run import build


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4680, help="training steps (10 epochs)")
    ap.add_argument("--num_images", type=int, default=2000)
    ap.add_argument("--k", type=int, default=1000)
    ap.add_argument("--params", default="", help="params.npz to evaluate instead of training")
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    config = config_lib.defaults()
    ds = data.load(config.data.name)
    mesh = parallel.data_mesh()
    model = build.build_model(config, ds.image_shape)
    keys = build.root_keys(config.seed)
    spe = len(ds.train_images) // config.train.batch_size
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind} ({jax.default_backend()})")
    if args.params:
        flat = dict(np.load(args.params))
        params = traverse_util.unflatten_dict({tuple(k.split("/")): jnp.asarray(v)
                                               for k, v in flat.items()})
    else:
        trainer = build.build_trainer(config, model, mesh, spe)
        state = train.create_train_state(keys["init"], model, trainer.optimizer,
                                         ds.image_shape)
        state = jax.device_put(state, trainer.replicated)
        images = parallel.put_global(ds.train_images, mesh, trainer.replicated)
        t0, step, perm = time.perf_counter(), 0, None
        while step < args.steps:  # the library loop's cut, without its checkpoints and logs
            if step % spe == 0 or perm is None:
                perm = trainer.permutation(keys["order"], step // spe, len(ds.train_images))
            stop = train.next_stop(step, args.steps, spe, config.train.steps_per_call, spe, spe)
            state, _ = trainer.call(stop - step)(state, images, perm, keys["train"])
            step = stop
        jax.block_until_ready(state)
        print(f"trained {args.steps} steps in {time.perf_counter() - t0:.1f} s "
              f"(train matmul precision: JAX's default)")
        params = state.params
    test = ds.test_images[:args.num_images]
    results = {}
    for precision in ("highest", "default"):
        elbo_fn = evaluate.make_elbo_fn(model, binarization="dynamic", precision=precision)
        elbo = evaluate.per_example(elbo_fn, params, test, keys["eval"], batch_size=1000,
                                    mesh=mesh)["elbo"]
        t0 = time.perf_counter()
        ll = evaluate.log_likelihood(params, test, keys["eval"], model=model,
                                     num_samples=args.k, batch_size=1000,
                                     binarization="dynamic", mesh=mesh, precision=precision)
        secs = time.perf_counter() - t0
        results[precision] = {"elbo": float(np.mean(elbo)), "log_px": ll["mean"],
                              "log_px_stderr": ll["stderr"], "seconds": secs}
        print(f"  matmul precision {precision:8s}: test ELBO {np.mean(elbo):.4f}, "
              f"log p(x) (k={args.k}, {len(test)} images) {ll['mean']:.4f} "
              f"± {ll['stderr']:.2f} nats  [{secs:.2f} s]")
    d_elbo = results["default"]["elbo"] - results["highest"]["elbo"]
    d_ll = results["default"]["log_px"] - results["highest"]["log_px"]
    print(f"  default − highest: ELBO {d_elbo:+.5f} nats, log p(x) {d_ll:+.5f} nats")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
        np.savez(os.path.join(args.out, "params.npz"), **flat)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump({"backend": jax.default_backend(), "jax": jax.__version__,
                       "device": jax.devices()[0].device_kind, "k": args.k,
                       "num_images": len(test), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
