"""Hierarchical VAEs (vae_jax/models/hvae.py): maths against the plain VAE and closed forms."""

import functools
import math
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import requires_fashion_mnist
from vae_jax import losses, models
from vae_jax.evaluate import active_units, sampling
from vae_jax.run import experiment
from vae_jax import config as config_lib
from vae_jax.run import build
from vae_jax.models.hvae import HVAE, precision_weighted, vae_to_hvae_params
from vae_jax.ops.initialize import initialize

INFERENCES = ("markov", "ladder")


def _jit(fn, **static):
    """jit with the model and other static arguments bound (op-by-op is slow on CPU)."""
    return jax.jit(functools.partial(fn, **static))


def elbo_terms(params, x, key, *, model, num_samples):
    return _jit(losses.elbo_terms, model=model, num_samples=num_samples)(params, x, key)


def log_weights(params, x, key, *, model, num_samples):
    return _jit(losses.log_importance_weights, model=model, num_samples=num_samples)(
        params, x, key)


def _init(model, x, seed=0):
    """jax.jit(model.init)'s values, from one small program (ops.initialize)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.tree.map(jnp.asarray, initialize(model.init, k1, x, k2))


def _binary_images(key, shape=(6, 6, 6, 1)):
    return jax.random.bernoulli(key, 0.4, shape).astype(jnp.float32)


# --------------------------------------------------------------- 1 layer == the plain VAE

@pytest.mark.slow
@pytest.mark.parametrize("inference", INFERENCES)
def test_one_layer_hvae_reproduces_the_vae_elbo(inference):
    shape = (6, 6, 1)
    vae = models.get("mlp", image_shape=shape, latent_dim=4, hidden=(16, 8), activation="tanh")
    hvae = models.get("hvae", image_shape=shape, latent_dims=(4,), hidden=((16, 8),),
                      activation="tanh", inference=inference)
    k_init, k_x, k_z = jax.random.split(jax.random.key(0), 3)
    x = _binary_images(k_x)
    vae_params = jax.jit(vae.init)(k_init, x, k_z)
    params = vae_to_hvae_params(vae_params, inference)
    # The mapping is onto the HVAE's own parameter tree, not a look-alike.
    own = jax.eval_shape(hvae.init, k_init, x, k_z)
    assert jax.tree.structure(own) == jax.tree.structure(params)
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, params)

    for num_samples in (3,):
        a = elbo_terms(vae_params, x, k_z, model=vae, num_samples=num_samples)
        b = elbo_terms(params, x, k_z, model=hvae, num_samples=num_samples)
        assert set(a) == set(b) == {"log_px_z", "kl", "elbo"}
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-6, atol=1e-5, err_msg=name)
        wa = log_weights(vae_params, x, k_z, model=vae, num_samples=num_samples)
        wb = log_weights(params, x, k_z, model=hvae, num_samples=num_samples)
        np.testing.assert_allclose(wb, wa, rtol=1e-6, atol=1e-5)
    # Sampling and reconstruction paths coincide too (the HVAE draws z_T with split(key)[0]).
    z = jax.random.normal(jax.random.split(k_z)[0], (3, 4))
    np.testing.assert_allclose(sampling.prior_samples(params, k_z, model=hvae, num=3),
                               vae.apply(vae_params, z, method="decode").mean(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sampling.reconstructions(params, x, model=hvae),
                               sampling.reconstructions(vae_params, x, model=vae),
                               rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------- per-layer KL terms

def _model(inference, dims=(6, 4, 3), analytic_kl=True):
    return models.get("hvae", image_shape=(6, 6, 1), latent_dims=dims,
                      hidden=tuple((12,) for _ in dims), activation="tanh",
                      inference=inference, analytic_kl=analytic_kl)


@pytest.mark.slow
@pytest.mark.parametrize("inference", INFERENCES)
def test_per_layer_kl_sum_to_total_and_closed_forms_are_nonnegative(inference):
    model = _model(inference)
    k_init, k_x, k_z = jax.random.split(jax.random.key(1), 3)
    x = _binary_images(k_x)
    params = jax.jit(model.init)(k_init, x, k_z)
    t = elbo_terms(params, x, k_z, model=model, num_samples=4)
    layers = [k for k in t if re.fullmatch(r"kl_\d+", k)]
    assert sorted(layers) == ["kl_1", "kl_2", "kl_3"]
    np.testing.assert_allclose(sum(t[k] for k in layers), t["kl"], rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(t["log_px_z"] - t["kl"], t["elbo"], rtol=1e-6, atol=1e-5)
    # Closed forms (every ladder layer; the Markov top layer) are KLs of Gaussians: >= 0.
    closed = layers if inference == "ladder" else ["kl_3"]
    for k in closed:
        assert np.all(np.asarray(t[k]) >= 0.0), (k, t[k])
    # Their per-dimension form: kl entries of raw terms [B, D_l] are each >= 0.
    raw = jax.jit(functools.partial(model.apply, method="terms"), static_argnums=3)(
        params, x, k_z, 4)["kl"]
    shapes = {k: v.shape for k, v in raw.items()}
    if inference == "ladder":
        assert shapes == {"1": (6, 6), "2": (6, 4), "3": (6, 3)}
    else:
        assert shapes == {"1": (6, 1), "2": (6, 1), "3": (6, 3)}
    for k in ("1", "2", "3") if inference == "ladder" else ("3",):
        assert np.all(np.asarray(raw[k]) >= -1e-6)


@pytest.mark.slow
def test_markov_mc_terms_tail_sums_are_kls():
    """For the Markov chain a lower-layer term E_q[log q(z_l|z_{l−1}) − log p(z_l|z_{l+1})]
    is no KL (z_{l+1} is drawn from z_l under q), but every tail sum l..T is
    E KL(q(z_{l:T}|z_{l−1}) || p(z_{l:T})) >= 0; check it with many samples."""
    model = _model("markov")
    k_init, k_x, k_z = jax.random.split(jax.random.key(2), 3)
    x = _binary_images(k_x)
    params = jax.jit(model.init)(k_init, x, k_z)
    t = elbo_terms(params, x, k_z, model=model, num_samples=2000)
    assert np.all(np.asarray(t["kl_3"]) >= 0)
    assert np.all(np.asarray(t["kl_2"] + t["kl_3"]) >= 0)
    assert np.all(np.asarray(t["kl"]) >= 0)


@pytest.mark.slow
@pytest.mark.parametrize("inference", INFERENCES)
def test_all_mc_elbo_equals_mean_log_weight_and_closed_forms_agree_in_expectation(inference):
    x = _binary_images(jax.random.key(3))
    dims = (6, 4, 3)
    mc, closed = _model(inference, dims, analytic_kl=False), _model(inference, dims)
    params = jax.jit(closed.init)(jax.random.key(4), x, jax.random.key(5))
    key, n = jax.random.key(6), 4000
    # All-MC: the ELBO estimate is exactly mean_L(log p(x, z) − log q(z | x)).
    a = elbo_terms(params, x, key, model=mc, num_samples=n)
    log_w = log_weights(params, x, key, model=mc, num_samples=n)
    np.testing.assert_allclose(a["elbo"], jnp.mean(log_w, 0), rtol=1e-5, atol=1e-3)
    # Closed-form KLs: the same expectation, per layer, with many samples.
    b = elbo_terms(params, x, key, model=closed, num_samples=n)
    np.testing.assert_allclose(b["elbo"], a["elbo"], rtol=0.0, atol=0.05 * np.abs(a["kl"]).max())
    for k in ("kl_1", "kl_2", "kl_3"):
        np.testing.assert_allclose(b[k], a[k], atol=0.5 + 0.05 * np.abs(a[k]).max(), err_msg=k)


# ---------------------------------------------- IS log-likelihood on a linear-Gaussian chain

SIGMA = 0.5
A = np.array([[1.0], [-0.7]])                   # z_1 | z_2 ~ N(A z_2 + a, diag(s1²))
a_ = np.array([0.3, -0.2])
S1 = np.array([0.6, 0.8])
W = np.array([[1.0, 0.5], [-0.4, 0.9], [0.7, -0.6]])  # x | z_1 ~ N(W z_1 + b, σ² I)
b_ = np.array([0.1, -0.3, 0.2])


def _set_linear_generative(params):
    """Linear-Gaussian chain z_2 → z_1 → x in an HVAE with hidden=() everywhere: the
    log-std columns of each Dense are zeroed so the variances are constant."""
    p = jax.tree.map(np.array, params)["params"]
    k1 = np.zeros((1, 4)); k1[:, :2] = A.T
    p["p_1"]["out"] = {"kernel": k1, "bias": np.concatenate([a_, np.log(S1)])}
    kx = np.zeros((2, 6)); kx[:, 0::2] = W.T           # pixel i -> outputs (2i, 2i+1)
    bx = np.zeros(6); bx[0::2] = b_; bx[1::2] = math.log(SIGMA)
    p["p_x"]["out"] = {"kernel": kx, "bias": bx}
    return jax.tree.map(jnp.asarray, {"params": p})


def _dense(kernel_mean, bias_mean, std):
    """An MLPEncoder 'out' layer with linear mean and a constant std: (mean | log_std)."""
    d = kernel_mean.shape[1]
    return {"kernel": np.concatenate([kernel_mean, np.zeros_like(kernel_mean)], 1),
            "bias": np.concatenate([bias_mean, np.log(std) * np.ones(d)])}


def _set_linear_inference(params, inference):
    """A good, overdispersed proposal built from the exact Gaussian posteriors (diagonal)."""
    p = jax.tree.map(np.array, params)["params"]
    D = np.diag(S1 ** 2)
    if inference == "markov":
        C1 = A @ A.T + D                                  # marginal cov of z_1
        P = np.linalg.inv(C1) + W.T @ W / SIGMA ** 2      # p(z_1 | x) precision
        cov = np.linalg.inv(P)
        M = cov @ W.T / SIGMA ** 2                        # mean = M x + c
        c = cov @ (np.linalg.solve(C1, a_) - W.T @ b_ / SIGMA ** 2)
        p["q_1"]["out"] = _dense(M.T, c, 1.3 * np.sqrt(np.diag(cov)))
        p2 = 1.0 + (A.T @ np.linalg.solve(D, A)).item()     # p(z_2 | z_1) precision
        k2 = np.linalg.solve(D, A) / p2
        p["q_2"]["out"] = _dense(k2, -(a_ @ k2), 1.2 / np.sqrt(p2) * np.ones(1))
    else:
        Sx = W @ D @ W.T + SIGMA ** 2 * np.eye(3)         # cov of x | z_2
        G = W @ A
        prec = 1.0 + (G.T @ np.linalg.solve(Sx, G)).item()  # p(z_2 | x) precision
        k2 = np.linalg.solve(Sx, G) / prec
        p["bu_2"]["out"] = _dense(k2, -((W @ a_ + b_) @ k2), 1.3 / np.sqrt(prec) * np.ones(1))
        pinv = np.linalg.pinv(W)                          # the likelihood's message on z_1
        msg_cov = SIGMA ** 2 * np.linalg.inv(W.T @ W)
        p["bu_1"]["out"] = _dense(pinv.T, -(pinv @ b_), 1.5 * np.sqrt(np.diag(msg_cov)))
    return jax.tree.map(jnp.asarray, {"params": p})


def _closed_form_log_px(x):
    mean = W @ a_ + b_
    cov = W @ (A @ A.T + np.diag(S1 ** 2)) @ W.T + SIGMA ** 2 * np.eye(3)
    d = x - mean
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (np.einsum("bi,ij,bj->b", d, np.linalg.inv(cov), d) + logdet
                   + 3 * math.log(2 * math.pi))


@pytest.mark.slow
@pytest.mark.parametrize("inference", INFERENCES)
def test_importance_sampled_log_likelihood_matches_linear_gaussian_closed_form(inference):
    model = HVAE(image_shape=(1, 1, 3), latent_dims=(2, 1), hidden=((), ()),
                 likelihood="gaussian", inference=inference)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 1, 1, 3)) * 1.5, jnp.float32)
    params = _set_linear_generative(model.init(jax.random.key(7), x, jax.random.key(8)))
    params = _set_linear_inference(params, inference)
    truth = _closed_form_log_px(np.asarray(x).reshape(5, 3))

    k = 5000
    log_w = np.asarray(log_weights(params, x, jax.random.key(9), model=model, num_samples=k),
                       np.float64)  # [k, B]

    def estimate(lw):
        m = lw.max(0)
        w = np.exp(lw - m)
        return np.log(w.mean(0)) + m, w.std(0) / (math.sqrt(len(lw)) * w.mean(0))  # delta s.e.

    est, se = estimate(log_w)
    assert np.all(se < 0.05), se  # precise enough for the check to bite
    assert np.all(np.abs(est - truth) < 4 * se + 2e-3), (est, truth, se)
    # Convergence from below: ELBO (k = 1) < mean IWAE-1000 (5 disjoint groups) ≈ log p(x).
    gap_1 = truth - log_w.mean(0)
    gap_1000 = truth - np.mean([estimate(g)[0] for g in np.split(log_w, 5)], 0)
    assert np.all(gap_1 > 0.05) and np.all(gap_1 > gap_1000 + 0.05), (gap_1, gap_1000)
    assert np.all(np.abs(gap_1000) < 0.1), gap_1000
    # And it is the IWAE bound that evaluation uses, with the same key.
    bound = _jit(losses.iwae_bound, model=model, num_samples=k)(params, x, jax.random.key(9))
    np.testing.assert_allclose(bound, est, rtol=1e-4, atol=1e-3)


def test_precision_weighting_is_the_gaussian_product():
    ma, sa, mb, sb = 0.4, 0.3, -1.0, 0.8
    q = precision_weighted(jnp.array(ma), jnp.log(jnp.array(sa)), jnp.array(mb),
                           jnp.log(jnp.array(sb)))
    var = 1.0 / (1 / sa ** 2 + 1 / sb ** 2)
    np.testing.assert_allclose(q.std ** 2, var, rtol=1e-6)
    np.testing.assert_allclose(q.mean, var * (ma / sa ** 2 + mb / sb ** 2), rtol=1e-6)


# ------------------------------------------------------------------ sampling, active units

@pytest.mark.slow
@pytest.mark.parametrize("inference", INFERENCES)
def test_sampling_shapes_and_top_down_temperature(inference):
    model = _model(inference)
    x = _binary_images(jax.random.key(10))
    params = jax.jit(model.init)(jax.random.key(11), x, jax.random.key(12))
    s = sampling.prior_samples(params, jax.random.key(13), model=model, num=5)
    assert s.shape == (5, 6, 6, 1) and float(s.min()) >= 0 and float(s.max()) <= 1
    r = sampling.reconstructions(params, x, model=model)
    assert r.shape == x.shape
    # Temperature 0: every layer at its conditional mean from z_T = 0, i.e. decode(0).
    cold = model.apply(params, jax.random.key(14), 3, 0.0, method="sample_prior").mean()
    np.testing.assert_allclose(cold, model.apply(params, jnp.zeros((3, 3)),
                                                 method="decode").mean(), rtol=1e-6)
    assert not np.allclose(s[:3], cold)
    assert model.apply(params, x, method="encode").mean.shape == (6, 3)


@pytest.mark.slow
def test_active_units_per_layer_against_a_known_linear_encoder():
    """Markov q with linear means: E_q[z_2|x] = M_2 μ_1(x) + c_2 exactly, so its variance over
    x is known; z_1's units 0..2 are driven by x, unit 3 is not; z_2 unit 1 is dead."""
    model = HVAE(image_shape=(1, 1, 3), latent_dims=(4, 2), hidden=((), ()),
                 likelihood="gaussian", inference="markov")
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(400, 1, 1, 3), dtype=np.uint8)
    params = jax.tree.map(np.array, model.init(jax.random.key(0), jnp.zeros((1, 1, 1, 3)),
                                               jax.random.key(1)))
    m1 = np.zeros((3, 4)); m1[:3, :3] = np.diag([1.0, 0.5, 0.05])   # unit 3 ignores x
    params["params"]["q_1"]["out"] = {"kernel": np.concatenate([m1, np.zeros((3, 4))], 1),
                                      "bias": np.zeros(8)}
    m2 = np.zeros((4, 2)); m2[0, 0] = 2.0
    params["params"]["q_2"]["out"] = {"kernel": np.concatenate([m2, np.zeros((4, 2))], 1),
                                      "bias": np.zeros(4)}
    params = jax.tree.map(jnp.asarray, params)
    xf = images.reshape(-1, 3) / 255.0
    exact2 = np.var(2.0 * xf[:, 0])
    # All 400 draws at once, and streamed 128 at a time (3 chunks and a remainder of 16).
    for chunk in (None, 128):
        var = active_units.posterior_mean_variance(params, images, model=model,
                                                   binarization="none", num_samples=400,
                                                   batch_size=100, chunk=chunk)
        np.testing.assert_allclose(var["1"], np.r_[np.var(xf @ m1[:, :3], 0), 0.0],
                                   atol=1e-7, rtol=1e-5)
        # Layer 2 is a Monte Carlo average (400 draws of z_1, σ = 1): within ~4 s.e. of exact.
        assert abs(var["2"][0] - exact2) < 4 * 4 / 400 + 0.01 and var["2"][1] < 1e-2, chunk
    counts = active_units.active_units(params, images, model=model, binarization="none",
                                       num_samples=400, batch_size=100)
    # units with variance above 10⁻²: z_1 units 0, 1 (0.05² Var(x) < 10⁻²); z_2 unit 0.
    assert counts == {"1": 2, "2": 1}
    # The plain VAE reports one layer "z".
    vae = models.get("mlp", image_shape=(1, 1, 3), latent_dim=2, hidden=(4,))
    vp = vae.init(jax.random.key(0), jnp.zeros((1, 1, 1, 3)), jax.random.key(1))
    assert set(active_units.active_units(vp, images, model=vae, binarization="none",
                                         batch_size=100)) == {"z"}


