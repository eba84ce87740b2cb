"""IWAE bound, β-VAE, KL warm-up and free bits: checked against the quantities they are
defined from (the model's own log weights, closed-form KL, manual formulas)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.ops.initialize import initialize  # jit(model.init)'s values
from vae_jax import losses, models
from vae_jax.distributions import gaussian_kl_elementwise


@pytest.fixture(scope="module")
def setup():
    """A small random MLP VAE and synthetic binary images [16, 6, 6, 1]."""
    model = models.get("mlp", image_shape=(6, 6, 1), latent_dim=3, hidden=(16,))
    params = initialize(model.init, jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jax.random.key(1))
    x = (jax.random.uniform(jax.random.key(2), (16, 6, 6, 1)) < 0.4).astype(jnp.float32)
    return model, params, x


@pytest.mark.slow
def test_iwae_k1_equals_single_sample_elbo(setup):
    model, params, x = setup
    key = jax.random.key(7)
    bound = losses.iwae_bound(params, x, key, model=model, num_samples=1)
    # The single-sample ELBO estimate log p(x|z) + log p(z) − log q(z|x) with the same z.
    t = model.apply(params, x, key, 1, method="terms")
    single = (t["log_px_z"] + t["log_pz"] - t["log_qz"])[0]
    np.testing.assert_allclose(bound, single, rtol=1e-6, atol=1e-4)
    # ... whose reconstruction term is elbo_terms' for the same key (same z), and whose
    # Monte Carlo KL, log q − log p, averages to the closed-form KL.
    terms = losses.elbo_terms(params, x, key, model=model)
    np.testing.assert_allclose(t["log_px_z"][0], terms["log_px_z"], rtol=1e-6)
    keys = jax.random.split(jax.random.key(8), 2000)
    mc_kl = jax.vmap(lambda k: (lambda t: t["log_qz"] - t["log_pz"])(
        model.apply(params, x, k, 1, method="terms"))[0])(keys)      # [2000, B]
    err = mc_kl.std(0) / np.sqrt(len(keys))
    assert np.all(np.abs(mc_kl.mean(0) - terms["kl"]) < 5 * err + 1e-4)


@pytest.mark.slow
def test_iwae_bound_grows_with_k(setup):
    """E[IWAE_k] is non-decreasing in k (Burda et al., Thm 1), strictly here since q ≠ p(z|x)."""
    model, params, x = setup
    keys = jax.random.split(jax.random.key(3), 300)
    means, errs = [], []
    for k in (1, 5, 50):
        fn = jax.jit(functools.partial(losses.iwae_bound, model=model, num_samples=k))
        vals = jax.vmap(lambda key: fn(params, x, key).mean())(keys)  # [300]
        means.append(float(vals.mean()))
        errs.append(float(vals.std() / np.sqrt(len(keys))))
    for i in range(2):
        assert means[i + 1] - means[i] > 3 * (errs[i] + errs[i + 1]), (means, errs)


@pytest.mark.slow
def test_iwae_loss_is_negative_mean_bound(setup):
    model, params, x = setup
    key = jax.random.key(4)
    loss, metrics = losses.iwae(params, x, key, model=model, num_samples=5)
    bound = losses.iwae_bound(params, x, key, model=model, num_samples=5)
    np.testing.assert_allclose(loss, -bound.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["iwae"], bound.mean(), rtol=1e-6)
    grads = jax.grad(lambda p: losses.iwae(p, x, key, model=model, num_samples=5)[0])(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_beta_elbo_weights_the_kl(setup):
    model, params, x = setup
    key = jax.random.key(5)
    t = losses.elbo_terms(params, x, key, model=model)
    for beta in (0.0, 0.5, 4.0):
        loss, metrics = losses.elbo(params, x, key, model=model, beta=beta)
        np.testing.assert_allclose(loss, -t["log_px_z"].mean() + beta * t["kl"].mean(),
                                   rtol=1e-6)
        np.testing.assert_allclose(metrics["elbo"], t["elbo"].mean(), rtol=1e-6)  # true ELBO


def test_kl_warmup_is_linear():
    f = functools.partial(losses.beta_schedule, beta=2.0, warmup_steps=100)
    got = [float(f(jnp.asarray(s))) for s in (0, 25, 50, 100, 1000)]
    np.testing.assert_allclose(got, [0.0, 0.5, 1.0, 2.0, 2.0])
    assert float(losses.beta_schedule(jnp.asarray(0), beta=0.7, warmup_steps=0)) == \
        pytest.approx(0.7)


@pytest.mark.slow
def test_free_bits_floor_per_dimension(setup):
    model, params, x = setup
    key = jax.random.key(6)
    mean, log_std = model.apply(params, x, method=lambda m, x: m.encoder(x))
    kl_dim = np.asarray(gaussian_kl_elementwise(mean, log_std)).mean(0)      # [D]
    t = losses.elbo_terms(params, x, key, model=model)
    floor = float(np.median(kl_dim))  # some dimensions above, some below the floor
    loss, _ = losses.elbo(params, x, key, model=model, free_bits=floor)
    np.testing.assert_allclose(
        loss, -t["log_px_z"].mean() + np.maximum(floor, kl_dim).sum(), rtol=1e-5)
    # A floor above every dimension's KL makes the KL term constant: no KL gradient reaches
    # the encoder's log-std bias except through the reconstruction term.
    big = float(kl_dim.max()) + 1.0
    g_fb = jax.grad(lambda p: losses.elbo(p, x, key, model=model, free_bits=big)[0])(params)
    g_rec = jax.grad(lambda p: -losses.elbo_terms(p, x, key, model=model)["log_px_z"].mean())(
        params)
    for a, b in zip(jax.tree.leaves(g_fb), jax.tree.leaves(g_rec)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
