"""Objectives as pure functions of (params, x, key), chosen by name from a registry.

``elbo_terms`` returns per-example terms, each [B], in nats; the caller averages them,
applies β or converts them to bits/dim. Every registered objective has one signature,
``fn(params, x, key, *, model, beta, **options) -> (loss, metrics)``, ready for
``jax.value_and_grad(..., has_aux=True)``: ``beta`` is the step's β (the trainer passes the
schedule's value; objectives that have no β declare it so and are validated to β = 1), and
``options`` are the ``config.loss`` fields the objective declares when it registers. Bind
them with ``bind`` (``functools.partial``) before ``jax.jit``; a new objective is a
function plus ``@register`` and a config, and the trainer stays untouched.

Every model exposes ``terms(x, key, num_samples)`` (see ``models.vae.VAE.terms``); these
functions only combine what it returns, so hierarchical models reuse them unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.distributions import gaussian_kl_elementwise


def gaussian_kl(mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """KL(N(mean, diag exp(log_std)²) || N(0, I)) in closed form.

    mean, log_std: [B, D] -> [B].
    """
    return jnp.sum(gaussian_kl_elementwise(mean, log_std), axis=-1)


def _model_terms(params, x, key, model: nn.Module, num_samples: int) -> dict:
    return model.apply(params, x, key, num_samples, method="terms")


def _kl_per_layer(kl: dict) -> dict[str, jax.Array]:
    """{layer: [B, D_l]} -> {layer: [B]}."""
    return {name: jnp.sum(v.reshape(v.shape[0], -1), axis=-1) for name, v in kl.items()}


def _per_example(t: dict) -> dict[str, jax.Array]:
    log_px_z = jnp.mean(t["log_px_z"], axis=0)
    layers = _kl_per_layer(t["kl"])
    kl = sum(layers.values())
    out = {"log_px_z": log_px_z, "kl": kl, "elbo": log_px_z - kl}
    if len(layers) > 1:
        out.update({f"kl_{name}": v for name, v in layers.items()})
    return out


def elbo_terms(params, x: jax.Array, key: jax.Array, *, model: nn.Module,
               num_samples: int = 1) -> dict[str, jax.Array]:
    """Per-example ELBO pieces, each [B] in nats.

    x: [B, H, W, C] float. ``log_px_z`` is the L-sample Monte Carlo estimate of
    E_q[log p(x|z)] (L = num_samples); ``kl`` is KL(q(z|x) || p(z)) in closed form (summed
    over layers; hierarchical models add ``kl_<layer>`` entries); elbo = log_px_z − kl.
    """
    return _per_example(_model_terms(params, x, key, model, num_samples))


@dataclasses.dataclass(frozen=True)
class Objective:
    """A registered objective: the function, the ``config.loss`` fields it reads, and
    whether it weights a KL term by β (else β must be 1 with no warm-up)."""

    fn: Callable
    options: tuple[str, ...]
    takes_beta: bool


_LOSSES: dict[str, Objective] = {}


def register(name: str, *, options: tuple[str, ...] = ("num_samples",), takes_beta: bool = True):
    """Decorator: register ``fn(params, x, key, *, model, beta, **options)`` as ``name``."""
    def wrap(fn: Callable) -> Callable:
        if name in _LOSSES:
            raise ValueError(f"Loss {name!r} is registered twice.")
        _LOSSES[name] = Objective(fn, tuple(options), takes_beta)
        return fn
    return wrap


@register("elbo", options=("num_samples", "free_bits"))
def elbo(params, x: jax.Array, key: jax.Array, *, model: nn.Module,
         beta: float | jax.Array = 1.0, num_samples: int = 1, free_bits: float = 0.0):
    """Negative (β-)ELBO averaged over the batch, and metrics.

    loss = −mean_B[log p(x|z)] + β · Σ_j max(free_bits, mean_B KL_j), where j runs over
    latent dimensions (free bits, Kingma et al. 2016: the floor is in nats per dimension and
    applied to the batch-averaged KL). With free_bits = 0 this is −mean(log_px_z − β kl).
    The floor's gradient to KL_j is 0 below it, β above and β/2 exactly at it
    (``jnp.maximum``'s rule: the average of the two sides).
    ``beta`` may be traced (a KL warm-up schedule passes the step's value).

    Returns (loss scalar, metrics dict of scalars); metrics report the true ELBO terms.
    """
    t = _model_terms(params, x, key, model, num_samples)
    terms = _per_example(t)
    if free_bits > 0.0:
        kl_term = sum(jnp.sum(jnp.maximum(free_bits, jnp.mean(v.reshape(v.shape[0], -1), 0)))
                      for v in t["kl"].values())
    else:
        kl_term = jnp.mean(terms["kl"])
    loss = -jnp.mean(terms["log_px_z"]) + beta * kl_term
    metrics = {name: jnp.mean(v) for name, v in terms.items()}
    metrics["loss"] = loss
    return loss, metrics


def log_importance_weights(params, x: jax.Array, key: jax.Array, *, model: nn.Module,
                           num_samples: int) -> jax.Array:
    """log w_l = log p(x, z_l) − log q(z_l | x), z_l ~ q(z|x): [L, B]."""
    t = _model_terms(params, x, key, model, num_samples)
    return t["log_px_z"] + t["log_pz"] - t["log_qz"]


def iwae_bound(params, x: jax.Array, key: jax.Array, *, model: nn.Module,
               num_samples: int) -> jax.Array:
    """IWAE bound log (1/k) Σ_i p(x, z_i)/q(z_i|x) per example: [B] (Burda et al. 2015)."""
    log_w = log_importance_weights(params, x, key, model=model, num_samples=num_samples)
    return jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)


@register("iwae", options=("num_samples",), takes_beta=False)
def iwae(params, x: jax.Array, key: jax.Array, *, model: nn.Module,
         beta: float | jax.Array = 1.0, num_samples: int = 5):
    """Negative IWAE-k bound averaged over the batch, and metrics (as ``elbo``).

    The IWAE bound has no β (registered with ``takes_beta=False``: ``config.validate``
    requires β = 1 and no warm-up), so ``beta`` is accepted for the common signature only.
    """
    del beta  # always 1: see the docstring
    t = _model_terms(params, x, key, model, num_samples)
    log_w = t["log_px_z"] + t["log_pz"] - t["log_qz"]
    bound = jax.nn.logsumexp(log_w, axis=0) - math.log(num_samples)
    terms = _per_example(t)
    loss = -jnp.mean(bound)
    metrics = {name: jnp.mean(v) for name, v in terms.items()}
    metrics.update(loss=loss, iwae=jnp.mean(bound))
    return loss, metrics


def unregister(name: str) -> None:
    """Remove objective ``name`` from the registry (e.g. one a notebook or test defined)."""
    _LOSSES.pop(name, None)


def names() -> list[str]:
    return sorted(_LOSSES)


def objective(name: str) -> Objective:
    """The registered objective ``name`` (its function, options and β handling)."""
    if name not in _LOSSES:
        raise ValueError(f"Unknown loss {name!r}; valid: {names()}. Set config.loss.name.")
    return _LOSSES[name]


def get(name: str) -> Callable:
    """Objective function by name: ``fn(params, x, key, *, model, beta, **options)``."""
    return objective(name).fn


def beta_schedule(step: jax.Array, *, beta: float = 1.0, warmup_steps: int = 0) -> jax.Array:
    """KL warm-up: β rises linearly from 0 to ``beta`` over ``warmup_steps`` steps."""
    if warmup_steps <= 0:
        return jnp.asarray(beta, jnp.float32)
    frac = jnp.minimum(1.0, step.astype(jnp.float32) / warmup_steps)
    return beta * frac


def bind(name: str, model: nn.Module, **options) -> Callable:
    """``partial(get(name), model=model, **options)``: ``(params, x, key, *, beta) -> (loss,
    metrics)``. Options the objective did not declare are refused, naming them."""
    unknown = sorted(set(options) - set(objective(name).options))
    if unknown:
        raise ValueError(f"Loss {name!r} takes the options {list(objective(name).options)}; "
                         f"got also {unknown}.")
    return functools.partial(get(name), model=model, **options)
