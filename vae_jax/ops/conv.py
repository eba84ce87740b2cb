"""Strided and transposed 2-D convolutions as matrix products, for XLA:CPU.

XLA:CPU runs the gradients of strided and of transposed (input-dilated) convolutions through
a slow generic loop (jax-ml/jax#23783, #31662; openxla/xla#34273; the conv VAE's figures are
in benchmarks/README.md). Where ``vae_jax.ops.active()``, ``conv_general_dilated``
computes these convolutions as matrix products, whose gradients are matrix products too:

- a strided convolution by im2col: the k_h·k_w strided windows of the padded input side by
  side [B, H', W', k_h·k_w·C] times the kernel as a [k_h·k_w·C, O] matrix;
- a transposed convolution (``lhs_dilation`` s) by its sub-pixel decomposition: output pixel
  s·q + r sees only the taps t with (r + t − lo) ≡ 0 (mod s), each at input pixel
  q + (r + t − lo)/s. One im2col product per residue (s_h·s_w of them, together exactly the
  taps' FLOPs, none spent on the zeros of the dilated input), interleaved.

Stride-1 convolutions keep XLA's forward convolution, which is fast; their gradients are
the problem inside a loop. XLA:CPU rewrites a convolution whose dimension labels are not
the canonical b01f_01io->b01f (the input and kernel gradients are two such) into the
canonical form plus transposes, so that its fast (Eigen) convolution runs, but not inside
the body of a ``while`` loop, i.e. not inside the ``lax.scan`` of the train step: there
both gradients run through the slow generic loop (20-40x slower; benchmarks/README.md).
``_stride1`` is the same convolution with a custom VJP whose two gradients are canonical
convolutions with explicit transposes, which XLA:CPU runs fast inside loops too. Being a
custom VJP it has no forward-mode derivative: ``jax.jvp`` through a stride-1 convolution
needs the switch off (``vae_jax.ops.set_enabled(False)``); reverse mode of any order
works.

Other layouts, kernel dilation and feature groups, a ``preferred_element_type``, negative
padding, and every non-CPU backend stay with ``lax.conv_general_dilated``. The values are
lax's up to float32 summation order; ``tests/test_layers.py`` checks values and gradients
against it.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from vae_jax import ops

NHWC = ("NHWC", "HWIO", "NHWC")


def _is_nhwc(lhs, rhs, dimension_numbers) -> bool:
    if lhs.ndim != 4 or rhs.ndim != 4 or dimension_numbers is None:  # None: lax's NCHW
        return False
    want = lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)
    return lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == want


def _products(patches: jax.Array, kernel: jax.Array, precision, preferred_element_type):
    """[B, H, W, K] @ [K, O] -> [B, H, W, O]."""
    return jnp.einsum("bhwk,ko->bhwo", patches, kernel, precision=precision,
                      preferred_element_type=preferred_element_type)


def _strided_im2col(x, kernel, strides, pads, precision, preferred_element_type):
    """Valid correlation of the padded x [B, H, W, C] with kernel [kh, kw, C, O], stride s."""
    kh, kw, c, o = kernel.shape
    (sh, sw), zero = strides, jnp.zeros((), x.dtype)
    xp = lax.pad(x, zero, [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
    out_h, out_w = (xp.shape[1] - kh) // sh + 1, (xp.shape[2] - kw) // sw + 1
    patches = jnp.concatenate(
        [xp[:, i:i + sh * (out_h - 1) + 1:sh, j:j + sw * (out_w - 1) + 1:sw, :]
         for i in range(kh) for j in range(kw)], axis=-1)   # (i, j, c): the kernel's order
    return _products(patches, kernel.reshape(kh * kw * c, o), precision, preferred_element_type)


def _canonical(x, kernel, pads, precision):
    """Stride-1 correlation of x [B, H, W, C] with kernel [kh, kw, C, O], the labels
    b01f_01io->b01f: [B, H + lo_h + hi_h - kh + 1, W + lo_w + hi_w - kw + 1, O]."""
    return lax.conv_general_dilated(x, kernel, (1, 1), pads, dimension_numbers=NHWC,
                                    precision=precision)


@functools.lru_cache(maxsize=None)
def _stride1(pads: tuple, precision) -> jax.custom_vjp:
    """``_canonical`` for fixed padding and precision, with both gradients canonical too."""
    @jax.custom_vjp
    def conv(x, kernel):
        return _canonical(x, kernel, pads, precision)

    def forward(x, kernel):
        return _canonical(x, kernel, pads, precision), (x, kernel)

    def backward(saved, g):   # g: [B, H', W', O]
        x, kernel = saved
        kh, kw = kernel.shape[:2]
        # dx: g correlated with the flipped kernel, its channel axes swapped [kh, kw, O, C]
        flipped = jnp.transpose(kernel[::-1, ::-1], (0, 1, 3, 2))
        dx_pads = [(kh - 1 - pads[0][0], kh - 1 - pads[0][1]),
                   (kw - 1 - pads[1][0], kw - 1 - pads[1][1])]
        dx = _canonical(g, flipped, dx_pads, precision)
        # dkernel[i, j, c, o] = Σ_bhw x_pad[b, h + i, w + j, c] g[b, h, w, o]: channels as
        # the batch, the batch as the features, g as a [H', W', B, O] kernel
        dk = _canonical(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(g, (1, 2, 0, 3)),
                        pads, precision)                     # [C, kh, kw, O]
        return dx, jnp.transpose(dk, (1, 2, 0, 3))

    conv.defvjp(forward, backward)
    return conv


def _subpixel_taps(k: int, s: int, lo: int) -> list[list[tuple[int, int]]]:
    """Per output residue r < s: the (tap t, input offset d) with out[s·q + r] = Σ x[q + d]·K[t]."""
    return [[(t, (r + t - lo) // s) for t in range(k) if (r + t - lo) % s == 0]
            for r in range(s)]


def _transposed_subpixel(x, kernel, dilation, pads, precision, preferred_element_type):
    """Valid correlation of (x dilated by s, then padded by pads) with the kernel."""
    b, h, w, _ = x.shape
    kh, kw, _, o = kernel.shape
    sizes = [s * (n - 1) + 1 + lo + hi - k + 1
             for n, s, (lo, hi), k in zip((h, w), dilation, pads, (kh, kw))]
    if min(sizes) <= 0:
        raise ValueError(f"Transposed convolution of {x.shape} with a {kh}x{kw} kernel and "
                         f"padding {pads} has no output.")
    q_h, q_w = (-(-n // s) for n, s in zip(sizes, dilation))   # rows per residue, rounded up
    taps_h = _subpixel_taps(kh, dilation[0], pads[0][0])
    taps_w = _subpixel_taps(kw, dilation[1], pads[1][0])
    offsets_h = [d for r in taps_h for _, d in r] or [0]
    offsets_w = [d for r in taps_w for _, d in r] or [0]
    pad_h = (max(0, -min(offsets_h)), max(0, q_h - 1 + max(offsets_h) - (h - 1)))
    pad_w = (max(0, -min(offsets_w)), max(0, q_w - 1 + max(offsets_w) - (w - 1)))
    xp = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
    dtype = preferred_element_type or jnp.result_type(x, kernel)
    rows = []
    for taps_r in taps_h:
        cols = []
        for taps_c in taps_w:
            taps = [(ti, di, tj, dj) for ti, di in taps_r for tj, dj in taps_c]
            if not taps:   # a kernel smaller than the stride: this residue sees no input
                cols.append(jnp.zeros((b, q_h, q_w, o), dtype))
                continue
            patches = jnp.concatenate(
                [xp[:, pad_h[0] + di:pad_h[0] + di + q_h, pad_w[0] + dj:pad_w[0] + dj + q_w, :]
                 for _, di, _, dj in taps], axis=-1)
            weights = jnp.concatenate([kernel[ti, tj] for ti, _, tj, _ in taps], axis=0)
            cols.append(_products(patches, weights, precision, preferred_element_type))
        rows.append(jnp.stack(cols, axis=3))          # [B, q_h, q_w, s_w, O]
    y = jnp.stack(rows, axis=2)                       # [B, q_h, s_h, q_w, s_w, O]
    y = y.reshape(b, q_h * dilation[0], q_w * dilation[1], o)
    return y[:, :sizes[0], :sizes[1]]


def _stride1_applies(rhs, pads, preferred_element_type) -> bool:
    """Whether a fast path computes this stride-1 convolution: an unpadded 1x1 (a matrix
    product), or ``_stride1`` without ``preferred_element_type`` and with paddings from 0 to
    k - 1 (so that the input gradient's are too)."""
    if rhs.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
        return True
    return (preferred_element_type is None
            and all(0 <= p <= k - 1 for pair, k in zip(pads, rhs.shape[:2]) for p in pair))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated``; where the CPU fast paths are active, 2-D NHWC/HWIO
    convolutions take the forms whose gradients XLA:CPU runs fast: stride 1 with canonical
    gradients (``_stride1``), strided or input-dilated ones as matrix products."""
    strides = tuple(window_strides)
    dilation = tuple(lhs_dilation or (1,) * len(strides))
    plain = (feature_group_count == 1 and batch_group_count == 1
             and all(d == 1 for d in (rhs_dilation or (1,)))
             and _is_nhwc(lhs, rhs, dimension_numbers))
    fast = plain and ops.active()
    if fast:
        pads = padding
        if isinstance(pads, str):   # as lax does: on the undilated input
            pads = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, pads)
        pads = tuple(tuple(int(p) for p in pair) for pair in pads)
        stride1 = max(strides) == 1 and max(dilation) == 1
        fast = ((stride1 and _stride1_applies(rhs, pads, preferred_element_type))
                or (max(strides) > 1 and max(dilation) == 1)
                or (max(dilation) > 1 and max(strides) == 1))
    if not fast:
        return lax.conv_general_dilated(
            lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
            feature_group_count, batch_group_count, precision, preferred_element_type)
    if stride1 and rhs.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
        return _products(lhs, rhs[0, 0], precision, preferred_element_type)   # a 1x1: a dot
    if stride1:
        return _stride1(pads, precision)(lhs, rhs)
    if max(dilation) > 1:
        return _transposed_subpixel(lhs, rhs, dilation, pads, precision, preferred_element_type)
    return _strided_im2col(lhs, rhs, strides, pads, precision, preferred_element_type)


def transpose_padding(k: int, s: int, padding: str) -> tuple[int, int]:
    """The padding of the input-dilated convolution that ``lax.conv_transpose`` computes
    for a forward convolution's "SAME" / "VALID" (k: kernel size, s: stride)."""
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else int(np.ceil(total / 2))
    elif padding == "VALID":
        total, lo = k + s - 2 + max(k - s, 0), k - 1
    else:
        raise ValueError(f"Unknown padding {padding!r}; valid: 'SAME', 'VALID' or (lo, hi) "
                         "pairs.")
    return lo, total - lo


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                   padding: str | Sequence[tuple[int, int]], precision=None) -> jax.Array:
    """``lax.conv_transpose(x, kernel, strides, padding)`` for NHWC / HWIO (transpose_kernel
    False), through :func:`conv_general_dilated`."""
    if isinstance(padding, str):
        padding = [transpose_padding(k, s, padding) for k, s in zip(kernel.shape[:2], strides)]
    return conv_general_dilated(x, kernel, (1, 1), padding, lhs_dilation=tuple(strides),
                                dimension_numbers=NHWC, precision=precision)


