"""The deep top-down ResNet HVAE (vae_jax/models/deep_hvae.py): closed forms, the terms
contract, the stability options, bfloat16, sampling, config errors and a few Adam steps."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vae_jax import evaluate, losses
from vae_jax.evaluate import active_units, sampling
from vae_jax.models.deep_hvae import (DeepHVAE, deep_hvae_model, depth_to_space,
                                      space_to_depth)
from vae_jax.models.deep_hvae.blocks import Bottleneck, TopDownBlock, soft_clamp
from vae_jax.ops.initialize import initialize

# Scaled-init kernels compiled with fewer optimisations (values need not match the model's).
_FAST_COMPILE = {"xla_backend_optimization_level": 0,
                 "xla_llvm_disable_expensive_passes": True}
TINY = dict(image_shape=(8, 8, 1), resolutions=(8, 4), encoder_blocks=1, decoder_blocks=(1, 2),
            widths=8, bottleneck=0.5, latent_channels=2)


_FNS = {"elbo_terms": losses.elbo_terms, "log_w": losses.log_importance_weights,
        "iwae": losses.iwae_bound}


@functools.lru_cache(maxsize=None)
def _jitted(names: tuple, model: nn.Module, num_samples: int):
    """jit(params, x, key) -> {name: output} for objectives or model methods, all with L =
    num_samples: one compiled function per (names, model, L), shared by the tests (each
    compile costs seconds on the CPU; one program for several outputs costs one)."""
    def fn(p, x, k):
        return {n: _FNS[n](p, x, k, model=model, num_samples=num_samples) if n in _FNS
                else model.apply(p, x, k, num_samples, method=n) for n in names}
    return jax.jit(fn)


def _init(model, x, seed=0):
    """jax.jit(model.init)'s values, from one small program (ops.initialize)."""
    k1, k2 = jax.random.split(jax.random.key(seed))
    return jax.tree.map(jnp.asarray, initialize(model.init, k1, x, k2))


def _binary_images(key, shape=(4, 8, 8, 1)):
    """Bars: a random row and a random column lit per image, plus 5 % flipped pixels."""
    kr, kc, kn = jax.random.split(key, 3)
    b, h, w = shape[:3]
    rows = jax.random.randint(kr, (b,), 0, h)[:, None, None] == jnp.arange(h)[None, :, None]
    cols = jax.random.randint(kc, (b,), 0, w)[:, None, None] == jnp.arange(w)[None, None, :]
    img = (rows | cols) ^ jax.random.bernoulli(kn, 0.05, (b, h, w))
    return img.astype(jnp.float32)[..., None]


@pytest.fixture(scope="module")
def tiny():
    """(model, x, params at init, params perturbed so that every prior net is active)."""
    model = deep_hvae_model(**TINY)
    x = _binary_images(jax.random.key(0))
    params = _init(model, x)
    rng = np.random.default_rng(1)   # numpy: eager jax.random would compile per shape
    perturbed = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape).astype(np.float32),
                             params)
    return model, x, params, perturbed


# ----------------------------------------------- (a) a linear-Gaussian chain, in closed form
#
# Per channel k (independent): z1 ~ N(m1, s1²), z2 | z1 ~ N(α z1 + β, s2²),
# x | z2 ~ N(a z2 + c, σ²). With relu activations and every relu input kept positive by an
# offset M (x + M, z1 + M), the model's nets compute these affine maps exactly, and q is set
# to the exact posterior p(z1 | x) p(z2 | z1, x). Then every importance weight equals p(x):
# log p(x|z) + log p(z) − log q(z|x) = log p(x) for every draw, to float32 rounding.

M = 20.0
CHAIN = dict(m1=np.array([0.3, -0.5]), s1=np.array([1.0, 0.7]), alpha=np.array([0.8, -1.2]),
             beta=np.array([0.1, 0.2]), s2=np.array([0.5, 0.6]), a=np.array([1.5, 0.9]),
             c=np.array([-0.2, 0.4]), sigma=np.array([0.4, 0.3]))


def _chain_joint(k):
    """Mean [3] and covariance [3, 3] of (z1, z2, x) for channel k."""
    p = {n: v[k] for n, v in CHAIN.items()}
    mu1 = p["m1"]
    mu2 = p["alpha"] * mu1 + p["beta"]
    mux = p["a"] * mu2 + p["c"]
    v1 = p["s1"] ** 2
    v2 = p["alpha"] ** 2 * v1 + p["s2"] ** 2
    c12 = p["alpha"] * v1
    cov = np.array([[v1, c12, p["a"] * c12],
                    [c12, v2, p["a"] * v2],
                    [p["a"] * c12, p["a"] * v2, p["a"] ** 2 * v2 + p["sigma"] ** 2]])
    return np.array([mu1, mu2, mux]), cov


