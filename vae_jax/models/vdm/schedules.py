"""Noise schedules γ(t) of a variational diffusion model, and the draw of diffusion times.

Conventions (Kingma et al. 2021, variance preserving): z_t = α_t x + σ_t ε with
α_t² = sigmoid(−γ(t)), σ_t² = sigmoid(γ(t)), SNR(t) = α_t²/σ_t² = exp(−γ(t)); γ increases
from γ(0) = γ₀ (``gamma_min``, high SNR) to γ(1) = γ₁ (``gamma_max``, almost pure noise).

Three schedules, one module (``NoiseSchedule``):

* ``"fixed_linear"``  γ(t) = (1 − t) γ₀ + t γ₁, no parameters.
* ``"learned_linear"`` (the paper's learned scalar schedule) γ(t) = γ₀ + softplus(w) t with
  γ₀ and w learned; initialised at the configured endpoints.
* ``"learned_net"``   the paper's monotone network
  γ̃(t) = a t + Σ_j h_j sigmoid(k_j (t − c_j)) with a, k_j, h_j > 0 (softplus of free
  parameters), so γ̃ is strictly increasing, then mapped affinely onto the endpoints:
  γ(t) = (1 − f) γ₀ + f γ₁ with f = (γ̃(t) − γ̃(0)) / (γ̃(1) − γ̃(0)). The value of f is
  clipped to [0, 1] and set to exactly 0 / 1 at t = 0 / 1 (its derivative is untouched), so
  γ(0) = γ₀ and γ(1) = γ₁ hold bit for bit whatever the parameters. With
  ``learn_endpoints`` the endpoints are parameters of their own (γ₁ = γ₀ + softplus(·) > γ₀).

``gamma_fn()`` returns γ as a pure function of t (the parameters read once), so callers can
take γ′(t) with ``jax.jvp`` without a Flax transform.
"""

from __future__ import annotations

import math
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.ops import random

SCHEDULES = ("fixed_linear", "learned_linear", "learned_net")


