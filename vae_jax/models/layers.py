"""Convolution layers for the conv, ResNet, deep HVAE and VDM models: Flax's own modules and
parameters, computed by ``vae_jax.ops.conv`` (on the CPU matrix products, and stride-1
convolutions with canonical gradients; ``lax`` elsewhere).

Parameters (names, shapes, initialisers) are Flax's, so checkpoints do not depend on the
backend or on the ``vae_jax.ops`` switch.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.ops.conv import NHWC, conv_general_dilated, conv_transpose, transpose_padding

__all__ = ["Conv", "ConvTranspose", "NHWC", "conv_general_dilated", "conv_transpose",
           "transpose_padding"]

def Conv(*args, **kwargs) -> nn.Conv:  # noqa: N802  (a module factory, named like the class)
    """``flax.linen.Conv`` computed by :func:`conv_general_dilated` (same parameters)."""
    return nn.Conv(*args, conv_general_dilated=conv_general_dilated, **kwargs)


class ConvTranspose(nn.Module):
    """``flax.linen.ConvTranspose`` for x [B, H, W, C] with the same parameters ("kernel"
    [kh, kw, C, features], "bias" [features]) and initialisers, computed by
    :func:`conv_transpose`. Padding: "SAME", "VALID" or (lo, hi) pairs."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int] = (1, 1)
    padding: Any = "SAME"
    use_bias: bool = True
    precision: Any = None
    kernel_init: Callable = nn.linear.default_kernel_init
    bias_init: Callable = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim != 4:
            raise ValueError(f"ConvTranspose takes [B, H, W, C] inputs; got shape {x.shape}.")
        kernel = self.param("kernel", self.kernel_init,
                            (*self.kernel_size, x.shape[-1], self.features), jnp.float32)
        y = conv_transpose(x, kernel, tuple(self.strides), self.padding, self.precision)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,), jnp.float32)
        return y