@pytest.mark.slow
def test_the_suites_one_pass_equals_its_elbo_and_active_units_calls():
    """The training loop's evaluation runs the ELBO and the active units' posterior means in
    one program (the encoder once): the same terms and counts as the two separate passes,
    for a plain VAE and a two-layer HVAE (Monte Carlo means, dynamic binarization)."""
    from vae_jax import parallel
    from vae_jax.evaluate import suite

    images = np.asarray(jax.random.randint(jax.random.key(3), (60, 4, 4, 1), 0, 256),
                        np.uint8)
    key = jax.random.key(7)
    for name, options in (("mlp", dict(latent_dim=3, hidden=(8,))),
                          ("hvae", dict(latent_dims=(3, 2), hidden=((8,), (6,))))):
        model = models.get(name, image_shape=(4, 4, 1), **options)
        params = _init(model, jnp.zeros((1, 4, 4, 1)))
        s = suite.Suite(model, parallel.data_mesh(), binarization="dynamic", batch_size=20)
        terms, units = s.elbo_and_active_units(params, images, key)
        alone = s.elbo(params, images, key)
        assert set(terms) == set(alone)
        for k in alone:
            np.testing.assert_allclose(terms[k], alone[k], rtol=1e-6, atol=1e-5)
        assert units == s.active_units(params, images, key)
        assert len(units) == (1 if name == "mlp" else 2)
        var = active_units.variance_over_examples(s.elbo_and_means(params, images, key)[1])
        var_alone = active_units.posterior_mean_variance(
            params, images, model=model, key=key, binarization="dynamic", batch_size=20)
        for layer in var_alone:
            np.testing.assert_allclose(var[layer], var_alone[layer], rtol=1e-5, atol=1e-9)


