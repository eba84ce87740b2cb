"""Latent diffusion model (vae_jax/models/vdm/latent.py): the bound's terms and weights, for
each backbone (the MLP and the resnet VAE's encoder and decoder)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import losses, models
from vae_jax.models.vdm.latent import latent_vdm_model

IMAGE = (4, 4, 1)
# Each backbone's own fields at a tiny size (4x4 images: two stride-2 stages for the resnet).
BACKBONE = {"mlp": dict(hidden=(16,)),
            "resnet": dict(backbone="resnet", channels=(4, 8), blocks=1)}


def _model(backbone="mlp", **kw):
    cfg = dict(image_shape=IMAGE, latent_dim=3, score_hidden=(16,), embed_dim=8,
               gamma_min=-8.0, gamma_max=4.0, sample_steps=4, **BACKBONE[backbone])
    cfg.update(kw)
    return latent_vdm_model(**cfg)


def _x(b=16, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((b, *IMAGE)) < 0.4, jnp.float32)


def _x8(b=16, seed=0):
    """8-bit pixel values on the pixel / 255 scale."""
    return jnp.asarray(np.random.default_rng(seed).integers(0, 256, (b, *IMAGE)) / 255.0,
                       jnp.float32)


def _params(model, x, seed=0, scale=0.1):
    """Init parameters plus noise, so the score net's zero-initialised output is not zero."""
    params = jax.jit(model.init)(jax.random.key(seed, impl="unsafe_rbg"), x, jax.random.key(1))
    gen = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + scale * gen.standard_normal(p.shape).astype(np.float32),
                        params)


@pytest.mark.parametrize("backbone, likelihood, data", [
    ("mlp", "bernoulli", _x), ("resnet", "discretized_logistic_mix5", _x8)])
@pytest.mark.slow
def test_terms_elbo_and_gradients_continuous(backbone, likelihood, data):
    model = _model(backbone, likelihood=likelihood)
    x, key = data(4), jax.random.key(2)
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


@pytest.mark.slow
@pytest.mark.parametrize("backbone", sorted(BACKBONE))
def test_trajectory_weights_average_to_the_elbo_and_iwae_tightens_it(backbone):
    """The per-trajectory weights use the sampled z₀ in log p(z|z₀) and the sampled z in
    log q(z|x): their average matching the ELBO checks the closed-form encoder term."""
    model = _model(backbone, timesteps=10, schedule="fixed_linear", gamma_min=-5.0,
                   gamma_max=3.0)
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


@pytest.mark.slow
def test_the_resnet_backbone_is_the_resnet_vaes_encoder_and_decoder():
    """The resnet VAE's parameters, copied into the latent VDM's encoder and decoder, give
    the same q(z|x) and the same log p(x|z) for the same z: the backbone is that VAE's
    network with its arguments (channels, blocks and, by default, its activation)."""
    kw = dict(image_shape=IMAGE, latent_dim=3, channels=(4, 8), blocks=1,
              likelihood="discretized_logistic_mix5")
    vae = models.get("resnet", **kw)
    model = latent_vdm_model(backbone="resnet", score_hidden=(16,), embed_dim=8, **kw)
    x = _x8(4, seed=2)
    vae_params = _params(vae, x, seed=4)
    # Only the encoder's and decoder's parameters: encode and decode read no others.
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, jax.random.key(1))["params"]
    params = {"params": {}}
    for net in ("encoder", "decoder"):
        assert (jax.tree.map(jnp.shape, shapes[net])
                == jax.tree.map(jnp.shape, vae_params["params"][net])), net
        params["params"][net] = vae_params["params"][net]
    z = jax.random.normal(jax.random.key(3), (4, 3))

    def q_and_log_px_z(m, p):
        q = m.apply(p, x, method="encode")
        return q.mean, q.log_std, m.apply(p, z, method="decode").log_prob(x)

    ours, theirs = jax.jit(lambda p, vp: (q_and_log_px_z(model, p), q_and_log_px_z(vae, vp)))(
        params, vae_params)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert float(jnp.std(theirs[2])) > 0   # not a constant the two could share by chance


def test_the_default_backbone_is_the_mlp_of_before():
    """Existing configs and checkpoints (no backbone field) build today's MLP VAE."""
    from vae_jax.models.mlp import MLPDecoder, MLPEncoder

    model = latent_vdm_model(image_shape=IMAGE)
    assert model.encoder == MLPEncoder(16, (256,), "relu")
    assert model.decoder == MLPDecoder(IMAGE, 1, (256,), "relu")
    assert _model().encoder == MLPEncoder(3, (16,), "relu")


def test_a_bad_backbone_or_another_backbones_field_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"config.model.backbone='vgg'; valid: "
                                         r"\['mlp', 'resnet'\]"):
        latent_vdm_model(image_shape=IMAGE, backbone="vgg")
    with pytest.raises(ValueError, match=r"config.model.hidden=\(16,\) is not read by "
                                         r"config.model.backbone='resnet'"):
        latent_vdm_model(image_shape=IMAGE, backbone="resnet", hidden=(16,))


@pytest.mark.parametrize("timesteps,trajectory", [(3, False)])
def test_one_step_discrete_estimator_has_no_exact_weights(timesteps, trajectory):
    model = _model(timesteps=timesteps, trajectory=trajectory)
    assert not model.exact_log_weights