def _chain_posteriors():
    """Per channel: p(z1|x) = N(u x + v, sd1²), p(z2|z1, x) = N(g_z z1 + g_x x + g_0, sd2²)."""
    out = {n: np.zeros(2) for n in ("u", "v", "sd1", "gz", "gx", "g0", "sd2")}
    for k in range(2):
        mu, cov = _chain_joint(k)
        out["u"][k] = cov[0, 2] / cov[2, 2]
        out["v"][k] = mu[0] - out["u"][k] * mu[2]
        out["sd1"][k] = math.sqrt(cov[0, 0] - cov[0, 2] ** 2 / cov[2, 2])
        idx = [0, 2]
        gain = cov[1, idx] @ np.linalg.inv(cov[np.ix_(idx, idx)])
        out["gz"][k], out["gx"][k] = gain
        out["g0"][k] = mu[1] - gain @ mu[idx]
        out["sd2"][k] = math.sqrt(cov[1, 1] - gain @ cov[idx, 1])
    return out


def _chain_log_px(x):
    """x: [B, 2] -> log p(x) [B]."""
    total = 0.0
    for k in range(2):
        mu, cov = _chain_joint(k)
        d = x[:, k] - mu[2]
        total = total - 0.5 * (d * d / cov[2, 2] + math.log(2 * math.pi * cov[2, 2]))
    return total