@pytest.mark.slow
def test_the_suites_eval_figures_give_each_layers_units_beside_its_active_units():
    """--mode=eval's figures (``run_suite(likelihood=True)``, eval.json) hold, per latent
    layer, its KL, its active units and the number of units they are counted out of; the
    training loop's evaluation keeps to the KL and the active units."""
    from vae_jax import parallel
    from vae_jax.evaluate import suite

    images = np.asarray(jax.random.randint(jax.random.key(3), (40, 4, 4, 1), 0, 256),
                        np.uint8)
    key = jax.random.key(7)
    for name, options, units in (
            ("mlp", dict(latent_dim=3, hidden=(8,)), {"z": 3}),
            ("hvae", dict(latent_dims=(5, 2), hidden=((8,), (6,))), {"1": 5, "2": 2})):
        model = models.get(name, image_shape=(4, 4, 1), **options)
        params = _init(model, jnp.zeros((1, 4, 4, 1)))
        s = suite.Suite(model, parallel.data_mesh(), binarization="dynamic", batch_size=20)
        figures = suite.run_suite(s, params, images, key, likelihood=True)
        assert {k: v for k, v in figures.items() if k.startswith("latent_units_")} == {
            f"latent_units_{layer}": n for layer, n in units.items()}
        for layer, n in units.items():
            assert 0 <= figures[f"test_au_{layer}"] <= n
        if name == "hvae":
            assert {"test_kl_1", "test_kl_2"} <= set(figures)
        assert not any(k.startswith("latent_units_")
                       for k in suite.run_suite(s, params, images, key))


