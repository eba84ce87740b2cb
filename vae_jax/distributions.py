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

from vae_jax.ops import random

LOG_2PI = math.log(2.0 * math.pi)


def _sum_event(x: jax.Array, event_ndim: int) -> jax.Array:
    if event_ndim == 0:
        return x
    return jnp.sum(x, axis=tuple(range(-event_ndim, 0)))


@struct.dataclass
class DiagGaussian:
    """N(mean, diag(exp(log_std)^2)) over the last ``event_ndim`` axes.

    mean, log_std: ``[..., *event_shape]`` float.
    """

    mean: jax.Array
    log_std: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=1)

    @property
    def std(self) -> jax.Array:
        return jnp.exp(self.log_std)

    def sample(self, key: jax.Array, num_samples: int | None = None) -> jax.Array:
        """Reparameterized draw z = mean + std · eps, eps ~ N(0, I).

        Returns ``[num_samples, *mean.shape]`` when ``num_samples`` is given, else mean.shape.
        Gradients flow to ``mean`` and ``log_std`` (the reparameterization trick).
        """
        shape = self.mean.shape if num_samples is None else (num_samples, *self.mean.shape)
        eps = random.normal(key, shape, dtype=self.mean.dtype)
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


@jax.custom_jvp
def softplus(x: jax.Array) -> jax.Array:
    """log(1 + eˣ) = max(x, 0) + log1p(e^{−|x|}): exact, never overflows, and faster on
    XLA:CPU than ``jax.nn.softplus`` (``logaddexp``, with its inf/NaN handling); it is the
    dominant elementwise cost of a k = 5000 log-likelihood evaluation.

    The derivative is σ(x) everywhere (a ``custom_jvp``): differentiated term by term, the
    form above has derivative 0 at x = 0 (½ from ``max``, −½ from ``|x|``) instead of
    σ(0) = ½, so a logit of exactly 0 (a zero-initialised output layer) would get a wrong
    gradient. σ's own derivative is exact, so higher derivatives are right too."""
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    return softplus(x), jax.nn.sigmoid(x) * dx


def standard_normal(shape: tuple[int, ...], dtype=jnp.float32, event_ndim: int = 1) -> DiagGaussian:
    return DiagGaussian(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), event_ndim=event_ndim)


@struct.dataclass
class Bernoulli:
    """Independent Bernoulli pixels parameterised by logits: ``[..., *event_shape]``."""

    logits: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=3)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """x log σ(l) + (1 − x) log σ(−l) summed over the event axes: [...].

        x: binary pixels in {0, 1} (a grey level in [0, 1] gives the usual cross-entropy,
        which is not a normalised density on [0, 1]).
        """
        # x log σ(l) + (1 − x) log σ(−l) = x l − softplus(l): one softplus instead of two
        # log-sigmoids (the dominant elementwise cost of a training step), same stability.
        lp = x * self.logits - softplus(self.logits)
        return _sum_event(lp, self.event_ndim)

    def mean(self) -> jax.Array:
        return jax.nn.sigmoid(self.logits)

    def mode(self) -> jax.Array:
        return (self.logits > 0).astype(self.logits.dtype)

    def sample(self, key: jax.Array) -> jax.Array:
        return jax.random.bernoulli(key, jax.nn.sigmoid(self.logits)).astype(self.logits.dtype)


@struct.dataclass
class Gaussian:
    """Gaussian pixel likelihood with per-pixel mean and log-std: ``[..., *event_shape]``."""

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


# ---------------------------------------------------------------- 8-bit pixel likelihoods
#
# 8-bit images enter the model as x = pixel / 255 in [0, 1] (config.data.binarization =
# "none"), so pixel value i sits at the bin centre i / 255 and each bin is 1/255 wide. The
# discrete likelihoods below put a probability mass on each of the 256 values (they
# integrate a continuous density over the bin, which is the correct handling of
# quantisation: no dequantisation noise is added), so −log p(x) / (H·W·C·ln 2) is a true
# bits/dim figure.

NUM_BINS = 256
_HALF_BIN = 0.5 / (NUM_BINS - 1)
# The floor on the logistic log-scale: PixelCNN++'s −7 on its pixel scale [−1, 1], which is
# −7 − ln 2 on this one ([0, 1]: half as wide, so every scale halves). At the floor the best
# interior bin mass is σ(a) − σ(−a) with a = (1/510)·e^{7 + ln 2} ≈ 4.30, log-mass −0.027
# nats, as in PixelCNN++ (a floor of −7 here would cap it at −0.234 nats a pixel).
MIN_LOG_SCALE = -7.0 - math.log(2.0)


