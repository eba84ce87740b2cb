"""The models: every family registered by name (``registry``), built from ``config.model``.

``get(name, **kwargs)`` builds a registered model; ``names()`` lists them. Families, each
registering its own builders:

* ``vae``: the single-layer VAE around an encoder and a decoder: ``mlp`` (``"mlp"``),
  ``conv`` (``"conv"``), ``resnet`` (``"resnet"``, 8-bit pixels);
* ``hvae``: hierarchical VAEs with a few fully connected stochastic layers (``"hvae"``);
* ``deep_hvae/``: the deep top-down ResNet VAE, VDVAE / NVAE line (``"deep_hvae"``);
* ``vdm/``: variational diffusion models (``"vdm"``) and a VAE whose prior is a VDM over its
  latent (``"latent_vdm"``).

Every model exposes ``terms(x, key, num_samples)`` (DESIGN.md, Contracts), so losses and
evaluation need no change for a new family: write its module with a builder decorated
``@register("name")`` and import it here.
"""

from vae_jax.models import conv, hvae, mlp, resnet  # noqa: F401 (each registers its models)
from vae_jax.models.conv import ConvDecoder, ConvEncoder
from vae_jax.models.deep_hvae import DeepHVAE
from vae_jax.models.hvae import HVAE
from vae_jax.models.mlp import MLPDecoder, MLPEncoder
from vae_jax.models.registry import builder, get, names, register, unregister
from vae_jax.models.resnet import ResNetDecoder, ResNetEncoder
from vae_jax.models.vae import VAE
from vae_jax.models.vdm import VDM, LatentVDM

__all__ = ["VAE", "HVAE", "DeepHVAE", "VDM", "LatentVDM", "MLPEncoder", "MLPDecoder",
           "ConvEncoder", "ConvDecoder", "ResNetEncoder", "ResNetDecoder", "register",
           "unregister", "builder", "get", "names"]
