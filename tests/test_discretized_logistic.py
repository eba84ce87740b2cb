"""8-bit likelihoods: proper probability masses over the 256 pixel values, stable at the
extremes, and bits/dim conversions that are exact for a uniform model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import distributions as dist
from vae_jax import evaluate, models

VALUES = jnp.arange(256, dtype=jnp.float32) / 255.0   # every pixel value, on the x scale


def _logistic_cdf(y, loc, scale):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-(y - loc) / scale))


@pytest.mark.parametrize("loc,log_scale", [(0.5, -3.0), (0.0, -6.0), (1.0, -1.0),
                                           (0.3, 2.0), (-2.0, -4.0), (0.7, -9.0)])
def test_masses_sum_to_one_and_match_cdf_differences(loc, log_scale):
    lp = dist.discretized_logistic_log_prob(VALUES, jnp.float32(loc), jnp.float32(log_scale))
    assert np.all(np.isfinite(lp))
    np.testing.assert_allclose(np.exp(np.asarray(lp, np.float64)).sum(), 1.0, atol=1e-5)
    # Interior bin i: CDF(x + 1/510) − CDF(x − 1/510) in float64.
    s = np.exp(max(log_scale, dist.MIN_LOG_SCALE))
    x = np.arange(256) / 255.0
    hi = np.where(x > 1 - 1e-9, 1.0, _logistic_cdf(x + 0.5 / 255, loc, s))
    lo = np.where(x < 1e-9, 0.0, _logistic_cdf(x - 0.5 / 255, loc, s))
    ref = hi - lo
    big = ref > 1e-6  # compare log-masses where float64 differences are meaningful
    np.testing.assert_allclose(np.asarray(lp)[big], np.log(ref[big]), rtol=2e-4, atol=2e-4)


@pytest.mark.slow
def test_mixture_sums_to_one_and_reduces_to_single_component():
    k = 5
    rng = np.random.default_rng(0)
    out = jnp.asarray(rng.normal(size=(3 * k,)), jnp.float32)
    mix = dist.make_likelihood("discretized_logistic_mix5", out[None, None, None, :])  # [1,1,1]
    probs = jax.vmap(lambda v: jnp.exp(mix.log_prob(jnp.full((1, 1, 1), v))))(VALUES)
    np.testing.assert_allclose(probs.sum(), 1.0, atol=1e-5)
    # One dominant component: the mixture equals that component's discretized logistic.
    logits = jnp.array([50.0, 0, 0, 0, 0])
    one = dist.DiscretizedLogisticMixture(logits, out[k:2 * k], out[2 * k:], event_ndim=0)
    np.testing.assert_allclose(
        jax.vmap(one.log_prob)(VALUES),
        dist.discretized_logistic_log_prob(VALUES, out[k], out[2 * k]), atol=1e-5)


def test_gradients_finite_at_edges_and_extreme_parameters():
    def f(loc, log_scale):
        return dist.discretized_logistic_log_prob(VALUES, loc, log_scale).sum()
    for loc, ls in ((0.0, -7.0), (1.0, -7.0), (0.5, 5.0), (30.0, -5.0), (-30.0, 0.0)):
        g = jax.grad(f, argnums=(0, 1))(jnp.float32(loc), jnp.float32(ls))
        assert all(np.isfinite(v) for v in g), (loc, ls, g)


@pytest.mark.slow
def test_uniform_model_is_exactly_8_bits_per_dim():
    """A VAE whose decoder is a zero 256-way softmax and whose encoder equals the prior has
    p(x) = 256^(−D) exactly: the importance-sampled estimate must give 8 bits/dim."""
    shape = (4, 4, 1)
    model = models.get("mlp", image_shape=shape, latent_dim=2, hidden=(8,),
                       likelihood="categorical256")
    params = model.init(jax.random.key(0), jnp.zeros((1, *shape)), jax.random.key(0))
    params = jax.tree.map(jnp.zeros_like, params)  # q(z|x) = N(0, I) = p(z), uniform p(x|z)
    images = np.random.default_rng(0).integers(0, 256, (8, *shape), dtype=np.uint8)
    out = evaluate.log_likelihood(params, images, jax.random.key(1), model=model,
                                  num_samples=10, chunk=4, batch_size=8, binarization="none")
    np.testing.assert_allclose(out["log_px"], -16 * np.log(256), rtol=1e-6)
    assert out["bpd"] == pytest.approx(8.0, abs=1e-5)
    assert dist.bits_per_dim(-16 * np.log(256.0), 16) == pytest.approx(8.0, abs=1e-12)


@pytest.mark.slow
def test_categorical_and_logistic_index_the_right_bin():
    logits = jnp.full((256,), -30.0).at[200].set(30.0)
    cat = dist.Categorical256(logits, event_ndim=0)
    assert float(cat.log_prob(jnp.float32(200 / 255))) == pytest.approx(0.0, abs=1e-6)
    assert float(cat.mode()) == pytest.approx(200 / 255)
    sharp = dist.DiscretizedLogistic(jnp.float32(17 / 255), jnp.float32(-7.0), event_ndim=0)
    # Mass of the bin centred on the mode: 2σ(½w / s) − 1 (w = 1/255, s = e^−7).
    mass = 2.0 / (1.0 + np.exp(-0.5 / 255 / np.exp(-7.0))) - 1.0
    assert float(sharp.log_prob(jnp.float32(17 / 255))) == pytest.approx(np.log(mass), abs=1e-4)
    draws = jax.vmap(lambda k: sharp.sample(k))(jax.random.split(jax.random.key(0), 200))
    np.testing.assert_allclose(np.round(np.asarray(draws) * 255), 17, atol=1)
