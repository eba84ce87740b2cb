"""Model registry: ``get(name, **kwargs)`` builds a model from its config section.

A new model family is a builder function decorated with ``@register("name")`` taking
keyword arguments (``image_shape`` always, the rest from ``config.model``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import flax.linen as nn

from vae_jax import distributions as dist
from vae_jax.models.conv import ConvDecoder, ConvEncoder
from vae_jax.models.deep_hvae import DeepHVAE, deep_hvae_model
from vae_jax.models.hvae import HVAE
from vae_jax.models.latent_vdm import LatentVDM, latent_vdm_model
from vae_jax.models.mlp import MLPDecoder, MLPEncoder
from vae_jax.models.resnet import ResNetDecoder, ResNetEncoder
from vae_jax.models.vae import VAE
from vae_jax.models.vdm import VDM, vdm_model

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"Model {name!r} is registered twice.")
        _REGISTRY[name] = fn
        return fn
    return wrap


def names() -> list[str]:
    return sorted(_REGISTRY)


def builder(name: str) -> Callable[..., nn.Module]:
    """The registered builder ``name``: keyword arguments ``image_shape`` and config.model's."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid: {names()}. "
                         "Set config.model.name to one of them.")
    return _REGISTRY[name]


def get(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments from ``config.model``."""
    return builder(name)(**kwargs)


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


@register("hvae")
def hierarchical_vae(*, image_shape: Sequence[int], latent_dims: Sequence[int] = (100, 50),
                     hidden: Sequence[Sequence[int]] = ((100, 100), (50, 50)),
                     activation: str = "tanh", likelihood: str = "bernoulli",
                     inference: str = "markov", analytic_kl: bool = True) -> HVAE:
    """Hierarchical VAE (``models/hvae.py``); defaults are Burda et al.'s two-layer model.

    ``latent_dims`` run bottom (next to x) to top; ``hidden`` holds one tuple of widths per
    layer (the inference net into that layer; the generative net mirrors it).
    """
    latent_dims = tuple(int(d) for d in latent_dims)
    if any(isinstance(h, int) for h in hidden):
        raise ValueError(f"config.model.hidden={hidden!r}: give one tuple of widths per latent "
                         "layer, e.g. ((100, 100), (50, 50)) for latent_dims=(100, 50).")
    hidden = tuple(tuple(int(w) for w in h) for h in hidden)
    return HVAE(image_shape=tuple(image_shape), latent_dims=latent_dims, hidden=hidden,
                activation=activation, likelihood=likelihood, inference=inference,
                analytic_kl=analytic_kl)


# Deep top-down ResNet VAE (VDVAE / NVAE line), variational diffusion model, and a VAE
# whose prior is a VDM over its latent: builders in their own modules.
register("deep_hvae")(deep_hvae_model)
register("vdm")(vdm_model)
register("latent_vdm")(latent_vdm_model)


__all__ = ["VAE", "HVAE", "DeepHVAE", "VDM", "LatentVDM", "MLPEncoder", "MLPDecoder", "ConvEncoder", "ConvDecoder",
           "ResNetEncoder", "ResNetDecoder", "register", "builder", "get", "names"]
