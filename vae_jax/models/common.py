"""Pieces every model family shares: activations by name, the Gaussian head, grid sizes."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "elu": nn.elu, "gelu": nn.gelu,
               "softplus": nn.softplus, "swish": nn.swish}


def activation(name: str):
    """The activation function called ``name`` (a key of ``ACTIVATIONS``)."""
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
