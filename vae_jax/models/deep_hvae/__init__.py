"""The deep top-down ResNet VAE (VDVAE / NVAE line): ``model`` (``DeepHVAE`` and the
``"deep_hvae"`` builder), ``blocks`` (its bottom-up and top-down residual blocks)."""

from vae_jax.models.deep_hvae.blocks import Bottleneck, BottomUp, TopDownBlock
from vae_jax.models.deep_hvae.model import (DeepHVAE, deep_hvae_model, depth_to_space,
                                            space_to_depth)

__all__ = ["DeepHVAE", "deep_hvae_model", "Bottleneck", "BottomUp", "TopDownBlock",
           "space_to_depth", "depth_to_space"]