def _chain_params(shapes):
    """Zeros everywhere (every residual block the identity), then the chain's affine maps."""
    p = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)["params"]
    ch, post = CHAIN, _chain_posteriors()
    two = range(2)

    def eye(kernel, pairs, gains=None):
        """kernel[centre, centre, i, o] = gain for each (i, o) pair (a 1x1 map)."""
        gains = np.ones(len(pairs)) if gains is None else gains
        assert len(gains) == len(pairs)
        for (i, o), g in zip(pairs, gains):
            kernel[..., i, o] = 0.0
            kernel[kernel.shape[0] // 2, kernel.shape[1] // 2, i, o] = g

    bu = p["bottom_up"]
    eye(bu["stem"]["kernel"], [(k, k) for k in two], (0.5, 0.5))  # a = ½(2x − 1) + M + ½
    bu["stem"]["bias"][:2] = M + 0.5
    b0, b1 = p["td_r1_0"], p["td_r1_1"]
    # Layer "00": prior N(m1, s1²); q = p(z1 | x) from a = x + M (channels 4, 5 of [h, a]).
    b0["p_net"]["c4"]["bias"][:4] = np.r_[ch["m1"], np.log(ch["s1"])]
    eye(b0["q_net"]["c1"]["kernel"], [(4 + k, k) for k in two])
    for c in ("c2", "c3"):
        eye(b0["q_net"][c]["kernel"], [(k, k) for k in two])
    eye(b0["q_net"]["c4"]["kernel"], [(k, k) for k in two], post["u"])
    b0["q_net"]["c4"]["bias"][:] = np.r_[post["v"] - post["u"] * M, np.log(post["sd1"])]
    eye(b0["proj"]["kernel"], [(k, k) for k in two])                 # h[0:2] = z1 + M
    b0["proj"]["bias"][:2] = M
    # Layer "01": prior N(α z1 + β, s2²) from h[0:2]; q = p(z2 | z1, x) from h[0:2] and a.
    for c in ("c1", "c2", "c3"):
        eye(b1["p_net"][c]["kernel"], [(k, k) for k in two])
    eye(b1["p_net"]["c4"]["kernel"], [(k, k) for k in two], ch["alpha"])
    b1["p_net"]["c4"]["bias"][:4] = np.r_[ch["beta"] - ch["alpha"] * M, np.log(ch["s2"])]
    eye(b1["q_net"]["c1"]["kernel"], [(k, k) for k in two] + [(4 + k, 2 + k) for k in two])
    for c in ("c2", "c3"):
        eye(b1["q_net"][c]["kernel"], [(k, k) for k in range(4)])
    eye(b1["q_net"]["c4"]["kernel"], [(k, k) for k in two] + [(2 + k, k) for k in two],
        np.r_[post["gz"], post["gx"]])
    b1["q_net"]["c4"]["bias"][:] = np.r_[post["g0"] - (post["gz"] + post["gx"]) * M,
                                         np.log(post["sd2"])]
    eye(b1["proj"]["kernel"], [(k, 2 + k) for k in two])             # h[2:4] = z2
    # p(x | z2): loc_k = a_k z2_k + c_k (output 2k), log-scale log σ_k (output 2k + 1).
    eye(p["out"]["kernel"], [(2 + k, 2 * k) for k in two], ch["a"])
    p["out"]["bias"][0::2], p["out"]["bias"][1::2] = ch["c"], np.log(ch["sigma"])
    return jax.tree.map(jnp.asarray, {"params": p})


@pytest.mark.slow
def test_linear_gaussian_chain_log_weights_equal_closed_form_log_px():
    model = deep_hvae_model(image_shape=(1, 1, 2), resolutions=(1,), encoder_blocks=1,
                            decoder_blocks=2, widths=4, bottleneck=1.0, latent_channels=2,
                            likelihood="gaussian", activation="relu", residual_init="zero")
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 1, 1, 2)) * 2.0, jnp.float32)
    params = _chain_params(jax.eval_shape(model.init, jax.random.key(0), x, jax.random.key(1)))
    truth = _chain_log_px(np.asarray(x, np.float64).reshape(5, 2))
    key = jax.random.key(2)

    @jax.jit
    def run(params, x, key):
        return (model.apply(params, x, key, 64, method="terms"),
                losses.iwae_bound(params, x, key, model=model, num_samples=7),
                evaluate.log_importance_sampled(params, x, key, model=model, num_samples=10,
                                                chunk=4))

    t, iwae_7, is_10 = run(params, x, key)
    log_w = t["log_px_z"] + t["log_pz"] - t["log_qz"]                # [64, 5]
    assert float(jnp.std(t["log_px_z"])) > 0.1                       # the draws do vary
    np.testing.assert_allclose(log_w, np.broadcast_to(truth, log_w.shape), rtol=0, atol=2e-4)
    # The bounds downstream need no change: IWAE-k and the chunked IS estimate are log p(x).
    np.testing.assert_allclose(iwae_7, truth, atol=2e-4)
    np.testing.assert_allclose(is_10, truth, atol=2e-4)
    # The top layer's KL is deterministic: KL(p(z1 | x) || N(m1, s1²)) per channel.
    post = _chain_posteriors()
    xs = np.asarray(x, np.float64).reshape(5, 2)
    mq, sq = post["u"] * xs + post["v"], post["sd1"]
    m1, s1 = CHAIN["m1"], CHAIN["s1"]
    kl_top = np.log(s1 / sq) + (sq ** 2 + (mq - m1) ** 2) / (2 * s1 ** 2) - 0.5
    np.testing.assert_allclose(t["kl"]["00"].reshape(5, 2), kl_top, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------- (b) per-layer KL, (c) the weights

@pytest.mark.slow
def test_per_layer_kl_nonnegative_named_top_down_and_summing_to_total(tiny):
    model, x, _, params = tiny
    assert model.num_layers == 3 and model.layer_names == ("00", "01", "02")
    out = _jitted(("terms", "elbo_terms"), model, 4)(params, x, jax.random.key(3))
    raw, t = out["terms"], out["elbo_terms"]
    assert {k: v.shape for k, v in raw["kl"].items()} == {
        "00": (4, 4, 4, 2), "01": (4, 4, 4, 2), "02": (4, 8, 8, 2)}
    assert all(v.shape == (4, 4) and v.dtype == jnp.float32
               for k, v in raw.items() if k != "kl")
    for name, v in raw["kl"].items():
        assert np.all(np.asarray(v) >= 0.0), name
        assert float(v.max()) > 1e-3, name                 # the perturbed priors differ from q
    per_layer = [t[f"kl_{n}"] for n in model.layer_names]
    np.testing.assert_allclose(sum(per_layer), t["kl"], rtol=1e-6, atol=1e-5)
    for n, v in zip(model.layer_names, per_layer):
        np.testing.assert_allclose(v, raw["kl"][n].reshape(4, -1).sum(-1), rtol=1e-6)
    np.testing.assert_allclose(t["elbo"], t["log_px_z"] - t["kl"], rtol=1e-6, atol=1e-5)


@pytest.mark.slow
def test_mean_log_weight_agrees_with_elbo_in_expectation_and_iwae_k1(tiny):
    """E_q[log q − log p] = Σ_i E KL_i: the closed-form ELBO and the mean log weight agree
    within Monte Carlo error; IWAE with k = 1 is the log weight itself."""
    model, x, _, params = tiny
    key, n = jax.random.key(4), 1000
    out = _jitted(("terms", "elbo_terms"), model, n)(params, x, key)
    t, elbo = out["terms"], out["elbo_terms"]["elbo"]
    log_w = t["log_px_z"] + t["log_pz"] - t["log_qz"]
    ratio = np.asarray(t["log_qz"] - t["log_pz"])                      # [n, B]
    tol = 5.0 * ratio.std(0) / math.sqrt(n) + 1e-3
    assert np.all(np.abs(np.asarray(jnp.mean(log_w, 0) - elbo)) < tol), (log_w.mean(0), elbo)
    k1 = _jitted(("iwae", "log_w"), model, 1)(params, x, key)
    np.testing.assert_allclose(k1["iwae"], k1["log_w"][0], rtol=1e-6)


@pytest.mark.slow
def test_posterior_means_feed_active_units(tiny):
    model, x, _, params = tiny
    images = (np.asarray(x) * 255).astype(np.uint8)
    var = active_units.posterior_mean_variance(params, images, model=model,
                                               binarization="none", num_samples=3,
                                               batch_size=4)
    # {layer: [h·w·c_z]}: the flattened posterior means of each layer.
    assert {k: v.shape for k, v in var.items()} == {"00": (32,), "01": (32,), "02": (128,)}
    assert all(np.all(np.isfinite(v)) and v.max() > 0 for v in var.values())


# ---------------------------------------------------------------- (d) residual init, (e) bound

@pytest.mark.slow
def test_zero_init_makes_every_residual_block_the_identity():
    # The bound blocks one after the other: the recorder below reads every block's input
    # and output.
    model = deep_hvae_model(**TINY, residual_init="zero").clone(scan_blocks=False,
                                                                jit_blocks=False)
    x = _binary_images(jax.random.key(6))
    params = _init(model, x, seed=1)
    kinds = []   # filled while tracing

    @jax.jit
    def run(params, x, key):
        """Every residual block's (input, output), traced inside one program."""
        seen = []

        def record(next_fun, args, kwargs, context):
            out = next_fun(*args, **kwargs)
            mod = context.module
            if context.method_name == "__call__" and (
                    isinstance(mod, TopDownBlock)
                    or (isinstance(mod, Bottleneck) and mod.residual)):
                kinds.append(type(mod).__name__)
                seen.append((args[0], out[0] if isinstance(mod, TopDownBlock) else out))
            return out

        with nn.intercept_methods(record):
            likelihood = model.apply(params, x, key, method="reconstruct")
        return seen, likelihood.logits

    seen, logits = run(params, x, jax.random.key(7))
    # 2 encoder blocks, 3 top-down blocks with their residual blocks.
    assert kinds.count("TopDownBlock") == 3 and kinds.count("Bottleneck") == 5, kinds
    for kind, (h_in, h_out) in zip(kinds, seen):
        np.testing.assert_array_equal(h_out, h_in, err_msg=kind)
    # Hence the pixels ignore z at init: constant logits, the out conv's bias.
    np.testing.assert_array_equal(logits, np.zeros_like(logits))


@pytest.mark.slow
def test_scaled_init_divides_the_last_conv_by_sqrt_n_and_zeroes_the_priors(tiny):
    x = jnp.ones((2, 4, 4, 8))
    base, scaled = jax.jit(lambda k: [
        Bottleneck(8, 4, residual=True, last_scale=s).init(k, x)["params"]["c4"]["kernel"]
        for s in (1.0, 0.5)], compiler_options=_FAST_COMPILE)(jax.random.key(8))
    np.testing.assert_allclose(scaled, 0.5 * base, rtol=1e-6)
    model, x, params, _ = tiny                    # residual_init="scaled": N = 3 top-down blocks
    p = params["params"]
    blocks = [p[n] for n in ("td_r4_0", "td_r4_1", "td_r8_0")]
    for b in blocks:                              # VDVAE's prior init: p = N(0, I), no feature
        assert not np.any(np.asarray(b["p_net"]["c4"]["kernel"]))
    fan_in = 4
    res = np.concatenate([np.ravel(b["res"]["c4"]["kernel"]) for b in blocks])
    ratio = res.std() / math.sqrt(1.0 / (3 * fan_in))
    assert 0.75 < ratio < 1.25, ratio             # 96 draws: ±~10 %; unscaled would be 1.73
    d = _jitted(("layer_distributions",), model, 2)(params, x, jax.random.key(9))
    d = d["layer_distributions"]
    for name, s in d.items():
        assert not np.any(np.asarray(s["p"].mean)) and not np.any(np.asarray(s["p"].log_std))


@pytest.mark.slow
def test_bounded_log_std_stays_inside_the_bound_for_huge_inputs(tiny):
    _, x, _, params = tiny
    np.testing.assert_allclose(soft_clamp(jnp.array([-1e30, -0.01, 0.0, 3.0, 1e30]), bound=2.0),
                               [-2.0, -0.01, 0.0, 2.0 * math.tanh(1.5), 2.0], rtol=1e-4)
    huge = 1e4 * (2.0 * x - 1.0)
    bound = 2.0
    for b, name in ((None, "unbounded"), (bound, "bounded")):
        model = deep_hvae_model(**TINY, log_std_bound=b)
        names = ("layer_distributions",) if b is None else ("layer_distributions", "terms")
        out = _jitted(names, model, 2)(params, huge, jax.random.key(10))
        d = out["layer_distributions"]
        log_stds = np.concatenate([np.ravel(s[k].log_std) for s in d.values() for k in "qp"])
        if b is None:   # unbounded: far outside (or overflowing), so the check below bites
            assert not np.all(np.abs(log_stds) <= 10 * bound)
        else:
            assert np.all(np.isfinite(log_stds)) and np.max(np.abs(log_stds)) <= bound
            assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(out["terms"]["kl"]))


