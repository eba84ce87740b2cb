"""Evaluation on a held-out set: per-example ELBO terms, streamed over batches on device.

Build the jitted batch function once (``make_elbo_fn``) and reuse it across evaluations so
nothing recompiles; ``per_example`` streams a data set through it, data parallel.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh

from vae_jax import data, losses, parallel
from vae_jax.progress import Progress


PROGRESS_MIN_BATCHES = 20


def _pad_to_multiple(images: np.ndarray, multiple: int) -> np.ndarray:
    pad = (-len(images)) % multiple
    if pad:
        images = np.concatenate([images, np.repeat(images[:1], pad, axis=0)], axis=0)
    return images


def per_example(fn: Callable, params, images: np.ndarray, key: jax.Array, *,
                batch_size: int, mesh: Optional[Mesh] = None,
                progress: Optional[bool] = None) -> dict[str, np.ndarray]:
    """Apply a jitted ``fn(params, x_uint8 [b, H, W, C], key) -> {name: [b]}`` to every image.

    Batches are sharded over ``mesh``'s data axis; batch i gets ``fold_in(key, i)``, so the
    result does not depend on the device count. Returns {name: np.ndarray [N]} in order.
    ``progress``: report batches done (see ``vae_jax.progress``); None = only for long
    streams (>= PROGRESS_MIN_BATCHES batches, e.g. log p(x) with k = 5000).
    """
    mesh = mesh or parallel.data_mesh()
    parallel.check_batch_size(batch_size, mesh, "evaluation batch size")
    n = len(images)
    padded = _pad_to_multiple(np.asarray(images), batch_size)
    sharding = parallel.batch_sharded(mesh)
    outs = []
    num_batches = len(padded) // batch_size
    if progress is None:
        progress = num_batches >= PROGRESS_MIN_BATCHES
    bar = Progress(num_batches, unit="batch", quiet=None if progress else True)
    for i in range(num_batches):
        batch = parallel.put_global(padded[i * batch_size:(i + 1) * batch_size], mesh, sharding)
        outs.append(fn(params, batch, jax.random.fold_in(key, i)))
        if progress:  # wait for the batch, so the report counts finished work
            jax.block_until_ready(outs[-1])
            bar.update(i + 1)
    return jax.tree.map(lambda *xs: np.concatenate([np.asarray(x) for x in xs])[:n], *outs)


def _elbo_batch(params, x, key, *, model, binarization, num_samples):
    k_bin, k_z = jax.random.split(key)
    xf = data.preprocess(x, k_bin, binarization=binarization)
    return losses.elbo_terms(params, xf, k_z, model=model, num_samples=num_samples)


def make_elbo_fn(model: nn.Module, *, binarization: str, num_samples: int = 1) -> Callable:
    """jit(params, x_uint8 [b, H, W, C], key) -> per-example ELBO terms {name: [b]}.

    With dynamic binarization each batch is binarized with its own key, so a fixed key
    gives one fixed binarization of the test set across evaluations.
    """
    return jax.jit(functools.partial(_elbo_batch, model=model, binarization=binarization,
                                     num_samples=num_samples))


def summarize(values: dict[str, np.ndarray], prefix: str = "") -> dict[str, float]:
    """Means of per-example values: {prefix + name: float}."""
    return {prefix + k: float(np.mean(v)) for k, v in values.items()}
