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


# ------------------------------------------------------------ derivatives at the kinks
#
# The stable forms are built from max, |x|, clamps and selections, whose derivatives JAX
# takes term by term. Each is checked against the analytic derivative (or a float64 central
# difference away from the kink) and, at the kink, against the documented convention.

def _sigmoid64(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def test_softplus_value_and_derivatives_everywhere_including_zero():
    """softplus(x) = log(1 + eˣ) is smooth: its derivative is σ(x) at every x, ½ at 0 (the
    term-by-term derivative of max(x, 0) + log1p(e^{−|x|}) is 0 there), and its second
    derivative σ(x)(1 − σ(x))."""
    xs = np.array([-200.0, -30.0, -1.0, -1e-7, 0.0, 1e-7, 0.5, 1.0, 30.0, 200.0], np.float32)
    np.testing.assert_allclose(dist.softplus(jnp.asarray(xs)),
                               np.logaddexp(0.0, xs.astype(np.float64)), rtol=1e-6, atol=1e-30)
    grad = jax.vmap(jax.grad(dist.softplus))(jnp.asarray(xs))
    np.testing.assert_allclose(grad, _sigmoid64(xs), rtol=1e-6, atol=1e-30)
    assert float(jax.grad(dist.softplus)(0.0)) == 0.5
    second = jax.vmap(jax.grad(jax.grad(dist.softplus)))(jnp.asarray(xs))
    s = _sigmoid64(xs)
    np.testing.assert_allclose(second, s * (1.0 - s), rtol=1e-5, atol=1e-12)
    assert float(jax.grad(jax.grad(dist.softplus))(0.0)) == 0.25


def test_bernoulli_gradient_at_a_zero_logit_is_x_minus_a_half():
    """d/dl [x log σ(l) + (1 − x) log σ(−l)] = x − σ(l): at a logit of exactly 0 (a
    zero-initialised decoder output) x − ½, not x."""
    x = jnp.array([0.0, 1.0, 0.0, 1.0, 0.3]).reshape(1, 5)
    logits = jnp.array([0.0, 0.0, 2.0, -3.0, 0.0]).reshape(1, 5)
    grad = jax.grad(lambda l: dist.Bernoulli(l, event_ndim=1).log_prob(x).sum())(logits)
    np.testing.assert_allclose(grad, x - _sigmoid64(logits), rtol=1e-6)
    np.testing.assert_allclose(grad[0, :2], [-0.5, 0.5])


def test_log_sigmoid_derivative_at_zero_and_beyond():
    """log σ(x) (the discretized logistic's and the VDM's): derivative σ(−x), ½ at 0."""
    xs = jnp.array([-50.0, -1.0, 0.0, 1.0, 50.0])
    np.testing.assert_allclose(jax.vmap(jax.grad(jax.nn.log_sigmoid))(xs),
                               _sigmoid64(-np.asarray(xs)), rtol=1e-6, atol=1e-30)
    assert float(jax.grad(jax.nn.log_sigmoid)(0.0)) == 0.5


def _dlogistic_log_mass64(x, loc, log_scale):
    """log P(bin of x) in float64, without the floor (a reference for gradients):
    log(σ(a) − σ(b)) = log σ(a) + log σ(−b) + log(1 − e^{b−a}), exact in the tails too."""
    s, h = np.exp(log_scale), 0.5 / 255.0
    a, b = (x + h - loc) / s, (x - h - loc) / s
    log_sig = lambda y: -np.logaddexp(0.0, -y)
    if x < h:
        return log_sig(a)
    if x > 1.0 - h:
        return log_sig(-b)
    return log_sig(a) + log_sig(-b) + np.log(-np.expm1(b - a))


@pytest.mark.parametrize("x", [0.0, 3 / 255, 128 / 255, 1.0])
@pytest.mark.parametrize("loc, log_scale", [(0.5, -2.0), (0.02, -4.0), (0.98, -3.0),
                                            (0.3, 0.5)])
def test_discretized_logistic_gradients_match_float64_central_differences(x, loc, log_scale):
    """Gradients in loc and log_scale of every bin kind (the edge bins are selected with
    ``where``), against float64 central differences of the exact mass."""
    f = lambda m, ls: dist.discretized_logistic_log_prob(jnp.float32(x), m, ls)
    g = jax.grad(f, argnums=(0, 1))(jnp.float32(loc), jnp.float32(log_scale))
    eps = 1e-6
    ref = [(_dlogistic_log_mass64(x, loc + eps, log_scale)
            - _dlogistic_log_mass64(x, loc - eps, log_scale)) / (2 * eps),
           (_dlogistic_log_mass64(x, loc, log_scale + eps)
            - _dlogistic_log_mass64(x, loc, log_scale - eps)) / (2 * eps)]
    np.testing.assert_allclose(np.asarray(g, np.float64), ref, rtol=2e-3, atol=2e-4)


def test_discretized_logistic_floor_is_pixelcnn_pp_and_its_gradient_convention():
    """The log-scale floor is PixelCNN++'s −7 on pixels in [−1, 1], i.e. −7 − ln 2 on
    [0, 1]: the sharpest interior bin then has log-mass −0.027 nats, as there (−0.234 with
    a floor of −7 on [0, 1]). The floor's derivative: 0 below, the formula's above, and ½
    of it exactly at the floor (``jnp.maximum``'s average of the two sides)."""
    assert dist.MIN_LOG_SCALE == pytest.approx(-7.0 - math.log(2.0), abs=1e-15)
    x = jnp.float32(100 / 255)
    best = dist.discretized_logistic_log_prob(x, x, jnp.float32(-30.0))
    a = 0.5 / 255 * math.exp(7.0 + math.log(2.0))
    assert float(best) == pytest.approx(math.log(2.0 * _sigmoid64(a) - 1.0), abs=1e-5)
    assert float(best) == pytest.approx(-0.0271, abs=2e-4)
    # PixelCNN++ on its own scale: the same bin is 2/255 wide with the floor at −7.
    assert float(best) == pytest.approx(math.log(2.0 * _sigmoid64(1 / 255 * math.exp(7.0))
                                                 - 1.0), abs=1e-5)
    loc = jnp.float32(100 / 255 + 0.003)
    d_ls = jax.grad(lambda ls: dist.discretized_logistic_log_prob(x, loc, ls))
    floor = dist.MIN_LOG_SCALE
    eps = 1e-6
    above = (_dlogistic_log_mass64(float(x), float(loc), floor + eps)
             - _dlogistic_log_mass64(float(x), float(loc), floor - eps)) / (2 * eps)
    assert abs(above) > 0.1  # the formula's own derivative there is not 0 (else moot)
    assert float(d_ls(jnp.float32(floor - 0.5))) == 0.0
    np.testing.assert_allclose(float(d_ls(jnp.float32(floor))), 0.5 * above, rtol=2e-3)
    np.testing.assert_allclose(float(d_ls(jnp.float32(floor + 1e-3))), above, rtol=2e-2)


def test_free_bits_gradient_below_at_and_above_the_floor():
    """β Σ_j max(λ, mean_B KL_j): the gradient to KL_j is 0 below λ, β above, and β/2
    exactly at λ (``jnp.maximum``'s convention, stated in ``losses.elbo``)."""
    import flax.linen as nn

    class FixedKL(nn.Module):
        def setup(self):
            self.kl = self.param("kl", lambda k: jnp.zeros(3))

        def __call__(self, x, key):
            return x

        def terms(self, x, key, num_samples):
            b = x.shape[0]
            zeros = jnp.zeros((num_samples, b))
            return {"log_px_z": zeros, "log_pz": zeros, "log_qz": zeros,
                    "kl": {"z": jnp.broadcast_to(self.kl, (b, 3))}}

    model = FixedKL()
    params = {"params": {"kl": jnp.array([0.2, 0.5, 0.9])}}
    loss = lambda p: losses.elbo(p, jnp.zeros((4, 1)), jax.random.key(0), model=model,
                                 beta=2.0, free_bits=0.5)[0]
    np.testing.assert_allclose(jax.grad(loss)(params)["params"]["kl"], [0.0, 1.0, 2.0])


@pytest.mark.xla_defaults  # sech² of 5e-14: XLA's own tanh is accurate out there
def test_model_clamps_derivatives():
    """The deep HVAE's soft clamp b·tanh(s/b) (derivative sech²(s/b), 1 at 0, finite far
    out) and the ladder HVAE's precision-weighted log-std −½ logaddexp(−2a, −2b) (∂/∂a =
    σ(2b − 2a), ½ each when a = b)."""
    from vae_jax.models.deep_hvae.blocks import soft_clamp
    from vae_jax.models.hvae import precision_weighted

    xs = jnp.array([-80.0, -5.0, -1e-6, 0.0, 1e-6, 3.0, 80.0])
    grad = jax.vmap(jax.grad(lambda s: soft_clamp(s, bound=5.0)))(xs)
    np.testing.assert_allclose(grad, 1.0 / np.cosh(np.asarray(xs, np.float64) / 5.0) ** 2,
                               rtol=1e-5, atol=1e-12)
    assert float(jax.grad(lambda s: soft_clamp(s, bound=5.0))(0.0)) == 1.0
    assert float(jax.grad(lambda s: soft_clamp(s, bound=None))(7.0)) == 1.0
    for a, b in ((0.3, 0.3), (0.3, -0.4), (-2.0, 1.0)):
        ga, gb = jax.grad(lambda a, b: precision_weighted(0.0, a, 0.0, b).log_std,
                          argnums=(0, 1))(jnp.float32(a), jnp.float32(b))
        np.testing.assert_allclose([ga, gb], [_sigmoid64(2 * b - 2 * a),
                                              _sigmoid64(2 * a - 2 * b)], rtol=1e-6)


@pytest.mark.slow
def test_vdm_schedule_ends_are_exact_and_keep_the_derivative():
    """The learned schedule γ(t) (the monotone network's unit fraction, set to exactly 0 / 1
    at t = 0 / 1 by ``where`` and ``clip`` under a stop-gradient) is exactly γ₀ / γ₁ at the
    ends, and its derivative there is the network's (a float64 one-sided difference), not
    the clip's 0."""
    from vae_jax.models.vdm.schedules import NoiseSchedule

    sched = NoiseSchedule(kind="learned_net", gamma_min=-13.3, gamma_max=5.0, hidden=8)
    params = sched.init(jax.random.key(0), jnp.zeros(()))
    gamma = lambda t: sched.apply(params, t)
    np.testing.assert_array_equal(gamma(jnp.array([0.0, 1.0])), np.float32([-13.3, 5.0]))
    dgamma = jax.grad(gamma)
    for t, h in ((0.0, 1e-3), (1.0, -1e-3)):
        ts = jnp.array([t, t + h / 2, t + h])  # the derivative at t: a second-order one-sided
        g = np.asarray(gamma(ts), np.float64)  # difference (−3 g₀ + 4 g₁ − g₂) / h
        one_sided = (-3 * g[0] + 4 * g[1] - g[2]) / h
        assert abs(float(dgamma(jnp.float32(t)))) > 1.0  # not the clip's zero
        np.testing.assert_allclose(float(dgamma(jnp.float32(t))), one_sided, rtol=2e-2)