def pixel_index(x: jax.Array) -> jax.Array:
    """x = pixel / 255 in [0, 1] -> int32 pixel value 0..255."""
    return jnp.clip(jnp.round(x * (NUM_BINS - 1)), 0, NUM_BINS - 1).astype(jnp.int32)


def discretized_logistic_log_prob(x: jax.Array, loc: jax.Array, log_scale: jax.Array
                                  ) -> jax.Array:
    """log P(pixel) for a logistic(loc, exp(log_scale)) integrated over x's bin, per pixel.

    x: pixel / 255 in [0, 1]; loc, log_scale broadcast against x. Bin i covers
    [x − 1/510, x + 1/510], except that bin 0 extends to −∞ and bin 255 to +∞, so the 256
    masses sum to 1. Stable for any loc/scale: with a = (x + ½w − μ)/s > b = (x − ½w − μ)/s,
    σ(a) − σ(b) = σ(a) σ(−b) (1 − e^{b−a}), hence
    log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log(−expm1(b − a)).

    ``log_scale`` is floored at ``MIN_LOG_SCALE`` (PixelCNN++'s floor, −7 on pixels in
    [−1, 1], is −7 − ln 2 here). Its gradient is 0 below the floor, 1 above and ½ exactly at
    it (``jnp.maximum``'s rule: the average of the two sides).
    """
    log_scale = jnp.maximum(log_scale, MIN_LOG_SCALE)
    inv_s = jnp.exp(-log_scale)
    centred = x - loc
    a = (centred + _HALF_BIN) * inv_s
    b = (centred - _HALF_BIN) * inv_s
    log_sig_a = jax.nn.log_sigmoid(a)          # log CDF at the upper edge
    log_sig_neg_b = jax.nn.log_sigmoid(-b)     # log (1 − CDF) at the lower edge
    mid = log_sig_a + log_sig_neg_b + jnp.log(-jnp.expm1(b - a))
    # Edge bins by selection, not by infinite edges, so gradients stay finite.
    return jnp.where(x < _HALF_BIN, log_sig_a, jnp.where(x > 1.0 - _HALF_BIN, log_sig_neg_b, mid))


def _logistic_sample(key: jax.Array, loc: jax.Array, log_scale: jax.Array) -> jax.Array:
    u = jax.random.uniform(key, loc.shape, loc.dtype, minval=1e-5, maxval=1.0 - 1e-5)
    y = loc + jnp.exp(jnp.maximum(log_scale, MIN_LOG_SCALE)) * (jnp.log(u) - jnp.log1p(-u))
    return pixel_index(y).astype(loc.dtype) / (NUM_BINS - 1)


@struct.dataclass
class DiscretizedLogistic:
    """Discretized logistic over 256 pixel values (PixelCNN++'s, one component).

    loc, log_scale: ``[..., *event_shape]``, on the x = pixel / 255 scale. Decoder layout: two
    outputs per pixel, (loc, log_scale).
    """

    loc: jax.Array
    log_scale: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=3)

    def log_prob(self, x: jax.Array) -> jax.Array:
        """x: pixel / 255 ``[..., *event_shape]`` -> log P summed over the event: [...]."""
        return _sum_event(discretized_logistic_log_prob(x, self.loc, self.log_scale),
                          self.event_ndim)

    def mean(self) -> jax.Array:
        return jnp.clip(self.loc, 0.0, 1.0)

    def mode(self) -> jax.Array:
        return pixel_index(self.loc).astype(self.loc.dtype) / (NUM_BINS - 1)

    def sample(self, key: jax.Array) -> jax.Array:
        return _logistic_sample(key, self.loc, self.log_scale)