@pytest.mark.slow
def test_streamed_posterior_means_bound_the_memory_of_a_deep_model():
    """A deep HVAE's every draw of E_q[z_l | x] is a pass through the network: 100 draws of
    a batch at once need 100 batches' activations (1000 Fashion-MNIST test images through
    the shipped deep config asked XLA for 385 GB). Streamed ``chunk`` at a time they need a
    chunk's; the means are over as many draws, and the top layer's needs none."""
    model = models.get("deep_hvae", image_shape=(8, 8, 1), resolutions=(8, 4, 1),
                       encoder_blocks=1, decoder_blocks=(1, 1, 1), widths=8,
                       latent_channels=2)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 2, (16, 8, 8, 1)), jnp.float32)
    params = _init(model, x[:1])

    key = jax.random.key(0)
    compiled = {chunk: jax.jit(functools.partial(
        active_units.posterior_means, model=model, num_samples=100, chunk=chunk)
    ).lower(params, x, key).compile() for chunk in (None, 10)}
    temp = {c: f.memory_analysis().temp_size_in_bytes for c, f in compiled.items()}
    assert temp[10] < temp[None] / 4, temp
    at_once, streamed = compiled[None](params, x, key), compiled[10](params, x, key)
    assert set(at_once) == set(streamed)
    top = model.layer_names[0]  # the top layer's q depends on no draw: equal
    for layer in at_once:
        assert at_once[layer].shape == streamed[layer].shape
        if layer != top:
            assert not np.array_equal(at_once[layer], streamed[layer])  # other draws
    np.testing.assert_allclose(at_once[top], streamed[top], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------ configs, training

def test_burda_two_layer_config_builds_the_paper_architecture():
    from experiments.configs import mnist_iwae_2layer

    for loss in ("elbo", "iwae"):
        config = mnist_iwae_2layer.get_config(loss)
        config_lib.resolve(config)
        assert config.loss.name == loss
    model = build.build_model(config, (28, 28, 1))
    params = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)),
                            jax.random.key(1))
    shapes = {f"{m}/{l}": v["kernel"].shape for m, d in params["params"].items()
              for l, v in d.items()}
    assert shapes == {
        "q_1/hidden_0": (784, 100), "q_1/hidden_1": (100, 100), "q_1/out": (100, 200),
        "q_2/hidden_0": (100, 50), "q_2/hidden_1": (50, 50), "q_2/out": (50, 100),
        "p_1/hidden_0": (50, 50), "p_1/hidden_1": (50, 50), "p_1/out": (50, 200),
        "p_x/hidden_0": (100, 100), "p_x/hidden_1": (100, 100), "p_x/out": (100, 784)}
    with pytest.raises(ValueError, match="elbo' or 'iwae"):
        mnist_iwae_2layer.get_config("vae")


