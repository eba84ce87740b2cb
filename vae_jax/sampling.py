"""Prior samples, reconstructions and PNG image grids."""

from __future__ import annotations

import math
import os
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image


def image_grid(images: np.ndarray, ncols: Optional[int] = None, pad: int = 1) -> np.ndarray:
    """images [N, H, W, C] in [0, 1] (or uint8) -> one uint8 grid [rows*(H+pad)+pad, ..., C]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
    return grid


def save_png(path: str, grid: np.ndarray) -> str:
    """Write a uint8 grid [H, W, C] (C = 1 or 3) as PNG; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = grid[..., 0] if grid.shape[-1] == 1 else grid
    Image.fromarray(img).save(path)
    return path


def prior_samples(params, key: jax.Array, *, model: nn.Module, num: int,
                  temperature: float = 1.0) -> jax.Array:
    """Mean of p(x|z) for z ~ N(0, temperature² I): [num, H, W, C] in [0, 1]."""
    return model.apply(params, key, num, temperature, method="sample_prior").mean()


def reconstructions(params, x: jax.Array, *, model: nn.Module) -> jax.Array:
    """Mean of p(x | z = μ(x)) for x [B, H, W, C] in [0, 1]: [B, H, W, C]."""
    def recon(mdl, x):
        return mdl.decode(mdl.encode(x).mean).mean()
    return model.apply(params, x, method=recon)


def reconstruction_grid(originals: np.ndarray, recons: np.ndarray, ncols: int = 8) -> np.ndarray:
    """Rows of originals with their reconstructions directly beneath: uint8 grid."""
    originals, recons = np.asarray(originals), np.asarray(recons)
    n = (len(originals) // ncols) * ncols or len(originals)
    ncols = min(ncols, n)
    rows = []
    for r in range(0, n, ncols):
        rows.append(originals[r:r + ncols])
        rows.append(recons[r:r + ncols])
    return image_grid(np.concatenate(rows), ncols=ncols)