@struct.dataclass
class DiscretizedLogisticMixture:
    """Mixture of K discretized logistics per pixel (PixelCNN++ without the RGB coupling:
    each channel has its own mixture).

    logits, loc, log_scale: ``[..., *event_shape, K]``. Decoder layout: 3K outputs per pixel,
    ordered (logits_1..K, loc_1..K, log_scale_1..K).
    """

    logits: jax.Array
    loc: jax.Array
    log_scale: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=3)

    def log_prob(self, x: jax.Array) -> jax.Array:
        lp = discretized_logistic_log_prob(x[..., None], self.loc, self.log_scale)
        lp = jax.nn.logsumexp(jax.nn.log_softmax(self.logits, axis=-1) + lp, axis=-1)
        return _sum_event(lp, self.event_ndim)

    def mean(self) -> jax.Array:
        return jnp.sum(jax.nn.softmax(self.logits, -1) * jnp.clip(self.loc, 0.0, 1.0), -1)

    def mode(self) -> jax.Array:  # the most probable component's location
        k = jnp.argmax(self.logits, axis=-1)[..., None]
        loc = jnp.take_along_axis(self.loc, k, axis=-1)[..., 0]
        return pixel_index(loc).astype(loc.dtype) / (NUM_BINS - 1)

    def sample(self, key: jax.Array) -> jax.Array:
        k_comp, k_val = jax.random.split(key)
        k = jax.random.categorical(k_comp, self.logits, axis=-1)[..., None]
        pick = lambda a: jnp.take_along_axis(a, k, axis=-1)[..., 0]
        return _logistic_sample(k_val, pick(self.loc), pick(self.log_scale))


@struct.dataclass
class Categorical256:
    """A free 256-way softmax per pixel (PixelRNN's output): logits ``[..., *event_shape, 256]``.

    Decoder layout: 256 outputs per pixel. Zero logits are the uniform model: 8 bits/dim.
    """

    logits: jax.Array
    event_ndim: int = struct.field(pytree_node=False, default=3)

    def log_prob(self, x: jax.Array) -> jax.Array:
        log_p = jax.nn.log_softmax(self.logits, axis=-1)
        idx = jnp.broadcast_to(pixel_index(x), log_p.shape[:-1])  # x may lack batch axes
        lp = jnp.take_along_axis(log_p, idx[..., None], axis=-1)[..., 0]
        return _sum_event(lp, self.event_ndim)

    def mean(self) -> jax.Array:
        values = jnp.arange(NUM_BINS, dtype=self.logits.dtype) / (NUM_BINS - 1)
        return jnp.sum(jax.nn.softmax(self.logits, -1) * values, -1)

    def mode(self) -> jax.Array:
        return jnp.argmax(self.logits, -1).astype(self.logits.dtype) / (NUM_BINS - 1)

    def sample(self, key: jax.Array) -> jax.Array:
        i = jax.random.categorical(key, self.logits, axis=-1)
        return i.astype(self.logits.dtype) / (NUM_BINS - 1)


def _mixture(k: int):
    return (3 * k, lambda out: DiscretizedLogisticMixture(
        out[..., :k], out[..., k:2 * k], out[..., 2 * k:]))


# Likelihoods by name: (number of decoder outputs per pixel, constructor from those outputs).
# The decoder emits [..., H, W, C * n]; the constructor receives [..., H, W, C, n].
# Discrete 8-bit likelihoods (x = pixel / 255, binarization "none"): "discretized_logistic",
# "discretized_logistic_mix{K}" (K in 3, 5, 10) and "categorical256".
LIKELIHOODS = {
    "bernoulli": (1, lambda out: Bernoulli(out[..., 0])),
    "gaussian": (2, lambda out: Gaussian(out[..., 0], out[..., 1])),
    "discretized_logistic": (2, lambda out: DiscretizedLogistic(out[..., 0], out[..., 1])),
    "discretized_logistic_mix3": _mixture(3),
    "discretized_logistic_mix5": _mixture(5),
    "discretized_logistic_mix10": _mixture(10),
    "categorical256": (NUM_BINS, lambda out: Categorical256(out)),
}

# Likelihoods that are probability masses over 8-bit pixel values: bits/dim is meaningful.
DISCRETE_8BIT = ("discretized_logistic", "discretized_logistic_mix3",
                 "discretized_logistic_mix5", "discretized_logistic_mix10", "categorical256")


def bits_per_dim(log_prob_nats: jax.Array | float, num_dims: int) -> jax.Array | float:
    """−log p(x) / (num_dims · ln 2): nats per image -> bits per dimension."""
    return -log_prob_nats / (num_dims * math.log(2.0))


def likelihood_num_params(name: str) -> int:
    if name not in LIKELIHOODS:
        raise ValueError(f"Unknown likelihood {name!r}; valid: {sorted(LIKELIHOODS)}.")
    return LIKELIHOODS[name][0]


def make_likelihood(name: str, out: jax.Array):
    """Build the named pixel likelihood from decoder outputs [..., H, W, C, n]."""
    likelihood_num_params(name)
    return LIKELIHOODS[name][1](out)