def test_bad_hvae_config_names_the_fix():
    model = models.get("hvae", image_shape=(6, 6, 1), latent_dims=(4, 2), hidden=((8,),))
    with pytest.raises(ValueError, match="one tuple of widths per layer"):
        model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jax.random.key(1))
    with pytest.raises(ValueError, match="one tuple of widths per latent layer"):
        models.get("hvae", image_shape=(6, 6, 1), latent_dims=(4, 2), hidden=(8, 4))
    model = models.get("hvae", image_shape=(6, 6, 1), inference="diffusion")
    with pytest.raises(ValueError, match="config.model.inference"):
        model.init(jax.random.key(0), jnp.zeros((1, 6, 6, 1)), jax.random.key(1))


@pytest.mark.slow
@requires_fashion_mnist
def test_training_smoke_reports_per_layer_kl_and_active_units(tmp_path, capsys):
    from experiments.configs import fashion_mnist_hvae

    config = fashion_mnist_hvae.get_config("2layer")
    config.loss.name, config.loss.num_samples = "iwae", 2
    config.model.latent_dims = (4, 2)
    config.model.hidden = ((16,), (8,))
    config.train.batch_size = 32
    config.train.num_steps = 10
    config.train.steps_per_call = 5
    config.train.eval_every_steps = 10
    config.train.checkpoint_every_steps = 10
    state = experiment.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 10
    out = capsys.readouterr().out
    line = [l for l in out.splitlines() if l.startswith("eval step 10:")][0]
    vals = dict(re.findall(r"(test_\w+) (-?[\d.]+)", line))
    for name in ("test_kl_1", "test_kl_2", "test_au_1", "test_au_2", "test_elbo"):
        assert name in vals, (name, line)
    np.testing.assert_allclose(float(vals["test_kl_1"]) + float(vals["test_kl_2"]),
                               float(vals["test_kl"]), atol=2e-3)
    assert 0 <= float(vals["test_au_1"]) <= 4 and 0 <= float(vals["test_au_2"]) <= 2
    assert os.path.exists(tmp_path / "images" / "samples_00000010.png")
