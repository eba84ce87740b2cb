"""The ELBO's terms against closed forms; beta, free bits, jit, gradients."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.ops.initialize import initialize  # jit(model.init)'s values
from vae_jax import losses, models
from vae_jax.models.vae import VAE

D_X, D_Z, LOG_SIGMA_X = 5, 3, math.log(0.7)


class LinearEncoder(nn.Module):
    """q(z|x) = N(A x + c, diag exp(2 s)), s a free parameter vector."""

    latent_dim: int

    @nn.compact
    def __call__(self, x):
        h = x.reshape(x.shape[0], -1)
        mean = nn.Dense(self.latent_dim, name="mean")(h)
        s = self.param("log_std", nn.initializers.normal(0.5), (self.latent_dim,))
        return mean, jnp.broadcast_to(s, mean.shape)


class LinearGaussianDecoder(nn.Module):
    """p(x|z) = N(W z + b, exp(2 LOG_SIGMA_X) I): outputs [N, D_X, 1, 2] (mean, log-scale)."""

    @nn.compact
    def __call__(self, z):
        mean = nn.Dense(D_X, name="out", kernel_init=nn.initializers.normal(1.0),
                        bias_init=nn.initializers.normal(1.0))(z)
        out = jnp.stack([mean, jnp.full_like(mean, LOG_SIGMA_X)], axis=-1)
        return out.reshape(z.shape[0], D_X, 1, 2)


def linear_gaussian_vae():
    return VAE(LinearEncoder(D_Z), LinearGaussianDecoder(), latent_dim=D_Z,
               likelihood="gaussian")


def _setup(batch=4, seed=0):
    model = linear_gaussian_vae()
    x = jax.random.normal(jax.random.key(seed), (batch, D_X, 1, 1))
    params = initialize(model.init, jax.random.key(seed + 1), x, jax.random.key(seed + 2))
    return model, params, x


@pytest.mark.slow
def test_linear_gaussian_log_px_z_monte_carlo_converges_to_closed_form():
    model, params, x = _setup()
    q = model.apply(params, x, method="encode")
    W = params["params"]["decoder"]["out"]["kernel"]  # [D_Z, D_X]: mean = z @ W + b
    b = params["params"]["decoder"]["out"]["bias"]
    sigma2 = math.exp(2 * LOG_SIGMA_X)
    resid = x.reshape(-1, D_X) - (q.mean @ W + b)
    trace = jnp.einsum("bj,jd->b", jnp.exp(2 * q.log_std), W**2)
    closed = (-0.5 * D_X * math.log(2 * math.pi * sigma2)
              - (jnp.sum(resid**2, -1) + trace) / (2 * sigma2))
    errors = []
    for L in (10, 100_000):
        terms = losses.elbo_terms(params, x, jax.random.key(7), model=model, num_samples=L)
        assert terms["log_px_z"].shape == (4,)
        errors.append(float(jnp.max(jnp.abs(terms["log_px_z"] - closed))))
    # Monte Carlo error shrinks like 1/sqrt(L): 100k samples are within ~1e-2 nats.
    assert errors[1] < 2e-2 * float(jnp.max(jnp.abs(closed))) + 2e-2
    assert errors[1] < errors[0]
    # The KL is closed form, and the ELBO is the difference.
    np.testing.assert_allclose(terms["kl"], losses.gaussian_kl(q.mean, q.log_std), rtol=1e-6)
    np.testing.assert_allclose(terms["elbo"], terms["log_px_z"] - terms["kl"], rtol=1e-6)


@pytest.mark.slow
def test_beta_zero_leaves_only_reconstruction_and_jit_agrees():
    model, params, x = _setup()
    key = jax.random.key(3)
    loss_fn = functools.partial(losses.elbo, model=model, num_samples=2)
    loss0, m0 = loss_fn(params, x, key, beta=0.0)
    np.testing.assert_allclose(loss0, -m0["log_px_z"], rtol=1e-6)
    loss1, m1 = loss_fn(params, x, key, beta=1.0)
    np.testing.assert_allclose(loss1, -m1["elbo"], rtol=1e-6)
    loss2, _ = loss_fn(params, x, key, beta=2.5)
    np.testing.assert_allclose(loss2, -m1["log_px_z"] + 2.5 * m1["kl"], rtol=1e-6)
    jitted = jax.jit(loss_fn)
    np.testing.assert_allclose(jitted(params, x, key, beta=0.0)[0], loss0, rtol=1e-5)
    grads = jax.grad(lambda p: loss_fn(p, x, key, beta=0.0)[0])(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # With beta = 0 the KL contributes nothing: the gradient equals the reconstruction's.
    g_rec = jax.grad(lambda p: -jnp.mean(
        losses.elbo_terms(p, x, key, model=model, num_samples=2)["log_px_z"]))(params)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(g_rec)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_free_bits_floor_per_dimension():
    model, params, x = _setup()
    key = jax.random.key(5)
    loss, m = losses.elbo(params, x, key, model=model, free_bits=50.0)
    # Every dimension's batch-mean KL is far below 50 nats: the floor binds on all D_Z.
    np.testing.assert_allclose(loss, -m["log_px_z"] + 50.0 * D_Z, rtol=1e-6)
    loss_off, m_off = losses.elbo(params, x, key, model=model, free_bits=0.0)
    np.testing.assert_allclose(loss_off, -m_off["elbo"], rtol=1e-6)


def test_beta_schedule_linear_warmup():
    sched = functools.partial(losses.beta_schedule, beta=2.0, warmup_steps=100)
    np.testing.assert_allclose([sched(jnp.array(s)) for s in (0, 50, 100, 500)],
                               [0.0, 1.0, 2.0, 2.0])
    np.testing.assert_allclose(losses.beta_schedule(jnp.array(7), beta=0.5), 0.5)


@pytest.mark.slow
def test_default_mlp_vae_terms_shapes_and_finite_gradients():
    model = models.get("mlp", image_shape=(28, 28, 1))
    x = (jax.random.uniform(jax.random.key(0), (8, 28, 28, 1)) > 0.5).astype(jnp.float32)
    params = initialize(model.init, jax.random.key(1), x, jax.random.key(2))
    assert params["params"]["encoder"]["hidden_0"]["kernel"].shape == (784, 500)
    assert params["params"]["encoder"]["out"]["kernel"].shape == (500, 40)
    assert params["params"]["decoder"]["hidden_0"]["kernel"].shape == (20, 500)
    assert params["params"]["decoder"]["out"]["kernel"].shape == (500, 784)
    t = jax.jit(lambda p, x, k: model.apply(p, x, k, 3, method="terms"))(
        params, x, jax.random.key(3))
    assert t["log_px_z"].shape == (3, 8) and t["kl"]["z"].shape == (8, 20)
    (loss, metrics), grads = jax.jit(jax.value_and_grad(
        functools.partial(losses.elbo, model=model), has_aux=True))(params, x, jax.random.key(4))
    assert np.isfinite(loss) and all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    # An untrained decoder with near-zero logits costs about 784 log 2 nats per image.
    assert abs(float(-metrics["log_px_z"]) - 784 * math.log(2)) < 100


def test_unknown_names_are_clear_errors():
    with pytest.raises(ValueError, match="Unknown loss 'elbow'.*'elbo'"):
        losses.get("elbow")
    with pytest.raises(ValueError, match="Unknown model 'transformer'.*'mlp'"):
        models.get("transformer", image_shape=(28, 28, 1))