# ----------------------------------------------------------------------------- (f) bfloat16

@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params_and_losses(tiny):
    model, x, at_init, perturbed = tiny
    bf16 = deep_hvae_model(**TINY, dtype="bfloat16")
    shapes = jax.eval_shape(bf16.init, jax.random.key(0), x, jax.random.key(1))
    assert jax.tree.map(lambda s: s.dtype, shapes) == jax.tree.map(lambda p: p.dtype, at_init)
    assert {s.dtype for s in jax.tree.leaves(shapes)} == {jnp.dtype(jnp.float32)}
    key = jax.random.key(11)
    # bfloat16 activations (8 mantissa bits), float32 likelihood head and log-probs. Per-image
    # ELBOs: within 0.5 % at init (measured ≤ 0.1 %), 3 % for the perturbed weights, whose
    # larger activations lose more (measured 1.4 %, ~1.6 of ~120 nats).
    for params, rtol in ((at_init, 5e-3), (perturbed, 3e-2)):
        out = _jitted(("terms", "elbo_terms"), bf16, 4)(params, x, key)
        assert {v.dtype for v in jax.tree.leaves(out)} == {jnp.dtype(jnp.float32)}
        a = _jitted(("terms", "elbo_terms"), model, 4)(params, x, key)["elbo_terms"]
        b = out["elbo_terms"]
        assert not np.array_equal(b["elbo"], a["elbo"])             # it did run in bfloat16
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=rtol, atol=0.05, err_msg=k)


