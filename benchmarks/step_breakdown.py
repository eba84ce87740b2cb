"""Where the default train step's time goes: variants of the step, timed in one run.

Each variant is the default MLP step (batch 128) with one piece removed or swapped, fused
200 steps per dispatch; the variants are timed round-robin (one call each per round) so a
shared machine's load hits them alike. Prints the median and best steps/s of each and its
ratio to the full step, then the matmul bound measured in the same run.

  python -m benchmarks.step_breakdown                 # 9 rounds
  python -m benchmarks.step_breakdown --profile=/tmp/trace   # + a jax.profiler trace

Variants:
  full               the library's train step (dynamic binarization, Adam, EMA, metrics)
  rolled_threefry    binarization drawn with jax.random.bernoulli (JAX's CPU lowering runs
                     Threefry as a 5-iteration loop; vae_jax.rng draws the same bits unrolled)
  optax_grad_norm    the grad_norm metric as optax.global_norm (XLA merges its squares with
                     Adam's g², writes them out and reduces them in a separate pass)
  no_grad_norm       without the grad_norm metric (a reduction over all 0.82 M gradients)
  no_ema             without the EMA of the parameters
  static_binarize    no random draw at all (fixed threshold at 0.5)
  sgd_static         plain SGD, no EMA, no grad norm, static binarization: the gradient alone
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax

from vae_jax import config as config_lib, data, losses, parallel, train
from vae_jax.run import build

STEPS = 200


def make_variant(name: str, trainer: train.Trainer, loss_fn):
    if name == "full":
        return trainer.step_fn
    tx = trainer.optimizer

    def step(state, batch, train_key):
        key = jax.random.fold_in(train_key, state.step)
        k_data, k_z = jax.random.split(key)
        if name == "rolled_threefry":
            x = jax.random.bernoulli(k_data, batch.astype(jnp.float32) / 255.0)
            x = x.astype(jnp.float32)
        elif name in ("static_binarize", "sgd_static"):
            x = data.preprocess(batch, None, binarization="static")
        else:
            x = data.preprocess(batch, k_data, binarization="dynamic")
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state.params, x, k_z, beta=1.0)
        if name == "sgd_static":
            params = jax.tree.map(lambda p, g: p - 1e-3 * g, state.params, grads)
            return state.replace(step=state.step + 1, params=params), metrics
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params if name == "no_ema" else jax.tree.map(
            lambda e, p: 0.999 * e + 0.001 * p, state.ema_params, params)
        if name == "optax_grad_norm":
            metrics = dict(metrics, grad_norm=optax.global_norm(grads))
        elif name != "no_grad_norm":
            metrics = dict(metrics, grad_norm=train.global_norm(grads))
        return train.TrainState(state.step + 1, params, opt_state, ema), metrics
    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--variants", default="full,rolled_threefry,optax_grad_norm,no_grad_norm,"
                    "no_ema,static_binarize,sgd_static")
    ap.add_argument("--profile", default="", help="folder for a jax.profiler trace of 'full'")
    args = ap.parse_args()

    from benchmarks import train_throughput as tt  # the matmul bound, measured the same way

    config = config_lib.defaults()
    ds = data.load(config.data.name)
    mesh = parallel.data_mesh()
    model = build.build_model(config, ds.image_shape)
    spe = len(ds.train_images) // config.train.batch_size
    trainer = build.build_trainer(config, model, mesh, spe)
    keys = build.root_keys(config.seed)
    state0 = train.create_train_state(keys["init"], model, trainer.optimizer, ds.image_shape)
    images = jax.device_put(ds.train_images)
    perm = trainer.permutation(keys["order"], 0, len(ds.train_images))
    loss_fn = functools.partial(losses.elbo, model=model, num_samples=1)
    print(f"jax {jax.__version__} on {jax.devices()[0].device_kind}; {os.cpu_count()} cores; "
          f"{STEPS} steps per call, {args.rounds} rounds")

    def compiled(step_fn):
        def body(s, _):
            batch = data.gather_batch(images, perm, s.step % spe, config.train.batch_size)
            return step_fn(s, batch, keys["train"])
        fn = jax.jit(lambda s: jax.lax.scan(body, s, None, length=STEPS), donate_argnums=0)
        s = jax.tree.map(jnp.copy, state0)
        s, _ = fn(s)
        jax.block_until_ready(s)
        return fn, s

    names = args.variants.split(",")
    runs = {n: compiled(make_variant(n, trainer, loss_fn)) for n in names}
    rates = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            fn, s = runs[n]
            t0 = time.perf_counter()
            s, m = fn(s)
            jax.block_until_ready(m)
            rates[n].append(STEPS / (time.perf_counter() - t0))
            runs[n] = (fn, s)
    flops = tt.step_flops(trainer.step_fn, state0, jnp.asarray(ds.train_images[:128]),
                          keys["train"])
    shapes = tt.dense_shapes(state0.params, config.train.batch_size, ds.image_shape)
    mm = [(s, tt.matmul_gflops(*s)) for s in shapes]
    t_mm = sum(3 * 2 * m * k * n / (g * 1e9) for (m, k, n), g in mm)
    bound = 1.0 / (t_mm * flops / sum(3 * 2 * m * k * n for (m, k, n), _ in mm))
    full = statistics.median(rates[names[0]])
    print(f"{'variant':18s} {'median':>8s} {'best':>8s} {'vs ' + names[0]:>9s} {'of bound':>9s}")
    for n in names:
        med = statistics.median(rates[n])
        print(f"{n:18s} {med:8.1f} {max(rates[n]):8.1f} {med / full:8.2f}x "
              f"{med / bound:8.0%}")
    print(f"matmul bound (same run): {bound:.1f} steps/s ({flops / 1e6:.1f} MFLOP per step)")
    if args.profile:
        fn, s = runs[names[0]]
        with jax.profiler.trace(args.profile, create_perfetto_trace=True):
            s, m = fn(s)
            jax.block_until_ready(m)
        print(f"trace of {names[0]} ({STEPS} steps) in {args.profile}")


if __name__ == "__main__":
    main()
