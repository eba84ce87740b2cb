"""Evaluation on a held-out set: per-example ELBO terms and importance-sampled log p(x)
(k up to 5000, streamed in chunks), streamed over batches on device, data parallel.

Build the jitted batch function once (``make_elbo_fn``) and reuse it across evaluations so
nothing recompiles; ``per_example`` streams a data set through it, data parallel.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from vae_jax import losses, parallel
from vae_jax.parallel import PROGRESS_MIN_BATCHES, per_example  # noqa: F401 (public here too)
from vae_jax.data.batches import preprocess
from vae_jax import distributions as dist
from vae_jax.models.vae import VAE
from vae_jax.precision import EVAL_PRECISION, at_precision
from vae_jax.ops import random
from vae_jax.ops.compile import jit_eval


def elbo_batch(params, x: jax.Array, key: jax.Array, *, model: nn.Module, binarization: str,
               num_samples: int) -> dict[str, jax.Array]:
    """Per-example ELBO terms {name: [b]} of uint8 images x [b, H, W, C], binarized with
    the first half of ``key`` (``make_elbo_fn`` jit-compiles it)."""
    k_bin, k_z = jax.random.split(key)
    xf = preprocess(x, k_bin, binarization=binarization)
    return losses.elbo_terms(params, xf, k_z, model=model, num_samples=num_samples)


def make_elbo_fn(model: nn.Module, *, binarization: str, num_samples: int = 1,
                 precision: Optional[str] = EVAL_PRECISION) -> Callable:
    """jit(params, x_uint8 [b, H, W, C], key) -> per-example ELBO terms {name: [b]}.

    With dynamic binarization each batch is binarized with its own key, so a fixed key
    gives one fixed binarization of the test set across evaluations. ``precision``: see
    ``at_precision`` (float32 products by default).
    """
    return jit_eval(at_precision(functools.partial(
        elbo_batch, model=model, binarization=binarization, num_samples=num_samples),
        precision))


def summarize(values: dict[str, np.ndarray], prefix: str = "") -> dict[str, float]:
    """Means of per-example values: {prefix + name: float}."""
    return {prefix + k: float(np.mean(v)) for k, v in values.items()}


# ------------------------------------------------------------- importance-sampled log p(x)

def _sample_keys(key: jax.Array, start: jax.Array, num: int) -> jax.Array:
    """Keys fold_in(key, j) for sample indices j = start .. start + num − 1: [num]."""
    return jax.vmap(lambda j: jax.random.fold_in(key, j))(start + jnp.arange(num))


def _vae_chunk_log_weights(params, x, q_mean, q_log_std, key, start, *, model: VAE,
                           chunk: int) -> jax.Array:
    """log w_j = log p(x|z_j) + log p(z_j) − log q(z_j|x) for samples j in one chunk.

    The encoder ran once outside the loop; z_j = μ + σ ε_j with ε_j drawn from
    fold_in(key, j), so the samples do not depend on the chunk size. Returns [chunk, B].
    """
    b, d = q_mean.shape
    eps = jax.vmap(lambda k: random.normal(k, (b, d), q_mean.dtype))(
        _sample_keys(key, start, chunk))                       # [chunk, B, D]
    z = q_mean + jnp.exp(q_log_std) * eps
    p = model.apply(params, z.reshape(chunk * b, d), method="decode")
    # [chunk · B, H, W, C, ...] -> [chunk, B, H·W·C, ...] with a 1-axis event, so x
    # broadcasts instead of being tiled k times and the event sum is one contiguous axis:
    # XLA:CPU reduces (H, W, C) of a broadcast operand about 5x slower than one flat axis.
    img = x.shape[1:]
    npix = math.prod(img)
    if getattr(p, "event_ndim", None) == 3 and all(
            a.shape[1:4] == img for a in jax.tree.leaves(p)):
        p = jax.tree.map(lambda a: a.reshape(chunk, b, npix, *a.shape[4:]), p)
        log_px_z = p.replace(event_ndim=1).log_prob(x.reshape(b, npix))
    else:
        p = jax.tree.map(lambda a: a.reshape(chunk, b, *a.shape[1:]), p)
        log_px_z = p.log_prob(x)
    # log N(z; 0, I) − log N(z; μ, σ²) = Σ_d ½(ε² − z²) + log σ   (the 2π terms cancel)
    log_pz_qz = jnp.sum(0.5 * (eps * eps - z * z) + q_log_std, axis=-1)
    return log_px_z + log_pz_qz


def _sample_state(params, x: jax.Array, key: jax.Array, *, model: nn.Module) -> dict:
    """What every chunk of samples reads: the model inputs x [B, ...] and the sample key,
    and for a ``VAE`` its encoder's q(z|x) (run once per image, not once per chunk)."""
    if isinstance(model, VAE):
        q = model.apply(params, x, method="encode")
        return {"x": x, "key": key, "q_mean": q.mean, "q_log_std": q.log_std}
    return {"x": x, "key": key}