# ----------------------------------------------------------------------- (g) sampling paths

@pytest.mark.slow
def test_sampling_temperatures_and_reconstructions(tiny):
    model, x, _, params = tiny
    n = model.num_layers

    def sample(p, key, t):
        return model.apply(p, key, 5, t, method="sample_prior").mean()

    run = jax.jit(sample)   # t: [n], one value per layer
    cold = [run(params, jax.random.key(s), jnp.zeros(n)) for s in (12, 13)]
    assert cold[0].shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(cold[0], cold[1])                 # t = 0: deterministic
    warm = [run(params, jax.random.key(s), jnp.ones(n)) for s in (12, 13)]
    assert not np.allclose(warm[0], warm[1])
    mixed = run(params, jax.random.key(12), jnp.array([1.0, 1.0, 0.0]))
    assert not np.allclose(mixed, warm[0])                          # the last layer at its mean
    # One value for every layer, a list per layer; other lengths are refused (traced only).
    for t in (0.7, [1.0, 0.5, 0.0]):
        assert jax.eval_shape(sample, params, jax.random.key(12), t).shape == (5, 8, 8, 1)
    with pytest.raises(ValueError, match="one per stochastic layer"):
        jax.eval_shape(sample, params, jax.random.key(12), [1.0, 0.5])
    # The picture functions downstream call it unchanged; reconstructions have x's shape.
    shape = jax.eval_shape(functools.partial(sampling.prior_samples, model=model, num=3,
                                             temperature=0.7), params, jax.random.key(14))
    assert shape.shape == (3, 8, 8, 1)
    recon = jax.eval_shape(lambda p, x, k: model.apply(p, x, k, method="reconstruct").mean(),
                           params, x, jax.random.key(15))
    assert recon.shape == x.shape


# -------------------------------------------------------------------------- (h) bad configs

@pytest.mark.parametrize("override, field", [
    (dict(resolutions=(8, 3)), "resolutions"),
    (dict(resolutions=(4, 2)), "resolutions"),
    (dict(resolutions=(8, 4, 8)), "resolutions"),
    (dict(image_shape=(8, 6, 1), resolutions=(8, 4, 2)), "resolutions"),
    (dict(widths=(8, 8, 8)), "widths"),
    (dict(decoder_blocks=(1, 2, 3)), "decoder_blocks"),
    (dict(latent_channels=(2, 0)), "latent_channels"),
    (dict(stochastic=(True, False)), "stochastic"),
    (dict(stochastic=(False, False, False)), "stochastic"),
    (dict(bottleneck=0.0), "bottleneck"),
    (dict(likelihood="poisson"), "likelihood"),
    (dict(activation="sine"), "activation"),
    (dict(log_std_bound=-1.0), "log_std_bound"),
    (dict(residual_init="fixup"), "residual_init"),
    (dict(dtype="float16"), "dtype"),
    (dict(patch_size=3), "patch_size"),
    (dict(patch_size=0), "patch_size"),
    (dict(patch_size=2), "resolutions"),   # resolutions must start at 8 / 2 = 4
])
def test_bad_config_raises_value_error_naming_the_field(override, field):
    with pytest.raises(ValueError, match=rf"config\.model\.{field}"):
        deep_hvae_model(**{**TINY, **override})


