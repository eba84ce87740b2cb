"""Distributions against closed forms, hand-computed values and Monte Carlo."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import distributions as dist
from vae_jax import losses


def test_diag_gaussian_log_prob_matches_hand_computation():
    mean = jnp.array([[0.0, 1.0, -2.0]])
    log_std = jnp.log(jnp.array([[1.0, 2.0, 0.5]]))
    x = jnp.array([[0.5, -1.0, -2.0]])
    expected = sum(-0.5 * ((xi - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)
                   for xi, m, s in [(0.5, 0.0, 1.0), (-1.0, 1.0, 2.0), (-2.0, -2.0, 0.5)])
    got = dist.DiagGaussian(mean, log_std).log_prob(x)
    assert got.shape == (1,)
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)


def test_kl_to_standard_normal_closed_form_vs_monte_carlo():
    mean = jnp.array([[0.3, -1.2, 2.0, 0.0]])
    log_std = jnp.array([[-0.5, 0.2, 0.0, -1.5]])
    q = dist.DiagGaussian(mean, log_std)
    z = q.sample(jax.random.key(0), 400_000)  # [S, 1, 4]
    mc = jnp.mean(q.log_prob(z) - dist.standard_normal((4,)).log_prob(z))
    closed = q.kl_standard_normal()[0]
    np.testing.assert_allclose(closed, mc, atol=4e-3)
    # Hand value: 0.5 * sum(mu^2 + sigma^2 - 1 - 2 log sigma).
    m, ls = np.asarray(mean[0]), np.asarray(log_std[0])
    np.testing.assert_allclose(closed, 0.5 * np.sum(m**2 + np.exp(2 * ls) - 1 - 2 * ls), rtol=1e-6)
    np.testing.assert_allclose(losses.gaussian_kl(mean, log_std)[0], closed, rtol=1e-6)


def test_kl_between_two_gaussians_vs_monte_carlo_and_self():
    q = dist.DiagGaussian(jnp.array([0.5, -0.3]), jnp.array([0.1, -0.7]))
    p = dist.DiagGaussian(jnp.array([-0.2, 0.4]), jnp.array([0.3, 0.2]))
    z = q.sample(jax.random.key(1), 400_000)
    mc = jnp.mean(q.log_prob(z) - p.log_prob(z))
    np.testing.assert_allclose(q.kl(p), mc, atol=4e-3)
    np.testing.assert_allclose(q.kl(q), 0.0, atol=1e-6)
    std = dist.standard_normal((2,))
    np.testing.assert_allclose(q.kl(std), q.kl_standard_normal(), rtol=1e-6)


def test_sample_shapes_and_moments():
    q = dist.DiagGaussian(jnp.full((3, 2), 1.5), jnp.full((3, 2), math.log(0.5)))
    assert q.sample(jax.random.key(0)).shape == (3, 2)
    z = q.sample(jax.random.key(0), 100_000)
    assert z.shape == (100_000, 3, 2)
    np.testing.assert_allclose(jnp.mean(z), 1.5, atol=5e-3)
    np.testing.assert_allclose(jnp.std(z), 0.5, atol=5e-3)


def test_reparameterized_gradient_matches_analytic():
    # E[z^2] = mu^2 + sigma^2, so d/dmu = 2 mu and d/dlog_sigma = 2 sigma^2.
    mu, log_sigma = 0.7, math.log(1.3)

    def objective(params, key):
        q = dist.DiagGaussian(jnp.array([params[0]]), jnp.array([params[1]]))
        z = q.sample(key, 200_000)
        return jnp.mean(z**2)

    grad = jax.grad(objective)(jnp.array([mu, log_sigma]), jax.random.key(3))
    np.testing.assert_allclose(grad, [2 * mu, 2 * 1.3**2], rtol=2e-2)
    # Single draw: z = mu + sigma eps exactly, so dz/dmu = 1 and dz/dlog_sigma = sigma eps.
    eps = jax.random.normal(jax.random.key(4), (1,))
    g = jax.grad(lambda p: dist.DiagGaussian(p[:1], p[1:]).sample(jax.random.key(4))[0])(
        jnp.array([mu, log_sigma]))
    np.testing.assert_allclose(g, [1.0, 1.3 * eps[0]], rtol=1e-5)


def test_bernoulli_log_prob_hand_values_and_extreme_logits():
    logits = jnp.array([[[[0.0, 2.0], [-1.0, 100.0]]]])  # [1, 1, 2, 2]
    x = jnp.array([[[[1.0, 0.0], [0.0, 1.0]]]])
    expected = (math.log(0.5) + math.log(1 - 1 / (1 + math.exp(-2.0)))
                + math.log(1 - 1 / (1 + math.exp(1.0))) + 0.0)
    lp = dist.Bernoulli(logits).log_prob(x)
    assert lp.shape == (1,)
    np.testing.assert_allclose(lp[0], expected, rtol=1e-5)
    # The Flax example's log(-expm1(log_sigmoid(l))) is -inf/NaN at l ~ 100; ours is exact.
    big = dist.Bernoulli(jnp.full((1, 1, 1, 1), 150.0))
    np.testing.assert_allclose(big.log_prob(jnp.zeros((1, 1, 1, 1)))[0], -150.0, rtol=1e-6)
    g = jax.grad(lambda l: dist.Bernoulli(l).log_prob(jnp.zeros((1, 1, 1, 1)))[0])(
        jnp.full((1, 1, 1, 1), 150.0))
    assert np.all(np.isfinite(g))


def test_gaussian_likelihood_matches_diag_gaussian():
    loc = jnp.zeros((2, 2, 2, 1))
    log_scale = jnp.full((2, 2, 2, 1), math.log(2.0))
    x = jnp.ones((2, 2, 2, 1))
    per_pixel = -0.5 * (1 / 4) - math.log(2.0) - 0.5 * math.log(2 * math.pi)
    np.testing.assert_allclose(dist.Gaussian(loc, log_scale).log_prob(x), [4 * per_pixel] * 2,
                               rtol=1e-6)


def test_unknown_likelihood_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown likelihood 'poisson'.*bernoulli"):
        dist.likelihood_num_params("poisson")
