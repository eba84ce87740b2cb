"""Active latent units (Burda et al. 2015, section 5.2): A_u = Cov_x(E_{u~q(u|x)}[u]) > 10⁻².

A unit whose posterior mean does not move with x carries no information about x: its layer
has (partly) collapsed onto the prior. For a hierarchical model the statistic is reported per
layer; E_q[z_l | x] for a layer whose posterior depends on sampled layers below (Markov) or
above (ladder) is a Monte Carlo average (``model.posterior_means``). Models without
``posterior_means`` (the plain VAE) use ``encode(x).mean``, reported as layer ``"z"``.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vae_jax.data.batches import preprocess
from vae_jax.ops.compile import jit_eval
from vae_jax.parallel import per_example
from vae_jax.precision import EVAL_PRECISION, at_precision

THRESHOLD = 1e-2
DEFAULT_SAMPLES = 100  # Monte Carlo draws of E_q[z_l | x] for a layer that needs them


def posterior_means(params, x: jax.Array, key: jax.Array, *, model: nn.Module,
                    num_samples: int = 100, chunk: Optional[int] = None
                    ) -> dict[str, jax.Array]:
    """x: [B, H, W, C] float -> {layer: E_q[z_layer | x] [B, D_layer]}.

    ``chunk``: draws of the layers a layer depends on per pass (memory O(B · chunk) for a
    deep model, whose every draw is a pass through the network); None: all
    ``num_samples`` at once. The draws of full chunks and of the remainder are weighted by
    their counts, so the result is the mean over ``num_samples`` draws either way.
    """
    if hasattr(model, "posterior_means"):
        def draw(k, n):
            return model.apply(params, x, k, n, method="posterior_means")
        if not chunk or chunk >= num_samples:
            return draw(key, num_samples)
        full, rest = divmod(num_samples, chunk)
        k_full, k_rest = jax.random.split(key)
        means = jax.tree.map(lambda m: jnp.mean(m, axis=0),
                             jax.lax.map(lambda k: draw(k, chunk),
                                         jax.random.split(k_full, full)))
        if rest:
            means = jax.tree.map(lambda a, b: (full * chunk * a + rest * b) / num_samples,
                                 means, draw(k_rest, rest))
        return means
    if not hasattr(model, "encode"):  # a diffusion model: its encoder is fixed, no units
        return {}
    return {"z": model.apply(params, x, method=lambda mdl, x: mdl.encode(x).mean)}


def means_batch(params, x, key, *, model, binarization, num_samples, chunk=None):
    """uint8 x [B, H, W, C] -> ``posterior_means`` of x binarized with the first half of
    ``key`` (as ``evaluate.elbo_batch`` binarizes it), drawn with the second."""
    k_bin, k_z = jax.random.split(key)
    xf = preprocess(x, k_bin, binarization=binarization)
    return posterior_means(params, xf, k_z, model=model, num_samples=num_samples, chunk=chunk)


@functools.lru_cache(maxsize=16)
def make_posterior_means_fn(model: nn.Module, *, binarization: str,
                            num_samples: int = DEFAULT_SAMPLES,
                            chunk: Optional[int] = None) -> Callable:
    """jit(params, x_uint8 [b, H, W, C], key) -> {layer: [b, D]}; cached per model/settings.

    Float32 matrix products on every backend, like the other evaluation figures.
    """
    return jit_eval(at_precision(functools.partial(
        means_batch, model=model, binarization=binarization, num_samples=num_samples,
        chunk=chunk), EVAL_PRECISION))


def posterior_mean_variance(params, images: np.ndarray, *, model: nn.Module,
                            key: Optional[jax.Array] = None, binarization: str = "dynamic",
                            num_samples: int = DEFAULT_SAMPLES, batch_size: int = 1000,
                            mesh: Optional[Mesh] = None, chunk: Optional[int] = None
                            ) -> dict[str, np.ndarray]:
    """Var_x(E_q[z|x]) per unit over ``images`` (uint8 [N, H, W, C]): {layer: [D_layer]}.
    ``chunk``: see ``posterior_means``."""
    key = jax.random.key(0) if key is None else key
    fn = make_posterior_means_fn(model, binarization=binarization, num_samples=num_samples,
                                 chunk=chunk)
    batch_size = min(batch_size, len(images))
    means = per_example(fn, params, images, key, batch_size=batch_size, mesh=mesh,
                        progress=False)
    return variance_over_examples(means)


def variance_over_examples(means: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{layer: E_q[z|x] [N, D]} -> {layer: Var_x [D]} (float64)."""
    return {layer: np.var(np.asarray(m, np.float64), axis=0) for layer, m in means.items()}


def count_active(variances: dict[str, np.ndarray], threshold: float = THRESHOLD
                 ) -> dict[str, int]:
    """{layer: Var_x [D]} -> {layer: #{u : Var_x > threshold}}."""
    return {layer: int(np.sum(v > threshold)) for layer, v in variances.items()}


def active_units(params, images: np.ndarray, *, model: nn.Module, threshold: float = THRESHOLD,
                 key: Optional[jax.Array] = None, binarization: str = "dynamic",
                 num_samples: int = DEFAULT_SAMPLES, batch_size: int = 1000,
                 mesh: Optional[Mesh] = None, chunk: Optional[int] = None) -> dict[str, int]:
    """Number of active units per layer: #{u : Var_x(E_q[u|x]) > threshold}.

    images: uint8 [N, H, W, C], preprocessed with ``binarization`` (a fixed ``key`` gives a
    fixed binarization and fixed Monte Carlo draws). Returns {layer: count}.
    """
    var = posterior_mean_variance(params, images, model=model, key=key,
                                  binarization=binarization, num_samples=num_samples,
                                  batch_size=batch_size, mesh=mesh, chunk=chunk)
    return count_active(var, threshold)