def test_good_configs_normalise_per_resolution_fields():
    m = deep_hvae_model(**{**TINY, "widths": (8, 16), "stochastic": (True, False, True)})
    assert isinstance(m, DeepHVAE)
    assert m.widths == (8, 16) and m.encoder_blocks == (1, 1) and m.num_layers == 2
    # A deterministic block and width changes between resolutions trace (no compile).
    x = jnp.zeros((2, 8, 8, 1))
    shapes = jax.eval_shape(m.init, jax.random.key(0), x, jax.random.key(1))
    assert shapes["params"]["td_proj_r8"]["kernel"].shape == (1, 1, 16, 8)
    assert "q_net" not in shapes["params"]["td_r4_1"]
    t = jax.eval_shape(lambda p: m.apply(p, x, jax.random.key(2), 3, method="terms"), shapes)
    assert {k: v.shape for k, v in t["kl"].items()} == {"00": (2, 4, 4, 2), "01": (2, 8, 8, 2)}
    assert deep_hvae_model(image_shape=(8, 16, 3), resolutions=(8, 4, 1),
                           widths=8).resolutions == (8, 4, 1)


# ---------------------------------------------------------------------------- (i) training

def _adam_losses(model, params, x, steps=12, lr=3e-3):
    loss_fn = functools.partial(losses.elbo, model=model, num_samples=1)
    opt = optax.adam(lr)

    @jax.jit
    def step(params, opt_state, key):
        (loss, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        return optax.apply_updates(params, updates), opt_state, loss, finite

    opt_state, out = opt.init(params), []
    for _ in range(steps):   # one fixed key: a deterministic objective, so the decrease is real
        params, opt_state, loss, finite = step(params, opt_state, jax.random.key(16))
        assert bool(finite)
        out.append(float(loss))
    return out


@pytest.mark.slow
def test_gradients_finite_and_adam_decreases_the_loss_bernoulli(tiny):
    model, x, params, _ = tiny
    curve = _adam_losses(model, params, x)
    assert curve[-1] < curve[0] - 1.0, curve


@pytest.mark.slow
def test_gradients_finite_and_adam_decreases_the_loss_logistic_mixture():
    model = deep_hvae_model(**TINY, likelihood="discretized_logistic_mix3")
    x = jnp.round(255 * jax.random.uniform(jax.random.key(17), (4, 8, 8, 1)) ** 2) / 255
    curve = _adam_losses(model, _init(model, x), x)
    assert curve[-1] < curve[0] - 1.0, curve


# -------------------------------------------------------------------- (j) tens of layers

@pytest.mark.slow
def test_a_28x28_model_with_tens_of_stochastic_layers_has_the_contracted_shapes():
    model = deep_hvae_model(image_shape=(28, 28, 1), resolutions=(28, 14, 7, 1),
                            encoder_blocks=(2, 3, 3, 2), decoder_blocks=(2, 8, 10, 2),
                            widths=(32, 64, 64, 64), latent_channels=(4, 8, 8, 16))
    assert model.num_layers == 22 and list(model.layer_names) == sorted(model.layer_names)
    x = jnp.zeros((3, 28, 28, 1))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, jax.random.key(1))
    t = jax.eval_shape(lambda p: model.apply(p, x, jax.random.key(2), 2, method="terms"), shapes)
    assert {k: t[k].shape for k in ("log_px_z", "log_pz", "log_qz")} == {
        "log_px_z": (2, 3), "log_pz": (2, 3), "log_qz": (2, 3)}
    # Top-down order: 2 layers at 1×1, 10 at 7×7, 8 at 14×14, 2 at 28×28.
    expect = [(3, 1, 1, 16)] * 2 + [(3, 7, 7, 8)] * 10 + [(3, 14, 14, 8)] * 8 + [(3, 28, 28, 4)] * 2
    assert [t["kl"][n].shape for n in model.layer_names] == expect
    assert {v.dtype for v in jax.tree.leaves(t)} == {jnp.dtype(jnp.float32)}


# ------------------------------------------------------------------ (k) p×p patches

@pytest.mark.parametrize("likelihood,channels", [("bernoulli", 1),
                                                 ("discretized_logistic_mix3", 3)])
