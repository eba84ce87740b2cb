"""Throughput of the importance-sampled log p(x) evaluation against the matmul limit.

    python -m benchmarks.eval_throughput                 # k = 5000, 10,000 images
    python -m benchmarks.eval_throughput --num_images=500 --k=500   # quick

The classic MLP VAE (784-500-20 / 20-500-784, the default config) spends almost all of a
k-sample evaluation in the decoder: per sample a [20]x[20, 500] and a [500]x[500, 784]
product, 2·(20·500 + 500·784) ≈ 0.80 MFLOP, so k = 5000 on 10,000 images is ≈ 4.0e13 FLOPs.
This script measures, in the same run, the float32 throughput of exactly those two
matrix products at the evaluation's shapes ([chunk·batch, 20]x[20, 500] and
[chunk·batch, 500]x[500, 784], nothing else, as many times as the evaluation does them,
before and after it), and reports the evaluation's time against
the time those FLOPs alone would take at that throughput. Parameters are a random
initialisation and the images synthetic binary arrays: the cost does not depend on either.
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import evaluate, models, parallel, precision


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num_images", type=int, default=10_000)
    ap.add_argument("--k", type=int, default=5000)
    ap.add_argument("--chunk", type=int, default=100)
    ap.add_argument("--batch_size", type=int, default=1000)
    ap.add_argument("--latent_dim", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=500)
    ap.add_argument("--precision", default=precision.EVAL_PRECISION,
                    help="matmul precision of the evaluation and of its limit (GPU: 'default' "
                         "allows TF32, 'highest' is float32)")
    args = ap.parse_args()

    d, h, p = args.latent_dim, args.hidden, 28 * 28
    rows = args.chunk * args.batch_size // jax.device_count()
    print(f"devices: {jax.device_count()} x {jax.devices()[0].platform}; "
          f"k={args.k} images={args.num_images} chunk={args.chunk} batch={args.batch_size} "
          f"(decoder GEMM rows per step per device: {rows}); matmul precision "
          f"{args.precision!r}")

    # 1. The matmul limit: the decoder's two products at the evaluation's shapes, alone,
    # run as many times as the evaluation runs them (one lax.scan per batch, like the
    # evaluation), so a shared machine's load hits both alike. Timed before and after.
    key = jax.random.key(0)
    z = jax.random.normal(key, (rows, d))
    w1 = jax.random.normal(key, (d, h)) * 0.1
    w2 = jax.random.normal(key, (h, p)) * 0.1
    num_chunks = -(-args.k // args.chunk)
    num_batches = -(-args.num_images // args.batch_size)

    @jax.jit
    @functools.partial(precision.at_precision, precision=args.precision)
    def gemms(z, w1, w2):
        def body(c, _):
            y = jnp.dot(jnp.dot(z + c, w1), w2)
            return y[0, 0] * 1e-30, None   # a carried dependency keeps every product live
        return jax.lax.scan(body, jnp.float32(0), None, length=num_chunks)[0]

    def matmul_seconds() -> float:
        jax.block_until_ready(gemms(z, w1, w2))
        t0 = time.perf_counter()
        for _ in range(num_batches):
            jax.block_until_ready(gemms(z, w1, w2))
        return time.perf_counter() - t0

    flops_per_sample = 2.0 * (d * h + h * p)
    t_before = matmul_seconds()
    # 2. The evaluation itself.
    model = models.get("mlp", image_shape=(28, 28, 1), latent_dim=d, hidden=(h,))
    params = model.init(key, jnp.zeros((1, 28, 28, 1)), key)
    rng = np.random.default_rng(0)
    images = (rng.random((args.num_images, 28, 28, 1)) < 0.3).astype(np.float32)  # synthetic
    mesh = parallel.data_mesh()
    fn = evaluate.make_log_likelihood_fn(model, binarization=None, num_samples=args.k,
                                         chunk=args.chunk, precision=args.precision)
    warm = images[:args.batch_size]
    evaluate.log_likelihood(params, warm, key, model=model, batch_size=args.batch_size,
                            mesh=mesh, fn=fn)  # compile
    t0 = time.perf_counter()
    out = evaluate.log_likelihood(params, images, key, model=model,
                                  batch_size=args.batch_size, mesh=mesh, fn=fn)
    t_eval = time.perf_counter() - t0

    t_after = matmul_seconds()
    t_mm = 0.5 * (t_before + t_after)
    mm_flops = num_batches * num_chunks * rows * jax.device_count() * flops_per_sample
    matmul_gflops = mm_flops / t_mm / 1e9
    print(f"matmul limit: {matmul_gflops:.1f} GFLOP/s  (jnp.dot [{rows},{d}]x[{d},{h}] then "
          f"[{rows},{h}]x[{h},{p}], {num_batches}x{num_chunks} times; {t_before:.2f} s before "
          f"and {t_after:.2f} s after the evaluation)")

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
