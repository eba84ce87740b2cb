"""The evaluation suite, one for the training loop and ``--mode=eval``: the test ELBO and
its terms, active units per layer, and (for ``--mode=eval``) each layer's number of units,
the IWAE-k bound and the importance-sampled log p(x), in nats and, for 8-bit likelihoods,
bits/dim.

Build a ``Suite`` once per model (``from_config`` reads ``config.eval``) and run it at every evaluation: its compiled functions are
reused, so nothing recompiles. Every figure of one run sees the same binarized test set
(one evaluation key, batches keyed as in ``parallel.per_example``).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Optional

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from vae_jax import distributions as dist
from vae_jax import parallel
from vae_jax.config.checks import is_8bit
from vae_jax.evaluate import active_units
from vae_jax.evaluate.likelihood import (elbo_batch, log_likelihood, make_elbo_fn,
                                         mean_and_stderr, summarize)
from vae_jax.ops.compile import jit_eval
from vae_jax.parallel import per_example
from vae_jax.precision import EVAL_PRECISION, at_precision


class Suite:
    """The evaluation of one model on held-out uint8 images [N, H, W, C].

    ``batch_size`` images per ELBO batch (``num_samples`` draws each); ``iwae_k`` and
    ``num_importance_samples`` (0 skips either) are streamed ``chunk`` samples at a time
    over ``ll_batch_size`` images (0: ``batch_size``); so are the ``au_samples`` draws of
    the active units' posterior means (for layers that need draws). ``bits_per_dim``: also
    report bits/dim (only meaningful for likelihoods over 8-bit pixels).
    """

    def __init__(self, model: nn.Module, mesh: Mesh, *, binarization: str, batch_size: int,
                 num_samples: int = 1, precision: Optional[str] = EVAL_PRECISION,
                 iwae_k: int = 0, num_importance_samples: int = 0, chunk: int = 100,
                 ll_batch_size: int = 0, au_samples: int = active_units.DEFAULT_SAMPLES,
                 bits_per_dim: bool = False):
        self.model, self.mesh, self.binarization = model, mesh, binarization
        self.batch_size, self.precision, self.chunk = batch_size, precision, chunk
        self.ll_batch_size = ll_batch_size or batch_size
        self.bounds = {"iwae": iwae_k, "log_px": num_importance_samples}
        self.bits_per_dim, self.au_samples = bits_per_dim, au_samples
        self.elbo_fn = make_elbo_fn(model, binarization=binarization,
                                    num_samples=num_samples, precision=precision)
        self._with_means_fn = jit_eval(at_precision(functools.partial(
            _elbo_and_means, model=model, binarization=binarization, num_samples=num_samples,
            au_samples=au_samples, chunk=chunk), precision))

    def elbo(self, params, images: np.ndarray, key: jax.Array) -> dict[str, np.ndarray]:
        """Per-example ELBO terms {name: [N]} (nats)."""
        return per_example(self.elbo_fn, params, images, key,
                           batch_size=self.batch_size, mesh=self.mesh)

    def elbo_and_active_units(self, params, images: np.ndarray, key: jax.Array
                              ) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """``elbo`` and ``active_units`` of the same images in one pass: one program whose
        encoder runs once per batch (XLA merges the two identical computations), with the
        same values as the two calls."""
        terms, means = self.elbo_and_means(params, images, key)
        counts = active_units.count_active(active_units.variance_over_examples(means))
        return terms, {f"test_au_{layer}": float(n) for layer, n in counts.items()}

    def elbo_and_means(self, params, images: np.ndarray, key: jax.Array
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(per-example ELBO terms {name: [N]}, posterior means {layer: [N, D]})."""
        out = per_example(self._with_means_fn, params, images, key,
                          batch_size=self.batch_size, mesh=self.mesh)
        return out["terms"], out["means"]

    def active_units(self, params, images: np.ndarray, key: jax.Array) -> dict[str, float]:
        """{"test_au_<layer>": active units} (Burda et al.'s A_u > 10⁻²)."""
        counts = active_units.active_units(params, images, model=self.model, key=key,
                                           mesh=self.mesh, binarization=self.binarization,
                                           batch_size=self.batch_size,
                                           num_samples=self.au_samples, chunk=self.chunk)
        return {f"test_au_{layer}": float(n) for layer, n in counts.items()}

    def latent_units(self, params, images: np.ndarray, key: jax.Array) -> dict[str, int]:
        """{"latent_units_<layer>": units in the layer}: what its active units are counted
        out of. Shapes only (traced on one image, nothing computed)."""
        means = jax.eval_shape(functools.partial(
            active_units.means_batch, model=self.model, binarization=self.binarization,
            num_samples=1), params, images[:1], key)
        return {f"latent_units_{layer}": math.prod(m.shape[1:]) for layer, m in means.items()}

    def bounds_and_likelihood(self, params, images: np.ndarray, key: jax.Array
                              ) -> dict[str, float]:
        """The IWAE-k bound and log p(x) (mean, standard error, k, chunk, seconds)."""
        parallel.check_batch_size(self.ll_batch_size, self.mesh, "config.eval.ll_batch_size")
        out = {}
        if not getattr(self.model, "exact_log_weights", True):
            # e.g. a continuous-time diffusion model: no per-trajectory importance weights
            return {"log_px_note": "not estimated: this model has no exact per-sample "
                                   "importance weights (see its exact_log_weights)"}
        for name, k in self.bounds.items():
            if k <= 0:
                continue
            t0 = time.perf_counter()
            ll = log_likelihood(params, images, key, model=self.model, num_samples=k,
                                chunk=self.chunk, batch_size=self.ll_batch_size,
                                binarization=self.binarization, mesh=self.mesh,
                                precision=self.precision)
            out |= {f"test_{name}": ll["mean"], f"test_{name}_stderr": ll["stderr"],
                    f"{name}_k": k, f"{name}_chunk": self.chunk,
                    f"{name}_seconds": time.perf_counter() - t0}
            if self.bits_per_dim:
                out |= {f"test_{name}_bpd": ll["bpd"],
                        f"test_{name}_bpd_stderr": ll["bpd_stderr"]}
        return out