@pytest.mark.slow
def test_a_patch_model_is_the_plain_model_on_squeezed_images(likelihood, channels):
    """patch_size=2 on [B, 8, 8, C] images is, parameter for parameter, the plain model on
    the [B, 4, 4, 4C] space-to-depth images: the same KLs and log-weights, and every
    pixel's likelihood parameters put back at its own place (a wrong depth-to-space order
    pairs pixels with other pixels' logits and changes log p(x|z))."""
    kw = dict(resolutions=(4, 2), encoder_blocks=1, decoder_blocks=(1, 2), widths=8,
              bottleneck=0.5, latent_channels=2, likelihood=likelihood,
              residual_init="default")
    patched = deep_hvae_model(image_shape=(8, 8, channels), patch_size=2, **kw)
    plain = deep_hvae_model(image_shape=(4, 4, 4 * channels), **kw)
    x = jax.random.bernoulli(jax.random.key(3), 0.3, (3, 8, 8, channels)).astype(jnp.float32)
    if channels == 3:
        x = jnp.round(255 * jax.random.uniform(jax.random.key(4), x.shape)) / 255
    xs = space_to_depth(x, 2)
    assert xs.shape == (3, 4, 4, 4 * channels)
    np.testing.assert_array_equal(depth_to_space(xs, 2, channels)[..., 0], x)
    params = _init(plain, xs)
    # The output conv has the same shape in both; nothing else differs.
    shapes = jax.eval_shape(patched.init, jax.random.key(0), x, jax.random.key(1))
    assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(lambda a: a.shape, params)
    key = jax.random.key(5)

    @jax.jit
    def both(params, x, xs, key):   # one program: op by op, each op compiled on its own
        return (patched.apply(params, x, key, 2, method="terms"),
                plain.apply(params, xs, key, 2, method="terms"),
                patched.apply(params, x, key, method="reconstruct").mean(),
                plain.apply(params, xs, key, method="reconstruct").mean(),
                patched.apply(params, key, 5, method="sample_prior").mean())

    a, b, pa_mean, pb_mean, mean = both(params, x, xs, key)
    for name in ("log_pz", "log_qz", "log_px_z"):
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-4)
    for layer in a["kl"]:
        np.testing.assert_allclose(a["kl"][layer], b["kl"][layer], rtol=1e-5, atol=1e-6)
    # Every pixel's mean: the patch model's image is the plain model's, put back in place.
    assert pa_mean.shape == x.shape
    np.testing.assert_allclose(space_to_depth(pa_mean, 2), pb_mean, rtol=1e-5, atol=1e-6)
    assert mean.shape == (5, 8, 8, channels)


# ------------------------------------------------------- (l) runs of blocks as one scan each

# Top-down: r1 (T, T), then r4 (T, F, F, T, T) at another width: runs of two stochastic
# blocks (layers 0-1 and 3-4) and of two deterministic blocks, and a single stochastic one.
RUNS = dict(image_shape=(4, 4, 1), resolutions=(4, 1), encoder_blocks=1,
            decoder_blocks=(5, 2), widths=(8, 16), bottleneck=0.5, latent_channels=2,
            stochastic=(True, True, True, False, False, True, True), residual_init="default",
            log_std_bound=5.0)


def _scans(jaxpr) -> int:
    """Number of ``scan`` equations in a jaxpr, nested ones included."""
    return sum((e.primitive.name == "scan")
               + sum(_scans(j) for j in jax.core.jaxprs_in_params(e.params))
               for e in jaxpr.eqns)


def test_runs_of_equal_blocks_become_one_scan_each():
    """Tracing only: one scan per run of two or more blocks with equal settings (at r1, the
    deterministic pair and the last two blocks at r4); none at init, which creates every
    block's parameters."""
    model = deep_hvae_model(**RUNS)
    x, key = jnp.zeros((2, 4, 4, 1)), jax.random.key(0)
    init, params = jax.make_jaxpr(lambda k: model.init(k, x, k), return_shape=True)(key)
    assert _scans(init.jaxpr) == 0
    assert {n for n in params["params"] if n.startswith("td_")} == {
        "td_r1_0", "td_r1_1", "td_r4_0", "td_r4_1", "td_r4_2", "td_r4_3", "td_r4_4",
        "td_bias_r1", "td_bias_r4", "td_proj_r4"}

    def scans(fn) -> int:
        return _scans(jax.make_jaxpr(fn)(params).jaxpr)

    assert scans(lambda p: model.apply(p, x, key, 2, method="terms")) == 3
    assert scans(lambda p: model.apply(p, key, 3, jnp.ones(5), method="sample_prior").mean()) == 3


