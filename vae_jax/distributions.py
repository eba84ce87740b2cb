"""Probability distributions used by the ELBO machinery.

Every distribution is a pytree (``flax.struct.dataclass``) so it can cross ``jit`` and
``vmap`` boundaries. ``event_ndim`` trailing axes form one event: ``log_prob`` sums over
them and returns the leading (batch) shape. All log-probabilities are in nats.

Stable forms only: log(sigmoid(x)) is ``log_sigmoid(x)`` and log(1 - sigmoid(x)) is
``log_sigmoid(-x)``, finite for any finite logit.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import struct

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: jax.Array, event_ndim: int) -> jax.Array:
    if event_ndim == 0:
        return x
    return jnp.sum(x, axis=tuple(range(-event_ndim, 0)))


@struct.dataclass
class DiagGaussian:
    """N(mean, diag(exp(log_std)^2)) over the last ``event_ndim`` axes.

    mean, log_std: [..., *event_shape] float.
    """

    mean: jax.Array
    log_std: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=1)

    @property
    def std(self) -> jax.Array:
        return jnp.exp(self.log_std)

    def sample(self, key: jax.Array, num_samples: int | None = None) -> jax.Array:
        """Reparameterized draw z = mean + std * eps, eps ~ N(0, I).

        Returns [num_samples, *mean.shape] when ``num_samples`` is given, else mean.shape.
        Gradients flow to ``mean`` and ``log_std`` (the reparameterization trick).
        """
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        eps = jax.random.normal(key, shape, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def log_prob(self, x: jax.Array) -> jax.Array:
        """log N(x; mean, std^2) summed over the event axes: [...]."""
        z = (x - self.mean) * jnp.exp(-self.log_std)
        return _sum_event(-0.5 * (z * z + LOG_2PI) - self.log_std, self.event_ndim)

    def entropy(self) -> jax.Array:
        return _sum_event(0.5 * (1.0 + LOG_2PI) + self.log_std, self.event_ndim)

    def kl_standard_normal(self) -> jax.Array:
        """KL(self || N(0, I)) in closed form: [...]."""
        return _sum_event(gaussian_kl_elementwise(self.mean, self.log_std), self.event_ndim)

    def kl(self, other: "DiagGaussian") -> jax.Array:
        """KL(self || other) between two diagonal Gaussians in closed form: [...]."""
        var_ratio = jnp.exp(2.0 * (self.log_std - other.log_std))
        diff = (self.mean - other.mean) * jnp.exp(-other.log_std)
        elem = 0.5 * (var_ratio + diff * diff - 1.0) - (self.log_std - other.log_std)
        return _sum_event(elem, self.event_ndim)


def gaussian_kl_elementwise(mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """Per-dimension KL(N(mean, exp(log_std)^2) || N(0, 1)) = ½(μ² + σ² − 1) − log σ."""
    return 0.5 * (mean * mean + jnp.exp(2.0 * log_std) - 1.0) - log_std


def standard_normal(shape: tuple[int, ...], dtype=jnp.float32, event_ndim: int = 1) -> DiagGaussian:
    return DiagGaussian(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), event_ndim=event_ndim)


@struct.dataclass
class Bernoulli:
    """Independent Bernoulli pixels parameterised by logits: [..., *event_shape]."""

    logits: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=3)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """x log σ(l) + (1 − x) log σ(−l) summed over the event axes: [...].

        x: binary pixels in {0, 1} (a grey level in [0, 1] gives the usual cross-entropy,
        which is not a normalised density on [0, 1]).
        """
        # x log σ(l) + (1 − x) log σ(−l) = x l − softplus(l): one softplus instead of two
        # log-sigmoids (the dominant elementwise cost of a training step), same stability.
        lp = x * self.logits - jax.nn.softplus(self.logits)
        return _sum_event(lp, self.event_ndim)

    def mean(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    def mode(self) -> jax.Array:
        return (self.logits > 0).astype(self.logits.dtype)

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.bernoulli(key, jax.nn.sigmoid(self.logits)).astype(self.logits.dtype)


@struct.dataclass
class Gaussian:
    """Gaussian pixel likelihood with per-pixel mean and log-std: [..., *event_shape]."""

    loc: jax.Array
    log_scale: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=3)

    def log_prob(self, x: jax.Array) -> jax.Array:
        return DiagGaussian(self.loc, self.log_scale, self.event_ndim).log_prob(x)

    def mean(self) -> jax.Array:
        return self.loc

    def mode(self) -> jax.Array:
        return self.loc

    def sample(self, key: jax.Array) -> jax.Array:
        return DiagGaussian(self.loc, self.log_scale, self.event_ndim).sample(key)


# Likelihoods by name: (number of decoder outputs per pixel, constructor from those outputs).
# The decoder emits [..., H, W, C * n]; the constructor receives [..., H, W, C, n].
LIKELIHOODS = {
    "bernoulli": (1, lambda out: Bernoulli(out[..., 0])),
    "gaussian": (2, lambda out: Gaussian(out[..., 0], out[..., 1])),
}


def likelihood_num_params(name: str) -> int:
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {name!r}; valid: {sorted(LIKELIHOODS)}.")
    return LIKELIHOODS[name][0]


def make_likelihood(name: str, out: jax.Array):
    """Build the named pixel likelihood from decoder outputs [..., H, W, C, n]."""
    likelihood_num_params(name)
    return LIKELIHOODS[name][1](out)
