"""Convolution layers of the conv VAE and the deep HVAE: XLA's own vs vae_jax.models.layers,
value + gradients.

For each layer shape, times one jitted call computing the convolution and the gradients
with respect to input and kernel (what a train step needs), round-robin over the
implementations, and prints medians. On the CPU, ``layers`` takes its matrix-product paths
(im2col for strided, sub-pixel for transposed convolutions, a dot for unpadded 1x1s) and
stride-1 convolutions with canonical gradients. ``--in_scan`` runs each call inside a
``lax.scan`` (a while loop, as the train step does), where XLA:CPU leaves its own
stride-1 gradients in its slow generic loop.

  python -m benchmarks.conv_layers [--in_scan]   # 7 rounds
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vae_jax.models import layers

NHWC = layers.NHWC


def _pad_then_conv(x, k, strides):
    """A transposed convolution as explicit zero-interleaving (lax.pad) + stride-1 conv."""
    pads = [layers.transpose_padding(kk, s, "SAME") for kk, s in zip(k.shape[:2], strides)]
    xd = lax.pad(x, jnp.zeros((), x.dtype),
                 [(0, 0, 0), (*pads[0], strides[0] - 1), (*pads[1], strides[1] - 1), (0, 0, 0)])
    return lax.conv_general_dilated(xd, k, (1, 1), "VALID", dimension_numbers=NHWC)


def _stride_one(label: str) -> dict:
    """XLA's stride-1 SAME convolution against the library's (``label`` names its path)."""
    return {"xla": lambda x, k: lax.conv_general_dilated(x, k, (1, 1), "SAME",
                                                        dimension_numbers=NHWC),
            label: lambda x, k: layers.conv_general_dilated(x, k, (1, 1), "SAME",
                                                            dimension_numbers=NHWC)}


CASES = {  # name: (input shape, kernel shape, {implementation: fn(x, k)})
    "encoder conv_1, stride 2: [128,14,14,32] -> [128,7,7,64]": (
        (128, 14, 14, 32), (3, 3, 32, 64), {
            "xla": lambda x, k: lax.conv_general_dilated(x, k, (2, 2), "SAME",
                                                         dimension_numbers=NHWC),
            "layers (im2col)": lambda x, k: layers.conv_general_dilated(
                x, k, (2, 2), "SAME", dimension_numbers=NHWC)}),
    "decoder deconv_0, transposed: [128,7,7,64] -> [128,14,14,64]": (
        (128, 7, 7, 64), (3, 3, 64, 64), {
            "xla": lambda x, k: lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=NHWC),
            "pad + xla stride 1": lambda x, k: _pad_then_conv(x, k, (2, 2)),
            "layers (sub-pixel)": lambda x, k: layers.conv_transpose(x, k, (2, 2), "SAME")}),
    "decoder deconv_1, transposed: [128,14,14,64] -> [128,28,28,32]": (
        (128, 14, 14, 64), (3, 3, 64, 32), {
            "xla": lambda x, k: lax.conv_transpose(x, k, (2, 2), "SAME", dimension_numbers=NHWC),
            "pad + xla stride 1": lambda x, k: _pad_then_conv(x, k, (2, 2)),
            "layers (sub-pixel)": lambda x, k: layers.conv_transpose(x, k, (2, 2), "SAME")}),
    "decoder out, stride 1: [128,28,28,32] -> [128,28,28,1]": (
        (128, 28, 28, 32), (3, 3, 32, 1), _stride_one("layers (canonical vjp)")),
    "deep HVAE c2, 3x3 stride 1: [32,28,28,16] -> [32,28,28,16]": (
        (32, 28, 28, 16), (3, 3, 16, 16), _stride_one("layers (canonical vjp)")),
    "deep HVAE c1, 1x1: [32,28,28,64] -> [32,28,28,16]": (
        (32, 28, 28, 64), (1, 1, 64, 16), _stride_one("layers (dot)")),
}


def value_and_grads(conv, in_scan=False):
    """jit: (conv(x, k), its vjp of a fixed cotangent), as a train step needs them; with
    ``in_scan``, computed inside a one-step ``lax.scan``."""
    def f(x, k, r):
        y, vjp = jax.vjp(conv, x, k)
        return y, vjp(r)
    if not in_scan:
        return jax.jit(f)

    def body(carry, _):   # the gradients carried: nothing to hoist out of the loop
        y, grads = f(*carry)
        return (*grads, carry[2]), y

    @jax.jit
    def in_loop(x, k, r):
        (dx, dk, _), ys = lax.scan(body, (x, k, r), None, length=1)
        return ys[0], (dx, dk)
    return in_loop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--in_scan", action="store_true", help="each call inside a lax.scan")
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}; {os.cpu_count()} cores; "
          f"{args.rounds} rounds; value + input and kernel gradients per call"
          + ("; inside a lax.scan" if args.in_scan else ""))
    rng = np.random.default_rng(0)
    for case, (xs, ks, impls) in CASES.items():
        x = rng.standard_normal(xs, np.float32)
        k = rng.standard_normal(ks, np.float32) * 0.1
        fns, outs = {}, {}
        r = rng.standard_normal(jax.eval_shape(next(iter(impls.values())), x, k).shape,
                                np.float32)   # one cotangent for every implementation
        for name, conv in impls.items():
            fns[name] = (value_and_grads(conv, args.in_scan), r)
            outs[name] = jax.block_until_ready(fns[name][0](x, k, r))
        times = {name: [] for name in impls}
        for _ in range(args.rounds):
            for name, (f, r) in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(x, k, r))
                times[name].append(time.perf_counter() - t0)
        print(f"\n{case}")
        first = next(iter(impls))
        for name in impls:
            err = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) for a, b in
                      zip(jax.tree.leaves(outs[name]), jax.tree.leaves(outs[first])))
            med = statistics.median(times[name])
            print(f"  {name:22s} {med * 1e3:8.1f} ms  "
                  f"{statistics.median(times[first]) / med:5.2f}x {first}  "
                  f"(max rel. difference {err:.1e})")


if __name__ == "__main__":
    main()
