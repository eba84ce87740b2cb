"""Noise-prediction (ε) networks of a variational diffusion model, conditioned on γ(t).

``ScoreNet`` is for images: Fourier features of z as extra input channels (they let the
network see the fine structure of z at high SNR, where 8-bit detail lives), a γ embedding
added in every residual block, residual blocks on ``layers.Conv`` at full resolution (the
paper's choice), or a small U-Net (``levels`` > 0). ``MLPScoreNet`` is for flat latents
(the latent diffusion model). Both end in a zero-initialised layer: ε̂ = 0 at init.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.models import layers
from vae_jax.models.common import activation as get_activation


def gamma_embedding(gamma: jax.Array, *, dim: int, gamma_min: float, gamma_max: float
                    ) -> jax.Array:
    """Sinusoidal embedding of γ rescaled to [0, 1000] over [γ_min, γ_max]: [N] -> [N, dim]."""
    u = 1000.0 * (gamma - gamma_min) / (gamma_max - gamma_min)
    half = dim // 2
    freqs = jnp.exp(-math.log(10000.0) * jnp.arange(half, dtype=jnp.float32) / max(half - 1, 1))
    arg = u[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


def fourier_features(z: jax.Array, exponents: Sequence[int]) -> jax.Array:
    """sin / cos(2^n π z) per channel for n in ``exponents``: [..., C] -> [..., 2·C·len]."""
    if not exponents:
        return z[..., :0]
    freqs = jnp.asarray([2.0 ** n * math.pi for n in exponents], z.dtype)
    arg = (z[..., None] * freqs).reshape(*z.shape[:-1], -1)
    return jnp.concatenate([jnp.sin(arg), jnp.cos(arg)], axis=-1)


def _groups(channels: int) -> int:
    return math.gcd(channels, 8)


class _CondResBlock(nn.Module):
    """h + conv(act(norm(conv(act(norm(h))) + dense(cond)))): [N, H, W, F] -> [N, H, W, F]."""

    activation: str = "swish"

    @nn.compact
    def __call__(self, h: jax.Array, cond: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        ch = h.shape[-1]
        y = act(nn.GroupNorm(_groups(ch), name="norm_0")(h))
        y = layers.Conv(ch, (3, 3), padding="SAME", name="conv_0")(y)
        y = y + nn.Dense(ch, name="cond")(cond)[:, None, None, :]
        y = act(nn.GroupNorm(_groups(ch), name="norm_1")(y))
        y = layers.Conv(ch, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                        name="conv_1")(y)
        return h + y


class ScoreNet(nn.Module):
    """ε̂(z_t, γ_t): z [N, H, W, C], gamma [N] -> ε̂ [N, H, W, C].

    Attributes:
      channels: feature width F.
      blocks: residual blocks per resolution (and in the middle of the U-Net).
      levels: 0 for the plain ResNet at full resolution; L > 0 for a U-Net with L stride-2
        downsamplings (``layers.Conv``) and transposed-conv upsamplings with skips (the image
        sides must be divisible by 2^L).
      fourier_exponents: n of the sin/cos(2^n π z) input features; () for none.
      embed_dim: width of the γ embedding.
      gamma_min, gamma_max: the range the γ embedding is normalised over.
    """

    channels: int = 32
    blocks: int = 2
    levels: int = 0
    fourier_exponents: Sequence[int] = (6, 7)
    embed_dim: int = 32
    gamma_min: float = -13.3
    gamma_max: float = 5.0
    activation: str = "swish"

    @nn.compact
    def __call__(self, z: jax.Array, gamma: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        emb = gamma_embedding(jnp.broadcast_to(gamma, z.shape[:1]), dim=self.embed_dim,
                              gamma_min=self.gamma_min, gamma_max=self.gamma_max)
        cond = nn.Dense(4 * self.embed_dim, name="embed_1")(
            act(nn.Dense(4 * self.embed_dim, name="embed_0")(emb)))
        h = jnp.concatenate([z, fourier_features(z, tuple(self.fourier_exponents))], axis=-1)
        h = layers.Conv(self.channels, (3, 3), padding="SAME", name="stem")(h)
        skips = []
        for lvl in range(self.levels + 1):
            for i in range(self.blocks):
                h = _CondResBlock(self.activation, name=f"down_{lvl}_block_{i}")(h, cond)
            if lvl < self.levels:
                skips.append(h)
                h = layers.Conv(self.channels, (3, 3), strides=(2, 2), padding="SAME",
                                name=f"down_{lvl}")(h)
        for lvl in reversed(range(self.levels)):
            h = layers.ConvTranspose(self.channels, (3, 3), strides=(2, 2), name=f"up_{lvl}")(h)
            h = layers.Conv(self.channels, (1, 1), name=f"merge_{lvl}")(
                jnp.concatenate([h, skips[lvl]], axis=-1))
            for i in range(self.blocks):
                h = _CondResBlock(self.activation, name=f"up_{lvl}_block_{i}")(h, cond)
        h = act(nn.GroupNorm(_groups(self.channels), name="norm_out")(h))
        return layers.Conv(z.shape[-1], (3, 3), padding="SAME",
                           kernel_init=nn.initializers.zeros, name="out")(h)


class MLPScoreNet(nn.Module):
    """ε̂(z_t, γ_t) for flat latents: z [N, D], gamma [N] -> ε̂ [N, D].

    Residual MLP: every hidden layer adds a projection of the γ embedding.
    """

    hidden: Sequence[int] = (256, 256)
    embed_dim: int = 32
    gamma_min: float = -13.3
    gamma_max: float = 5.0
    activation: str = "swish"

    @nn.compact
    def __call__(self, z: jax.Array, gamma: jax.Array) -> jax.Array:
        act = get_activation(self.activation)
        emb = gamma_embedding(jnp.broadcast_to(gamma, z.shape[:1]), dim=self.embed_dim,
                              gamma_min=self.gamma_min, gamma_max=self.gamma_max)
        h = z
        for i, width in enumerate(self.hidden):
            y = nn.Dense(width, name=f"hidden_{i}")(h) + nn.Dense(width, name=f"cond_{i}")(emb)
            y = act(y)
            h = h + y if h.shape[-1] == width else y
        return nn.Dense(z.shape[-1], kernel_init=nn.initializers.zeros, name="out")(h)
