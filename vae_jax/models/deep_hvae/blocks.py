"""Building blocks of the deep top-down HVAE (``deep_hvae.py``; VDVAE, Child 2021).

A ``Bottleneck`` block (act → 1×1 → act → k×k → act → k×k → act → 1×1, optionally plus a
skip), the ``BottomUp`` encoder keeping one activation per resolution, and the
``TopDownBlock`` whose stochastic layer draws z_i from q(z_i | x, z_<i) (inference) or
p(z_i | z_<i) (sampling) and merges it back into the residual stream.

Stability knobs live here: ``last_scale`` (the last conv of a residual branch zero or scaled
at init) and ``log_std_bound`` (log-stds soft-clamped to (−b, b)). Every distribution a block
returns has float32 parameters whatever the compute dtype.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax.models import layers
from vae_jax.models.common import activation as get_activation


def soft_clamp(x: jax.Array, *, bound: Optional[float]) -> jax.Array:
    """b·tanh(x / b): smooth, ≈ x for ``|x|`` ≪ b, always inside (−b, b); identity for None."""
    if not bound:
        return x
    return bound * jnp.tanh(x / bound)


def scaled_init(scale: float) -> Callable:
    """Flax's default (LeCun normal) kernel init with its std multiplied by ``scale``;
    zeros for scale 0. The same key gives exactly ``scale`` times the default draw."""
    if scale == 0.0:
        return nn.initializers.zeros
    return nn.initializers.variance_scaling(scale * scale, "fan_in", "truncated_normal")


def kernel_size(resolution: int) -> int:
    """3×3 convolutions inside blocks, 1×1 at resolutions ≤ 2 (a 3×3 there sees mostly
    padding), as in VDVAE."""
    return 3 if resolution > 2 else 1


def middle_width(width: int, bottleneck: float) -> int:
    """The inner width of a bottleneck block: round(width · bottleneck), at least 1."""
    return max(1, int(round(width * bottleneck)))


def avg_pool(x: jax.Array, *, factor: int) -> jax.Array:
    """[N, H, W, C] -> [N, H/f, W/f, C], mean over f×f windows (a reshape: cheap on CPUs)."""
    if factor == 1:
        return x
    n, h, w, c = x.shape
    return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))


def upsample(x: jax.Array, *, factor: int) -> jax.Array:
    """[N, H, W, C] -> [N, H·f, W·f, C], nearest neighbour."""
    if factor == 1:
        return x
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return x.reshape(n, h * factor, w * factor, c)


class Bottleneck(nn.Module):
    """act → 1×1 → act → k×k → act → k×k → act → 1×1 (+ x when ``residual``).

    x: [N, h, w, C_in] -> [N, h, w, features] (features = C_in when residual).

    Attributes:
      features: output channels.
      middle: the bottleneck width of the inner convolutions.
      kernel: k, the inner convolutions' size.
      residual: add the input (the block is a residual branch).
      last_scale: the last conv's kernel init is Flax's default times this (0: zeros, so a
        residual block starts as the identity).
      activation: name in ``common.ACTIVATIONS``.
      dtype: compute dtype; parameters stay float32.
    """

    features: int
    middle: int
    kernel: int = 3
    residual: bool = False
    last_scale: float = 1.0
    activation: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        k = (self.kernel, self.kernel)
        h = layers.Conv(self.middle, (1, 1), dtype=self.dtype, name="c1")(act(x))
        h = layers.Conv(self.middle, k, padding="SAME", dtype=self.dtype, name="c2")(act(h))
        h = layers.Conv(self.middle, k, padding="SAME", dtype=self.dtype, name="c3")(act(h))
        h = layers.Conv(self.features, (1, 1), kernel_init=scaled_init(self.last_scale),
                        dtype=self.dtype, name="c4")(act(h))
        return x.astype(h.dtype) + h if self.residual else h


class BottomUp(nn.Module):
    """The encoder: stem conv, then per resolution ``blocks[i]`` residual bottleneck blocks;
    average pooling (and a 1×1 conv where the width changes) between resolutions.

    x: [B, H, W, C] float in [0, 1] -> one activation per resolution, highest first:
    a tuple of [B, r_i, w_i, widths[i]].

    Attributes:
      resolutions: side lengths (heights), highest (= H) first; each divides the previous.
      blocks, widths: one entry per resolution.
      bottleneck: inner width = round(width · bottleneck).
      last_scale: ``Bottleneck.last_scale`` of every block.
    """

    resolutions: Sequence[int]
    blocks: Sequence[int]
    widths: Sequence[int]
    bottleneck: float = 0.25
    last_scale: float = 1.0
    activation: str = "gelu"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, ...]:
        h = layers.Conv(self.widths[0], (3, 3), padding="SAME", dtype=self.dtype,
                        name="stem")((2.0 * x - 1.0).astype(self.dtype))
        acts = []
        for i, (res, width) in enumerate(zip(self.resolutions, self.widths)):
            if i > 0:
                h = avg_pool(h, factor=self.resolutions[i - 1] // res)
                if width != self.widths[i - 1]:
                    h = layers.Conv(width, (1, 1), dtype=self.dtype, name=f"proj_r{res}")(h)
            for j in range(self.blocks[i]):
                h = Bottleneck(width, middle_width(width, self.bottleneck), kernel_size(res),
                               residual=True, last_scale=self.last_scale,
                               activation=self.activation, dtype=self.dtype,
                               name=f"r{res}_{j}")(h)
            acts.append(h)
        return tuple(acts)


class TopDownBlock(nn.Module):
    """One decoder block at one resolution; with ``stochastic`` it carries a latent layer.

    Stochastic (VDVAE's DecBlock), from the top-down state h [N, h, w, width]::

      posterior q(z | x, z_<i) = N(q_net(concat(h, a))),   a: the bottom-up activation,
      prior p(z | z_<i) and a residual feature = p_net(h),
      z ~ q (inference, z = μ_q + σ_q ε) or p (sampling, z = μ_p + t σ_p ε),
      h ← res(h + feature + proj(z)).

    Deterministic: h ← res(h).

    Attributes::

      width, middle, kernel: channels of h, inner width and size of the block convolutions.
      latent_channels: c_z; z is [N, h, w, c_z].
      stochastic: whether the block has a latent layer.
      res_scale: ``last_scale`` of the residual block and of ``proj``.
      prior_scale: ``last_scale`` of the prior net (0 at VDVAE's init: p = N(0, I), no
        feature).
      log_std_bound: soft clamp of both log-stds (None: none).
    """

    width: int
    middle: int
    kernel: int
    latent_channels: int
    stochastic: bool = True
    res_scale: float = 1.0
    prior_scale: float = 0.0
    log_std_bound: Optional[float] = None
    activation: str = "gelu"
    dtype: Any = jnp.float32

    def setup(self):
        common = dict(kernel=self.kernel, activation=self.activation, dtype=self.dtype)
        if self.stochastic:
            cz = self.latent_channels
            self.q_net = Bottleneck(2 * cz, self.middle, **common, name="q_net")
            self.p_net = Bottleneck(2 * cz + self.width, self.middle,
                                    last_scale=self.prior_scale, **common, name="p_net")
            self.proj = layers.Conv(self.width, (1, 1), kernel_init=scaled_init(self.res_scale),
                                    dtype=self.dtype, name="proj")
        self.res = Bottleneck(self.width, self.middle, residual=True,
                              last_scale=self.res_scale, **common, name="res")

    def _gaussian(self, out: jax.Array) -> dist.DiagGaussian:
        mean, log_std = jnp.split(out.astype(jnp.float32), 2, axis=-1)
        return dist.DiagGaussian(mean, soft_clamp(log_std, bound=self.log_std_bound), event_ndim=3)

    def __call__(self, h: jax.Array, a: Optional[jax.Array] = None,
                 eps: Optional[jax.Array] = None, temperature: float | jax.Array = 1.0):
        """h: [N, h, w, width]; a: [N, h, w, width_bu] (None: sample from the prior);
        eps: [N, h, w, c_z] float32 standard normal noise.

        Returns (h' [N, h, w, width], None) when deterministic, else (h', {"q": q or None,
        "p": p, "z": z}) with q, p DiagGaussians over [N, h, w, c_z] (event: 3 axes) and z
        float32 [N, h, w, c_z].
        """
        if not self.stochastic:
            return self.res(h), None
        cz = self.latent_channels
        feats = self.p_net(h)
        p = self._gaussian(feats[..., :2 * cz])
        if a is not None:
            q = self._gaussian(self.q_net(jnp.concatenate([h, a.astype(h.dtype)], axis=-1)))
            z = q.mean + q.std * eps
        else:
            q = None
            z = p.mean + temperature * p.std * eps
        h = h + feats[..., 2 * cz:] + self.proj(z.astype(self.dtype))
        return self.res(h), {"q": q, "p": p, "z": z}
