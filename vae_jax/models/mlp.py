"""Fully connected encoder and decoder (the classic 784-500-(2x20) / 20-500-784 VAE)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from vae_jax.models.common import activation, gaussian_head


class MLPEncoder(nn.Module):
    """x: [B, H, W, C] -> (mean, log_std), each [B, latent_dim]."""

    latent_dim: int
    hidden: Sequence[int] = (500,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation(self.activation)
        h = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, name=f"hidden_{i}")(h))
        return gaussian_head(h, self.latent_dim)


class MLPDecoder(nn.Module):
    """z: [N, latent_dim] -> likelihood outputs [N, H, W, C * num_params]."""

    image_shape: Sequence[int]
    num_params: int = 1
    hidden: Sequence[int] = (500,)
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation(self.activation)
        feats = z
        for i, width in enumerate(self.hidden):
            feats = act(nn.Dense(width, name=f"hidden_{i}")(feats))
        height, width, channels = self.image_shape
        out = nn.Dense(height * width * channels * self.num_params, name="out")(feats)
        return out.reshape(z.shape[0], height, width, channels * self.num_params)
