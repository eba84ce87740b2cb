"""Convolutional encoder and decoder for small images (28x28, 32x32: sides divisible by 4),
and model ``"conv"``: the ``VAE`` with these networks."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from vae_jax import distributions as dist
from vae_jax.models import layers
from vae_jax.models.common import activation, base_grid, gaussian_head
from vae_jax.models.registry import register
from vae_jax.models.vae import VAE


class ConvEncoder(nn.Module):
    """x: [B, H, W, C] -> (mean, log_std), each [B, latent_dim]. Two stride-2 convolutions."""

    latent_dim: int
    channels: Sequence[int] = (32, 64)
    hidden: int = 256
    activation: str = "relu"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation(self.activation)
        h = x
        for i, ch in enumerate(self.channels):
            h = act(layers.Conv(ch, (3, 3), strides=(2, 2), padding="SAME", name=f"conv_{i}")(h))
        h = h.reshape(h.shape[0], -1)
        h = act(nn.Dense(self.hidden, name="hidden")(h))
        return gaussian_head(h, self.latent_dim)


class ConvDecoder(nn.Module):
    """z: [N, latent_dim] -> [N, H, W, C * num_params]; mirrors ``ConvEncoder``."""

    image_shape: Sequence[int]
    num_params: int = 1
    channels: Sequence[int] = (32, 64)
    hidden: int = 256
    activation: str = "relu"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation(self.activation)
        out_ch = self.image_shape[-1]
        h0, w0 = base_grid(self.image_shape, len(self.channels), "ConvDecoder",
                           "Use fewer conv channels (model.channels) or the 'mlp' model.")
        h = act(nn.Dense(self.hidden, name="hidden")(z))
        h = act(nn.Dense(h0 * w0 * self.channels[-1], name="project")(h))
        h = h.reshape(z.shape[0], h0, w0, self.channels[-1])
        for i, ch in enumerate(reversed(self.channels)):
            h = act(layers.ConvTranspose(ch, (3, 3), strides=(2, 2), padding="SAME",
                                         name=f"deconv_{i}")(h))
        return layers.Conv(out_ch * self.num_params, (3, 3), padding="SAME", name="out")(h)


@register("conv")
def conv_vae(*, image_shape: Sequence[int], latent_dim: int = 20,
             channels: Sequence[int] = (32, 64), hidden: int = 256,
             activation: str = "relu", likelihood: str = "bernoulli") -> VAE:
    n = dist.likelihood_num_params(likelihood)
    channels = tuple(channels)
    return VAE(
        encoder=ConvEncoder(latent_dim, channels, hidden, activation),
        decoder=ConvDecoder(tuple(image_shape), n, channels, hidden, activation),
        latent_dim=latent_dim, likelihood=likelihood)