def test_blocks_one_by_one_share_one_trace_per_block_settings():
    """Tracing only: without the scan, the 7 top-down blocks of RUNS are 7 calls of 3
    traced functions, one per block settings (r1 stochastic, r4 stochastic, r4
    deterministic); with the scan, the one block outside a run is one such call; with
    ``jit_blocks`` off, the bound blocks are traced inline."""
    model = deep_hvae_model(**RUNS)
    x, key = jnp.zeros((2, 4, 4, 1)), jax.random.key(0)
    params = jax.eval_shape(model.init, key, x, key)

    def calls(m) -> list:
        jaxpr = jax.make_jaxpr(lambda p: m.apply(p, x, key, 2, method="terms"))(params)
        return [e.params["jaxpr"] for e in jaxpr.eqns
                if e.primitive.name in ("jit", "pjit") and e.params["name"] == "top_down_block"]

    one_by_one = calls(model.clone(scan_blocks=False))
    assert len(one_by_one) == 7 and len({id(j) for j in one_by_one}) == 3
    assert len(calls(model)) == 1
    assert calls(model.clone(scan_blocks=False, jit_blocks=False)) == []


def test_an_eager_call_compiles_nothing_the_second_time():
    """Outside jit the blocks run unrolled, op by op, each op's program cached: a scan
    built at each call would compile at each call."""
    model = deep_hvae_model(**RUNS)
    x = jnp.zeros((2, 4, 4, 1))
    shapes = jax.eval_shape(model.init, jax.random.key(0), x, jax.random.key(0))
    params = jax.tree.map(lambda s: np.zeros(s.shape, np.float32), shapes)
    keys = jax.random.key(0), jax.random.key(1)
    model.apply(params, x, keys[0], 2, method="terms")
    compiles = []

    def on_event(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles.append(event)

    jax.monitoring.register_event_duration_secs_listener(on_event)
    try:
        terms = model.apply(params, x, keys[1], 2, method="terms")
    finally:
        jax.monitoring.unregister_event_duration_listener(on_event)
    assert set(terms["kl"]) == {"00", "01", "02", "03", "04"}
    assert compiles == []


@pytest.mark.slow
def test_scanned_runs_equal_the_unrolled_blocks():
    """terms, the ELBO's gradient w.r.t. every parameter and samples at per-layer
    temperatures: the scanned model's equal the unrolled model's (the same draws), and the
    gradient through the blocks' ``jax.jit`` equals the bound blocks' bit for bit. The
    gradient's program has no scan: the derivative is the unrolled blocks'."""
    scanned = deep_hvae_model(**RUNS)
    unrolled = scanned.clone(scan_blocks=False)
    bound = unrolled.clone(jit_blocks=False)
    x = _binary_images(jax.random.key(20), (4, 4, 4, 1))
    shapes = jax.eval_shape(scanned.init, jax.random.key(0), x, jax.random.key(1))
    rng = np.random.default_rng(2)   # every block and prior net active (numpy: no compile)
    params = jax.tree.map(lambda s: 0.3 * rng.normal(size=s.shape).astype(np.float32), shapes)
    temps = jnp.array([1.0, 0.5, 0.0, 1.2, 0.7])
    key = jax.random.key(21)

    def grad(m):
        return jax.grad(lambda p, x, k: -jnp.mean(losses.elbo_terms(p, x, k, model=m)["elbo"]))

    assert _scans(jax.make_jaxpr(grad(scanned))(params, x, key).jaxpr) == 0

    @jax.jit
    def both(params, x, key):   # one program for both models, and the bound blocks' gradient
        return [(m.apply(params, x, key, 2, method="terms"), grad(m)(params, x, key),
                 m.apply(params, key, 3, temps, method="sample_prior").mean())
                for m in (scanned, unrolled)] + [grad(bound)(params, x, key)]

    a, b, bound_grad = both(params, x, key)
    # the blocks through jax.jit (one trace per block settings) and the bound blocks: the
    # same program once XLA has inlined the calls, the same bits
    for path, u, v in zip(jax.tree_util.tree_flatten_with_path(b[1])[0],
                          jax.tree.leaves(b[1]), jax.tree.leaves(bound_grad)):
        np.testing.assert_array_equal(u, v, err_msg=jax.tree_util.keystr(path[0]))
    assert set(a[0]["kl"]) == {"00", "01", "02", "03", "04"}
    for path, u, v in zip(jax.tree_util.tree_flatten_with_path(a)[0], jax.tree.leaves(a),
                          jax.tree.leaves(b)):
        assert np.all(np.isfinite(u)), jax.tree_util.keystr(path[0])
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5,
                                   err_msg=jax.tree_util.keystr(path[0]))
    assert all(float(jnp.min(v)) > 1e-3 for v in a[0]["kl"].values())   # not trivial
