"""uint8 batches -> float32 model inputs (binarization / grey levels), each epoch's order,
and the gather of one batch from a training set held whole on every device."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from vae_jax.ops import random

BINARIZATIONS = ("dynamic", "static", "none")


def preprocess(images: jax.Array, key: Optional[jax.Array], *, binarization: str) -> jax.Array:
    """uint8 [B, H, W, C] -> float32 in [0, 1].

    binarization:
      "dynamic": a fresh Bernoulli(pixel / 255) draw per call (needs ``key``);
      "static":  pixel / 255 > 0.5;
      "none":    pixel / 255 (grey levels).
    """
    x = images.astype(jnp.float32) / 255.0
    if binarization == "dynamic":
        return random.bernoulli(key, x).astype(jnp.float32)
    if binarization == "static":
        return (x > 0.5).astype(jnp.float32)
    if binarization == "none":
        return x
    raise ValueError(f"Unknown binarization {binarization!r}; valid: {list(BINARIZATIONS)}.")


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """The order of the training set in ``epoch``: int32 [num_examples], drawn on device."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def gather_batch(images: jax.Array, perm: jax.Array, batch_index: jax.Array | int,
                 batch_size: int) -> jax.Array:
    """Batch ``batch_index`` of an epoch: images[perm[i*B:(i+1)*B]] -> [B, H, W, C]."""
    idx = jax.lax.dynamic_slice_in_dim(perm, batch_index * batch_size, batch_size)
    return jnp.take(images, idx, axis=0)

