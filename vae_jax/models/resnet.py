"""ResNet-style convolutional encoder and decoder for 8-bit images (28x28, 32x32, ...).

A stride-2 stem halves the resolution first (cheap on CPUs); then each stage is ``blocks``
pre-activation residual blocks (act-conv3x3-act-conv3x3 + skip) at one resolution, stages
joined by stride-2 convolutions (encoder) or stride-2 transposed convolutions (decoder).
Image sides must be divisible by 2^len(channels). Model ``"resnet"`` is the ``VAE`` with
these networks, by default with a discretized logistic mixture for 8-bit pixels.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax

from vae_jax import distributions as dist
from vae_jax.models import layers
from vae_jax.models.common import activation, base_grid, gaussian_head
from vae_jax.models.registry import register
from vae_jax.models.vae import VAE


class ResBlock(nn.Module):
    """x + conv(act(conv(act(x)))), channels preserved: [N, H, W, C] -> [N, H, W, C]."""

    activation: str = "swish"

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        act = activation(self.activation)
        ch = x.shape[-1]
        h = layers.Conv(ch, (3, 3), padding="SAME", name="conv_0")(act(x))
        # Zero-initialised last conv: every block starts as the identity (stable deep nets).
        h = layers.Conv(ch, (3, 3), padding="SAME", kernel_init=nn.initializers.zeros,
                        name="conv_1")(act(h))
        return x + h


class ResNetEncoder(nn.Module):
    """x: [B, H, W, C] -> (mean, log_std), each [B, latent_dim]."""

    latent_dim: int
    channels: Sequence[int] = (32, 64)
    blocks: int = 1
    activation: str = "swish"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        act = activation(self.activation)
        h = layers.Conv(self.channels[0], (3, 3), strides=(2, 2), padding="SAME",
                        name="stem")(2.0 * x - 1.0)
        for s, ch in enumerate(self.channels):
            if s > 0:
                h = layers.Conv(ch, (3, 3), strides=(2, 2), padding="SAME", name=f"down_{s}")(h)
            for i in range(self.blocks):
                h = ResBlock(self.activation, name=f"stage_{s}_block_{i}")(h)
        h = act(h).reshape(x.shape[0], -1)
        return gaussian_head(h, self.latent_dim)


class ResNetDecoder(nn.Module):
    """z: [N, latent_dim] -> [N, H, W, C * num_params]; mirrors ``ResNetEncoder``."""

    image_shape: Sequence[int]
    num_params: int = 2
    channels: Sequence[int] = (32, 64)
    blocks: int = 1
    activation: str = "swish"

    @nn.compact
    def __call__(self, z: jax.Array) -> jax.Array:
        act = activation(self.activation)
        out_ch = self.image_shape[-1]
        h0, w0 = base_grid(self.image_shape, len(self.channels), "ResNetDecoder",
                           "Use fewer stages (model.channels).")
        chans = tuple(reversed(self.channels))
        h = nn.Dense(h0 * w0 * chans[0], name="project")(z).reshape(z.shape[0], h0, w0, chans[0])
        for s, ch in enumerate(chans):
            if s > 0:
                h = layers.ConvTranspose(ch, (3, 3), strides=(2, 2), padding="SAME",
                                         name=f"up_{s}")(h)
            for i in range(self.blocks):
                h = ResBlock(self.activation, name=f"stage_{s}_block_{i}")(h)
        h = layers.ConvTranspose(chans[-1], (3, 3), strides=(2, 2), padding="SAME",
                                 name="up_out")(act(h))
        return layers.Conv(out_ch * self.num_params, (3, 3), padding="SAME", name="out")(act(h))


@register("resnet")
def resnet_vae(*, image_shape: Sequence[int], latent_dim: int = 32,
               channels: Sequence[int] = (32, 64), blocks: int = 1,
               activation: str = "swish", likelihood: str = "discretized_logistic_mix5") -> VAE:
    """ResNet-style conv VAE; by default a discretized logistic mixture for 8-bit pixels."""
    n = dist.likelihood_num_params(likelihood)
    channels = tuple(channels)
    return VAE(
        encoder=ResNetEncoder(latent_dim, channels, blocks, activation),
        decoder=ResNetDecoder(tuple(image_shape), n, channels, blocks, activation),
        latent_dim=latent_dim, likelihood=likelihood)
