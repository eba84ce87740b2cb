"""Fully connected encoder and decoder (the classic 784-500-(2x20) / 20-500-784 VAE)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "elu": nn.elu, "gelu": nn.gelu,
               "softplus": nn.softplus, "swish": nn.swish}


def activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {name!r}; valid: {sorted(ACTIVATIONS)}.")
    return ACTIVATIONS[name]


def gaussian_head(h: jax.Array, latent_dim: int) -> tuple[jax.Array, jax.Array]:
    """The encoder's last layer, shared by every encoder: h [B, F] -> (mean, log_std) [B, D]."""
    out = nn.Dense(2 * latent_dim, name="out")(h)
    mean, log_std = jnp.split(out, 2, axis=-1)
    return mean, log_std


def base_grid(image_shape, num_stages: int, who: str, fix: str) -> tuple[int, int]:
    """Side lengths after ``num_stages`` stride-2 stages; a clear error when they don't divide."""
    height, width = image_shape[0], image_shape[1]
    scale = 2 ** num_stages
    if height % scale or width % scale:
        raise ValueError(f"{who} needs image sides divisible by {scale}; got {height}x{width}. "
                         f"{fix}")
    return height // scale, width // scale


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
