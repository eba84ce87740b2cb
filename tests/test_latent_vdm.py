"""Latent diffusion model (vae_jax/models/latent_vdm.py): the bound's terms and weights."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import losses
from vae_jax.models.latent_vdm import latent_vdm_model

IMAGE = (4, 4, 1)


def _model(**kw):
    cfg = dict(image_shape=IMAGE, latent_dim=3, hidden=(16,), score_hidden=(16,), embed_dim=8,
               gamma_min=-8.0, gamma_max=4.0, sample_steps=4)
    cfg.update(kw)
    return latent_vdm_model(**cfg)


def _x(b=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((b, *IMAGE)) < 0.4, jnp.float32)


def _params(model, x, seed=0, scale=0.1):
    """Init parameters plus noise, so the score net's zero-initialised output is not zero."""
    params = jax.jit(model.init)(jax.random.key(seed, impl="unsafe_rbg"), x, jax.random.key(1))
    gen = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + scale * gen.standard_normal(p.shape).astype(np.float32),
                        params)


def test_terms_elbo_and_gradients_continuous():
    model = _model()
    x, key = _x(4), jax.random.key(2)
    params = _params(model, x)

    def loss(p):
        e = losses.elbo_terms(p, x, key, model=model, num_samples=3)
        return -jnp.mean(e["elbo"]), e

    @jax.jit
    def run(p):
        (_, e), grads = jax.value_and_grad(loss, has_aux=True)(p)
        t = model.apply(p, x, key, 3, method="terms")
        q = model.apply(p, x, method="encode")
        s = model.apply(p, jax.random.key(5), 6, method="sample_prior").mean()
        return e, grads, t, q, s

    e, grads, t, q, s = run(params)
    assert t["log_px_z"].shape == t["log_pz"].shape == (3, 4)
    assert set(t["kl"]) == {"prior", "diffusion", "encoder"}
    kl = sum(t["kl"].values())
    np.testing.assert_allclose(e["elbo"], jnp.mean(t["log_px_z"], 0) - kl, rtol=1e-5)
    # The encoder term is Σ_d (½ γ₀ − log s_d) (the closed form in the docstring), with the
    # learned γ₀ (moved from its initial −8 by the noise in the parameters).
    g0 = params["params"]["diffusion"]["schedule"]["gamma_min"]
    assert abs(float(g0) + 8.0) > 1e-3
    np.testing.assert_allclose(t["kl"]["encoder"], jnp.sum(0.5 * g0 - q.log_std, -1), rtol=1e-5)
    # Non-exact weights still average to the ELBO.
    log_w = t["log_px_z"] + t["log_pz"] - t["log_qz"]
    np.testing.assert_allclose(jnp.mean(log_w, 0), e["elbo"], rtol=1e-5)
    assert not model.exact_log_weights
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
    assert float(jnp.max(jnp.abs(grads["params"]["encoder"]["out"]["kernel"]))) > 0
    assert s.shape == (6, *IMAGE) and 0 <= float(s.min()) and float(s.max()) <= 1


def test_trajectory_weights_average_to_the_elbo_and_iwae_tightens_it():
    """The per-trajectory weights use the sampled z₀ in log p(z|z₀) and the sampled z in
    log q(z|x): their average matching the ELBO checks the closed-form encoder term."""
    model = _model(timesteps=10, schedule="fixed_linear", gamma_min=-5.0, gamma_max=3.0)
    b, k = 16, 256
    x = _x(b, seed=1)
    params = _params(model, x, seed=3)
    assert model.exact_log_weights
    t = jax.jit(lambda p: model.apply(p, x, jax.random.key(7), k, method="terms"))(params)
    log_w = np.asarray(t["log_px_z"] + t["log_pz"] - t["log_qz"], np.float64)     # [k, B]
    elbo = np.asarray(jnp.mean(t["log_px_z"], 0) - sum(t["kl"].values()), np.float64)
    se = log_w.std(0) / math.sqrt(k)                                              # [B]
    se_all = math.sqrt(np.sum(se ** 2)) / b
    print("mean log w", log_w.mean(), "ELBO", elbo.mean(), "±", se_all)
    assert np.all(np.abs(log_w.mean(0) - elbo) < 5 * se + 1e-3 * np.abs(elbo))
    # Pooled: tight enough to see a missing ½ log 2π per latent dimension (2.8 nats here).
    assert abs(log_w.mean() - elbo.mean()) < 4 * se_all < 1.0
    iwae = {n: jax.nn.logsumexp(log_w[:n], 0) - math.log(n) for n in (1, 16, 256)}
    assert iwae[16].mean() > elbo.mean() and iwae[256].mean() > iwae[16].mean()
    # E_q[Σ kl] bounds KL(q(z|x) ‖ p(z)) ≥ 0 from above.
    assert float(jnp.mean(sum(t["kl"].values()))) > 0


@pytest.mark.parametrize("timesteps,trajectory", [(3, False)])
def test_one_step_discrete_estimator_has_no_exact_weights(timesteps, trajectory):
    model = _model(timesteps=timesteps, trajectory=trajectory)
    assert not model.exact_log_weights