def _accumulate(params, state: dict, i: jax.Array, acc: jax.Array, *, model: nn.Module,
                num_samples: int, chunk: int) -> jax.Array:
    """acc [B] ⊕ logsumexp of chunk i's log-weights (samples i·chunk .. (i+1)·chunk − 1;
    those past ``num_samples`` weigh 0)."""
    start = i * chunk
    if "q_mean" in state:
        log_w = _vae_chunk_log_weights(params, state["x"], state["q_mean"],
                                       state["q_log_std"], state["key"], start, model=model,
                                       chunk=chunk)                       # [chunk, B]
    else:
        k_i = jax.random.fold_in(state["key"], start // chunk)
        log_w = losses.log_importance_weights(params, state["x"], k_i, model=model,
                                              num_samples=chunk)
    valid = (start + jnp.arange(chunk) < num_samples)[:, None]
    log_w = jnp.where(valid, log_w, -jnp.inf)
    return jnp.logaddexp(acc, jax.nn.logsumexp(log_w, axis=0))


def _check_counts(num_samples: int, chunk: int) -> tuple[int, int]:
    """(chunk, number of chunks) for k = ``num_samples`` drawn ``chunk`` at a time."""
    if num_samples <= 0 or chunk <= 0:
        raise ValueError(f"num_samples={num_samples} and chunk={chunk} must be positive.")
    chunk = min(chunk, num_samples)
    return chunk, -(-num_samples // chunk)


def log_importance_sampled(params, x: jax.Array, key: jax.Array, *, model: nn.Module,
                           num_samples: int, chunk: int) -> jax.Array:
    """log (1/k) Σ_{j<k} p(x, z_j) / q(z_j|x), z_j ~ q(z|x), streamed in chunks: [B].

    x: [B, H, W, C] float (model inputs). The k samples are drawn ``chunk`` at a time inside
    one ``lax.scan`` and folded into a running logsumexp, so memory is O(chunk · B) whatever
    k is. For a ``VAE`` the encoder runs once per image and sample j uses
    fold_in(key, j): the value is the same for every chunk size. Other models (any
    ``terms`` provider) draw chunk i with ``terms(x, fold_in(key, i), chunk)``.
    With k = num_samples this is the IWAE-k bound; k = 5000 is the usual log p(x) estimate.
    (``make_log_likelihood_fn`` computes the same sum one chunk per device call.)
    """
    chunk, num_chunks = _check_counts(num_samples, chunk)
    state = _sample_state(params, x, key, model=model)

    def body(acc, i):
        return _accumulate(params, state, i, acc, model=model, num_samples=num_samples,
                           chunk=chunk), None

    init = jnp.full((x.shape[0],), -jnp.inf, jnp.float32)
    acc, _ = jax.lax.scan(body, init, jnp.arange(num_chunks))
    return acc - math.log(num_samples)


def _preprocess(x, key, binarization: Optional[str]):
    if binarization is None:
        if jnp.issubdtype(x.dtype, jnp.integer):
            raise ValueError("uint8 images need a binarization ('dynamic', 'static' or "
                             "'none'); binarization=None means x already holds model inputs.")
        return x
    return preprocess(x, key, binarization=binarization)


def _log_likelihood_batch(params, x, key, *, model, binarization, num_samples, chunk):
    k_bin, k_z = jax.random.split(key)  # the same split as the ELBO: same binarized test set
    xf = _preprocess(x, k_bin, binarization)
    return {"log_px": log_importance_sampled(params, xf, k_z, model=model,
                                             num_samples=num_samples, chunk=chunk)}


def _batch_state(params, x, key, *, model, binarization):
    """(``_sample_state`` of the batch, the empty sum −inf [b]), made on the devices."""
    k_bin, k_z = jax.random.split(key)  # as _log_likelihood_batch
    return (_sample_state(params, _preprocess(x, k_bin, binarization), k_z, model=model),
            jnp.full((x.shape[0],), -jnp.inf, jnp.float32))


class LogLikelihoodFn:
    """(params, x [b, H, W, C], key) -> {"log_px": [b]}, the k-sample estimate, computed
    one chunk of samples per device call (``make_log_likelihood_fn``).

    A call of all k samples at once can run for minutes (k = 5000 on a CPU); one chunk per
    call lets ``parallel.between_calls`` act between them (a stop signal ends an evaluation
    within one chunk's time). Traced inside another ``jit`` it is the one-program form
    (``lax.scan`` over the chunks, the same sum); ``lower`` lowers that form.
    """

    def __init__(self, model: nn.Module, *, binarization: Optional[str], num_samples: int,
                 chunk: int, precision: Optional[str]):
        self.num_samples = num_samples
        self.chunk, self.num_chunks = _check_counts(num_samples, chunk)
        self.whole = jit_eval(at_precision(functools.partial(
            _log_likelihood_batch, model=model, binarization=binarization,
            num_samples=num_samples, chunk=chunk), precision))
        self.lower = self.whole.lower
        self._state = jit_eval(at_precision(functools.partial(
            _batch_state, model=model, binarization=binarization), precision))
        self._accumulate = jit_eval(at_precision(functools.partial(
            _accumulate, model=model, num_samples=num_samples, chunk=self.chunk), precision))

    def __call__(self, params, x, key) -> dict[str, jax.Array]:
        if self.num_chunks == 1 or any(isinstance(a, jax.core.Tracer)
                                       for a in jax.tree.leaves((params, x, key))):
            return self.whole(params, x, key)
        state, acc = self._state(params, x, key)
        waiting = None
        for i in range(self.num_chunks):
            acc = self._accumulate(params, state, np.int32(i), acc)
            if parallel.checking():  # the chunk before has finished: at most one queued
                if waiting is not None:
                    jax.block_until_ready(waiting)
                waiting = acc
            parallel.between_calls()
        return {"log_px": acc - math.log(self.num_samples)}


def make_log_likelihood_fn(model: nn.Module, *, binarization: Optional[str], num_samples: int,
                           chunk: int = 100, precision: Optional[str] = EVAL_PRECISION
                           ) -> LogLikelihoodFn:
    """(params, x [b, H, W, C], key) -> {"log_px": [b]}, the k-sample estimate, one chunk
    of samples per device call (``LogLikelihoodFn``; one ``jit`` program when traced).

    ``binarization`` preprocesses uint8 images as in training (the batch key is split as in
    ``make_elbo_fn``, so both see the same binarization); None takes float model inputs.
    ``precision``: see ``at_precision`` (float32 products by default).
    """
    return LogLikelihoodFn(model, binarization=binarization, num_samples=num_samples,
                           chunk=chunk, precision=precision)


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean of per-example values [N] and its standard error std / √N (ddof = 1)."""
    values = np.asarray(values, np.float64)
    n = len(values)
    stderr = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return float(np.mean(values)), stderr


def log_likelihood(params, images: np.ndarray, key: jax.Array, *, model: nn.Module,
                   num_samples: int = 5000, chunk: int = 100, batch_size: int = 100,
                   binarization: Optional[str] = None, mesh: Optional[Mesh] = None,
                   fn: Optional[Callable] = None,
                   precision: Optional[str] = EVAL_PRECISION) -> dict:
    """Importance-sampled log p(x) (Burda et al. 2015) of every image, data parallel.

    images: [N, H, W, C] (uint8 with a ``binarization``, or float model inputs with None).
    Each batch of ``batch_size`` images is sharded over the mesh; within it the k samples
    are streamed ``chunk`` at a time (memory O(chunk · batch_size), any k).
    Returns {"log_px": np.ndarray [N] nats, "mean": float, "stderr": float,
    "bpd": float, "bpd_stderr": float, "num_samples": k}; bits/dim is −log p(x)/(D ln 2),
    a true figure only for discrete likelihoods (binary pixels or 8-bit pixels).
    Pass ``fn`` (from ``make_log_likelihood_fn``) to reuse a compiled function.
    ``precision``: of the matrix products (``at_precision``; float32 by default).
    """
    fn = fn or make_log_likelihood_fn(model, binarization=binarization,
                                      num_samples=num_samples, chunk=chunk,
                                      precision=precision)
    values = per_example(fn, params, images, key, batch_size=batch_size, mesh=mesh)["log_px"]
    mean, stderr = mean_and_stderr(values)
    num_dims = int(np.prod(np.shape(images)[1:]))
    return {"log_px": values, "mean": mean, "stderr": stderr,
            "bpd": float(dist.bits_per_dim(mean, num_dims)),
            "bpd_stderr": stderr / (num_dims * math.log(2.0)), "num_samples": num_samples}