def alpha_sigma_sq(gamma: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(α², σ²) = (sigmoid(−γ), sigmoid(γ)), elementwise."""
    return jax.nn.sigmoid(-gamma), jax.nn.sigmoid(gamma)


def snr(gamma: jax.Array) -> jax.Array:
    """SNR = α²/σ² = exp(−γ), elementwise."""
    return jnp.exp(-gamma)


def linear_gamma(t: jax.Array, gamma_min: float | jax.Array, gamma_max: float | jax.Array
                 ) -> jax.Array:
    """(1 − t) γ₀ + t γ₁: exact at both ends in floating point."""
    return (1.0 - t) * gamma_min + t * gamma_max


def _inv_softplus(y: float) -> float:
    return y + math.log(-math.expm1(-y))   # log(eʸ − 1), stable for large y


def _positive(raw: jax.Array) -> jax.Array:
    return jax.nn.softplus(raw)


def _monotone_net(p: dict, t: jax.Array) -> jax.Array:
    """γ̃(t) = a t + Σ_j h_j sigmoid(k_j (t − c_j)), a, k_j, h_j > 0: t [...] -> [...].

    The paper's l₁ → l₂ → sigmoid → l₃ network with positive weights, its 1→1 affine first
    layer folded into the hidden units' steepness k_j and centres c_j (same function class).
    """
    h = jax.nn.sigmoid(_positive(p["w2"]) * (t[..., None] - p["c"]))     # [..., H]
    return _positive(p["w1"]) * t + jnp.sum(_positive(p["w3"]) * h, axis=-1)


def _unit_fraction(net: Callable[[jax.Array], jax.Array], t: jax.Array) -> jax.Array:
    """f(t) = (γ̃(t) − γ̃(0)) / (γ̃(1) − γ̃(0)) with value exactly 0 / 1 at the ends."""
    ends = net(jnp.array([0.0, 1.0], t.dtype))
    f = (net(t) - ends[0]) / (ends[1] - ends[0])
    exact = jnp.where(t <= 0.0, 0.0, jnp.where(t >= 1.0, 1.0, jnp.clip(f, 0.0, 1.0)))
    return f + jax.lax.stop_gradient(exact - f)   # exact values, f's derivative


class NoiseSchedule(nn.Module):
    """γ(t): t [...] in [0, 1] -> γ [...] (elementwise).

    Attributes:
      kind: one of ``SCHEDULES``.
      gamma_min, gamma_max: γ₀ = γ(0) and γ₁ = γ(1) (initial values where learned).
      learn_endpoints: ``learned_net`` only: learn γ₀ and γ₁ (else they stay fixed).
      hidden: width of the monotone network's hidden layer (``learned_net``).
    """

    kind: str = "fixed_linear"
    gamma_min: float = -13.3
    gamma_max: float = 5.0
    learn_endpoints: bool = False
    hidden: int = 64

    def setup(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"Unknown noise schedule {self.kind!r}; valid: {SCHEDULES}. "
                             "Set config.model.schedule.")
        if not self.gamma_max > self.gamma_min:
            raise ValueError(f"config.model.gamma_max={self.gamma_max} must exceed "
                             f"gamma_min={self.gamma_min} (γ increases from t = 0 to 1).")
        gap = _inv_softplus(self.gamma_max - self.gamma_min)
        learned_ends = self.kind == "learned_linear" or (
            self.kind == "learned_net" and self.learn_endpoints)
        if learned_ends:
            self.g0 = self.param("gamma_min", nn.initializers.constant(self.gamma_min), ())
            self.gap_raw = self.param("gamma_gap", nn.initializers.constant(gap), ())
        if self.kind == "learned_net":
            normal = nn.initializers.normal(1.0)
            steep = lambda k, shape: 2.0 + normal(k, shape)  # noqa: E731  (k ≈ 2: bends in [0, 1])
            self.net = {
                "w1": self.param("w1", normal, ()),
                "w2": self.param("w2", steep, (self.hidden,)),
                "c": self.param("c", nn.initializers.uniform(1.0), (self.hidden,)),
                "w3": self.param("w3", normal, (self.hidden,)),
            }

    def endpoints(self) -> tuple[jax.Array, jax.Array]:
        """(γ₀, γ₁) as scalars."""
        if self.kind == "learned_linear" or (self.kind == "learned_net" and self.learn_endpoints):
            return self.g0, self.g0 + _positive(self.gap_raw)
        return jnp.float32(self.gamma_min), jnp.float32(self.gamma_max)

    def gamma_fn(self) -> Callable[[jax.Array], jax.Array]:
        """γ as a pure function t [...] -> [...] (closes over the parameters)."""
        g0, g1 = self.endpoints()
        if self.kind == "learned_net":
            net = dict(self.net)
            return lambda t: linear_gamma(_unit_fraction(lambda u: _monotone_net(net, u), t),
                                          g0, g1)
        return lambda t: linear_gamma(t, g0, g1)

    def __call__(self, t: jax.Array) -> jax.Array:
        return self.gamma_fn()(t)


def sample_times(key: jax.Array, num: int, *, antithetic: bool = True) -> jax.Array:
    """Diffusion times t [num] in [0, 1).

    antithetic: the low-discrepancy draw t_i = (u + i/num) mod 1 with one u ~ U(0, 1)
    (Kingma et al. 2021, App. I): every t_i is still U(0, 1), so estimates stay unbiased,
    and the num times cover [0, 1) evenly, which lowers the variance of their average.
    Otherwise num i.i.d. U(0, 1) times.
    """
    if not antithetic:
        return random.uniform(key, (num,))
    u = random.uniform(key, (1,))[0]
    return jnp.mod(u + jnp.arange(num, dtype=jnp.float32) / num, 1.0)


def discretize_times(t: jax.Array, *, timesteps: int) -> tuple[jax.Array, jax.Array]:
    """t [...] ~ U[0, 1) -> (s, t') with t' = (⌊t T⌋ + 1)/T uniform on {1/T, …, 1}, s = t' − 1/T."""
    i = jnp.floor(t * timesteps) + 1.0
    return (i - 1.0) / timesteps, i / timesteps
