"""Fully connected encoder and decoder, and model ``"mlp"``: the classic 784-500-(2x20) /
20-500-784 VAE (``VAE`` with these networks)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from vae_jax import distributions as dist
from vae_jax.models.common import activation, gaussian_head
from vae_jax.models.registry import register
from vae_jax.models.vae import VAE


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


@register("mlp")
def mlp_vae(*, image_shape: Sequence[int], latent_dim: int = 20,
            hidden: Sequence[int] = (500,), activation: str = "relu",
            likelihood: str = "bernoulli") -> VAE:
    """The classic MLP VAE; decoder hidden sizes mirror the encoder's."""
    n = dist.likelihood_num_params(likelihood)
    hidden = tuple(hidden)
    return VAE(
        encoder=MLPEncoder(latent_dim, hidden, activation),
        decoder=MLPDecoder(tuple(image_shape), n, hidden[::-1], activation),
        latent_dim=latent_dim, likelihood=likelihood)
