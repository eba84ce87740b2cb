"""Throughput of the importance-sampled log p(x) evaluation against the matmul limit.

    PYTHONPATH=. python benchmarks/eval_throughput.py                 # k = 5000, 10,000 images
    PYTHONPATH=. python benchmarks/eval_throughput.py --num_images=500 --k=500   # quick

The classic MLP VAE (784-500-20 / 20-500-784, the default config) spends almost all of a
k-sample evaluation in the decoder: per sample a [20]x[20, 500] and a [500]x[500, 784]
product, 2·(20·500 + 500·784) ≈ 0.80 MFLOP, so k = 5000 on 10,000 images is ≈ 4.0e13 FLOPs.
This script measures, in the same run, the float32 throughput of exactly those two
matrix products at the evaluation's shapes ([chunk·batch, 20]x[20, 500] and
[chunk·batch, 500]x[500, 784], nothing else), and reports the evaluation's time against
the time those FLOPs alone would take at that throughput. Parameters are a random
initialisation and the images synthetic binary arrays: the cost does not depend on either.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vae_jax import evaluate, models, parallel  # noqa: E402


def _time(fn, *args, reps: int) -> float:
    jax.block_until_ready(fn(*args))  # compile and warm up
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num_images", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--batch_size", type=int, default=1000)
    ap.add_argument("--latent_dim", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5, help="repetitions of the matmul timing")
    args = ap.parse_args()

    d, h, p = args.latent_dim, args.hidden, 28 * 28
    rows = args.chunk * args.batch_size // jax.device_count()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; "
          f"k={args.k} images={args.num_images} chunk={args.chunk} batch={args.batch_size} "
          f"(decoder GEMM rows per step per device: {rows})")

    # 1. The matmul limit: the decoder's two products at the evaluation's shapes, alone.
    key = jax.random.key(0)
    z = jax.random.normal(key, (rows, d))
    w1 = jax.random.normal(key, (d, h)) * 0.1
    w2 = jax.random.normal(key, (h, p)) * 0.1
    gemms = jax.jit(lambda z, w1, w2: jnp.dot(jnp.dot(z, w1), w2))
    t_mm = _time(gemms, z, w1, w2, reps=args.reps)
    flops_per_sample = 2.0 * (d * h + h * p)
    matmul_gflops = rows * flops_per_sample / t_mm / 1e9 * jax.device_count()
    print(f"matmul limit: {matmul_gflops:.1f} GFLOP/s  (jnp.dot [{rows},{d}]x[{d},{h}] then "
          f"[{rows},{h}]x[{h},{p}], best of {args.reps})")

    # 2. The evaluation itself.
    model = models.get("mlp", image_shape=(28, 28, 1), latent_dim=d, hidden=(h,))
    params = model.init(key, jnp.zeros((1, 28, 28, 1)), key)
    rng = np.random.default_rng(0)
    images = (rng.random((args.num_images, 28, 28, 1)) < 0.3).astype(np.float32)  # synthetic
    mesh = parallel.data_mesh()
    fn = evaluate.make_log_likelihood_fn(model, binarization=None, num_samples=args.k,
                                         chunk=args.chunk)
    warm = images[:args.batch_size]
    evaluate.log_likelihood(params, warm, key, model=model, batch_size=args.batch_size,
                            mesh=mesh, fn=fn)  # compile
    t0 = time.perf_counter()
    out = evaluate.log_likelihood(params, images, key, model=model,
                                  batch_size=args.batch_size, mesh=mesh, fn=fn)
    t_eval = time.perf_counter() - t0

    n_samples = args.num_images * args.k
    enc_flops = args.num_images * 2.0 * (p * h + h * 2 * d)
    total_flops = n_samples * flops_per_sample + enc_flops
    achieved = total_flops / t_eval / 1e9
    t_limit = total_flops / (matmul_gflops * 1e9)
    print(f"evaluation: {t_eval:.2f} s for {n_samples:.3g} samples = {n_samples / t_eval:.4g} "
          f"samples/s; {total_flops:.3g} FLOPs -> achieved {achieved:.1f} GFLOP/s")
    print(f"matmul-limited time {t_limit:.2f} s; evaluation / limit = {t_eval / t_limit:.3f}x "
          f"(fraction of the matmul limit reached: {achieved / matmul_gflops:.3f})")
    print(f"(mean log p(x) of the random model: {out['mean']:.2f} nats)")


if __name__ == "__main__":
    main()