def from_config(config: ml_collections.ConfigDict, model: nn.Module, mesh: Mesh) -> Suite:
    """The ``Suite`` of ``config.eval`` for ``model`` (bits/dim for 8-bit likelihoods)."""
    ev = config.eval
    return Suite(model, mesh, binarization=config.data.binarization, batch_size=ev.batch_size,
                 num_samples=ev.num_samples, precision=ev.matmul_precision, iwae_k=ev.iwae_k,
                 num_importance_samples=ev.num_importance_samples, chunk=ev.chunk,
                 ll_batch_size=ev.ll_batch_size, au_samples=ev.au_samples,
                 bits_per_dim=is_8bit(config))


def _elbo_and_means(params, x, key, *, model, binarization, num_samples, au_samples, chunk):
    """{"terms": per-example ELBO terms {name: [b]}, "means": {layer: E_q[z|x] [b, D]}} of
    uint8 x [b, H, W, C]: ``likelihood.elbo_batch`` and the active units' posterior means
    (``au_samples`` draws, ``chunk`` at a time), binarized and keyed as each is alone."""
    return {"terms": elbo_batch(params, x, key, model=model,
                                binarization=binarization, num_samples=num_samples),
            "means": active_units.means_batch(params, x, key, model=model,
                                              binarization=binarization,
                                              num_samples=au_samples, chunk=chunk)}


def run_suite(suite: Suite, params, images: np.ndarray, key: jax.Array, *,
              likelihood: bool = False,
              active_units_images: Optional[np.ndarray] = None) -> dict[str, float]:
    """Evaluate ``params`` on ``images``: {"test_<term>": mean nats, "test_au_<layer>": n}.

    ``likelihood`` (``--mode=eval``) adds the ELBO's standard error and time, the number of
    units in each latent layer ("latent_units_<layer>"), the IWAE-k bound and log p(x), and
    bits/dim for 8-bit likelihoods. Active units are counted on ``active_units_images``
    (default: ``images``).
    """
    t0 = time.perf_counter()
    if active_units_images is None:
        test, units = suite.elbo_and_active_units(params, images, key)
    else:
        test = suite.elbo(params, images, key)
        units = suite.active_units(params, active_units_images, key)
    result = summarize(test, prefix="test_") | units
    if not likelihood:
        return result
    result |= {"test_elbo_stderr": mean_and_stderr(test["elbo"])[1],
               "elbo_seconds": time.perf_counter() - t0}
    result |= suite.latent_units(params, images, key)
    result |= suite.bounds_and_likelihood(params, images, key)
    if suite.bits_per_dim:
        result["test_elbo_bpd"] = float(dist.bits_per_dim(
            result["test_elbo"], math.prod(np.shape(images)[1:])))
    return result
