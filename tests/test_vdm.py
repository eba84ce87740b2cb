"""Variational diffusion model (vae_jax/models/vdm*.py): the losses against closed forms on
Gaussian data with the Bayes-optimal denoiser, the schedules, and the model's ``terms``."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax import distributions as dist
from vae_jax import losses
from vae_jax.ops import random
from vae_jax.models.vdm import model as vdm
from vae_jax.models.vdm.schedules import (NoiseSchedule, discretize_times, linear_gamma,
                                          sample_times)

G0, G1 = -13.3, 5.0            # the paper's endpoints: SNR_max = e^13.3, SNR_min = e^-5
MU, SIGMA, D = 0.3, 0.7, 8     # Gaussian data x ~ N(MU, SIGMA² I_D)


# ------------------------------------------------------------------ Gaussian data helpers

def _gaussian_data(key, n, d=D):
    return MU + SIGMA * random.normal(key, (n, d))


def _init_key(seed=0):
    """Parameter-init keys: XLA's RngBitGenerator compiles in a fraction of Threefry's time
    on the CPU (the model's own draws keep Threefry keys)."""
    return jax.random.key(seed, impl="unsafe_rbg")


def _optimal_eps(z, gamma):
    """E[ε | z_t] for x ~ N(MU, SIGMA²): x̂ = MU + α SIGMA² (z − α MU)/(α² SIGMA² + σ²)."""
    a2, s2 = jax.nn.sigmoid(-gamma)[:, None], jax.nn.sigmoid(gamma)[:, None]
    a = jnp.sqrt(a2)
    x_hat = MU + a * SIGMA ** 2 * (z - a * MU) / (a2 * SIGMA ** 2 + s2)
    return (z - a * x_hat) / jnp.sqrt(s2)


def _continuous_closed_form(g0=G0, g1=G1, d=D):
    """(D/2) ln[(1 + SNR_max σ²)/(1 + SNR_min σ²)]."""
    return 0.5 * d * math.log((1 + math.exp(-g0) * SIGMA ** 2) / (1 + math.exp(-g1) * SIGMA ** 2))


def _discrete_closed_form(gamma_fn, timesteps, d=D):
    """Σ_i ½ (SNR_s − SNR_t) E‖x − x̂‖², E‖x − x̂‖² = D σ²/(1 + SNR_t σ²), in float64."""
    t = np.arange(1, timesteps + 1) / timesteps
    g_t = np.asarray(gamma_fn(jnp.asarray(t, jnp.float32)), np.float64)
    g_s = np.asarray(gamma_fn(jnp.asarray(t - 1.0 / timesteps, jnp.float32)), np.float64)
    snr_s, snr_t = np.exp(-g_s), np.exp(-g_t)
    return float(np.sum(0.5 * (snr_s - snr_t) * d * SIGMA ** 2 / (1 + snr_t * SIGMA ** 2)))


def _schedule(kind, seed=0, spread=0.0, **kw):
    """γ as a pure function: a schedule at its init, plus N(0, spread²) on every parameter."""
    sched = NoiseSchedule(kind, G0, G1, hidden=16, **kw)
    params = sched.init(_init_key(seed), jnp.zeros(3))
    gen = np.random.default_rng(seed)
    params = jax.tree.map(lambda p: p + spread * gen.standard_normal(p.shape).astype(np.float32),
                          params)
    return jax.jit(lambda t: sched.apply(params, t)), params


def _fixed(t):
    return linear_gamma(t, G0, G1)


def _mc(values):
    v = np.asarray(values, np.float64)
    return v.mean(), v.std() / math.sqrt(v.size)


@functools.partial(jax.jit, static_argnames=("gamma_fn", "n", "timesteps", "antithetic"))
def _loss_draws(key, *, gamma_fn, n, timesteps=0, antithetic=True):
    k_x, k_t, k_e = jax.random.split(key, 3)
    x = _gaussian_data(k_x, n)
    t = sample_times(k_t, n, antithetic=antithetic)
    eps = random.normal(k_e, x.shape)
    if timesteps:
        return vdm.diffusion_loss_discrete(x, t, eps, gamma_fn=gamma_fn, eps_fn=_optimal_eps,
                                           timesteps=timesteps)
    return vdm.diffusion_loss_continuous(x, t, eps, gamma_fn=gamma_fn, eps_fn=_optimal_eps)


# -------------------------------------------------------------- continuous-time closed form

@pytest.mark.parametrize("kind", ["fixed_linear", "learned_linear", "learned_net"])
def test_continuous_loss_matches_closed_form_for_any_schedule_shape(kind):
    # learned_linear at its initial endpoints; the net with random weights (endpoints fixed).
    spread = 1.0 if kind == "learned_net" else 0.0
    gamma_fn = _fixed if kind == "fixed_linear" else _schedule(kind, seed=3, spread=spread)[0]
    mean, se = _mc(_loss_draws(jax.random.key(0), gamma_fn=gamma_fn, n=200_000))
    want = _continuous_closed_form()
    print(f"{kind}: L_inf MC {mean:.3f} ± {se:.3f}, closed form {want:.3f}")
    assert se < 0.01 * want
    assert abs(mean - want) < 4 * se + 1e-3 * want


def test_continuous_loss_depends_on_the_endpoints():
    """The closed form moves with γ₀ (the check above is not insensitive to the schedule)."""
    gamma_fn = lambda t: linear_gamma(t, -8.0, G1)  # noqa: E731
    mean, se = _mc(_loss_draws(jax.random.key(1), gamma_fn=gamma_fn, n=100_000))
    assert abs(mean - _continuous_closed_form(g0=-8.0)) < 4 * se + 1e-3 * mean
    assert abs(mean - _continuous_closed_form()) > 20 * se


# ---------------------------------------------------------------- discrete-time closed form

@pytest.mark.parametrize("timesteps", [10, 100])
def test_discrete_loss_matches_its_sum_formula(timesteps):
    gamma_fn = _schedule("learned_net", seed=1, spread=1.0)[0]
    mean, se = _mc(_loss_draws(jax.random.key(2), gamma_fn=gamma_fn, n=200_000,
                               timesteps=timesteps))
    want = _discrete_closed_form(gamma_fn, timesteps)
    print(f"T={timesteps}: L_T MC {mean:.3f} ± {se:.3f}, sum formula {want:.3f}")
    assert abs(mean - want) < 4 * se + 1e-3 * want


@jax.jit
def _grid_losses(eps_key, t_grid, t_steps):
    """Mean loss at each (t, T) pair [P], ε and x shared (common random numbers)."""
    n = 4000
    x = _gaussian_data(jax.random.fold_in(eps_key, 1), n)
    eps = random.normal(eps_key, x.shape)

    def one(tT):
        t, T = tT
        return jnp.mean(vdm.diffusion_loss_discrete(
            x, jnp.full((n,), t), eps, gamma_fn=_fixed, eps_fn=_optimal_eps, timesteps=T))
    return jax.lax.map(one, (t_grid, t_steps))


def _grid_loss(eps_key, steps=(25, 50, 100)):
    """L_T for each T with the average over i exact: every grid time t = i/T once."""
    u = np.concatenate([(np.arange(T) + 0.5) / T for T in steps]).astype(np.float32)
    ts = np.concatenate([np.full(T, T, np.float32) for T in steps])
    per = np.asarray(_grid_losses(eps_key, jnp.asarray(u), jnp.asarray(ts)), np.float64)
    return {T: float(per[ts == T].mean()) for T in steps}


def test_discrete_bounds_decrease_to_the_continuous_one_like_one_over_t():
    l_inf = _continuous_closed_form()
    sums = {T: _discrete_closed_form(_fixed, T) for T in (25, 50, 100, 200, 400, 800)}
    # The closed forms: L_T ≥ L_2T ≥ L_∞ and T (L_T − L_∞) settles (gap ratio → 2).
    for T in (25, 50, 100, 200, 400):
        assert sums[T] > sums[2 * T] > l_inf
    ratios = [(sums[T] - l_inf) / (sums[2 * T] - l_inf) for T in (100, 200, 400)]
    assert all(1.9 < r < 2.1 for r in ratios), ratios
    # The library's estimates follow them (common random numbers across T).
    est = _grid_loss(jax.random.key(5))
    print("L_T estimates", est, "sum formulas", {T: sums[T] for T in est}, "L_inf", l_inf)
    assert est[25] > est[50] > est[100] > l_inf
    for T, v in est.items():
        assert abs(v - sums[T]) < 0.01 * sums[T]


def test_weight_forms_expm1_snr_and_jvp_agree():
    gamma_fn, _ = _schedule("learned_net", seed=2, spread=1.0)
    t = jnp.linspace(0.05, 0.95, 19)
    g, dg = jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),))
    # jvp against a central difference in float64 of the float32 schedule (wide step).
    h = 1e-3
    g64 = lambda u: np.asarray(gamma_fn(u), np.float64)  # noqa: E731
    fd = (g64(t + h) - g64(t - h)) / (2 * h)
    np.testing.assert_allclose(dg, fd, rtol=2e-2)
    assert np.all(np.asarray(dg) > 0)
    # The fixed schedule's derivative is the slope.
    _, dg_lin = jax.jvp(_fixed, (t,), (jnp.ones_like(t),))
    np.testing.assert_allclose(dg_lin, G1 - G0, rtol=1e-6)
    for T in (10, 100, 2000):
        s = t - 1.0 / T
        g_s = gamma_fn(s)
        expm1_form = T * jnp.expm1(g - g_s)
        snr_s, snr_t = np.exp(-np.asarray(g_s, np.float64)), np.exp(-np.asarray(g, np.float64))
        np.testing.assert_allclose(expm1_form, T * (snr_s - snr_t) / snr_t, rtol=1e-4)
        if T == 2000:  # the discrete weight tends to γ′(t) (error ≈ Δγ/2 ≲ 1 %)
            np.testing.assert_allclose(expm1_form, dg, rtol=2e-2)


def test_discretize_times_is_uniform_on_the_grid():
    t = sample_times(jax.random.key(0), 1000, antithetic=True)
    s, tt = discretize_times(t, timesteps=10)
    counts = np.bincount(np.asarray(jnp.round(tt * 10)).astype(int), minlength=11)
    assert counts[0] == 0 and np.all(counts[1:] == 100)
    np.testing.assert_allclose(tt - s, 0.1, atol=1e-6)


# --------------------------------------------------------------------- the per-step KL

def test_posterior_kl_equals_half_snr_gap_times_squared_error():
    gen = np.random.default_rng(0)
    n, shape = 64, (4, 4, 2)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    x = f32(gen.uniform(-1, 1, (n, *shape)))
    x_hat = x + f32(0.3 * gen.standard_normal(x.shape))
    g_t = f32(gen.uniform(-6.0, 5.0, n))
    g_s = g_t - f32(gen.uniform(0.05, 3.0, n))
    z_t = vdm.diffuse(x, g_t, f32(gen.standard_normal(x.shape)))
    q = vdm.posterior(x, z_t, g_s, g_t)
    p = vdm.posterior(x_hat, z_t, g_s, g_t)
    kl = q.kl(p)
    want = 0.5 * (jnp.exp(-g_s) - jnp.exp(-g_t)) * jnp.sum((x - x_hat) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(kl, want, rtol=1e-4)
    # q itself against the textbook form (α_{t|s} = α_t/α_s, σ²_{t|s} = σ_t² − α²_{t|s} σ_s²).
    a_s, a_t = (np.sqrt(1 / (1 + np.exp(np.asarray(g, np.float64)))) for g in (g_s, g_t))
    v_s, v_t = (1 / (1 + np.exp(-np.asarray(g, np.float64))) for g in (g_s, g_t))
    a_ts = a_t / a_s
    v_ts = v_t - a_ts ** 2 * v_s
    b = lambda v: v[:, None, None, None]  # noqa: E731
    mean = b(a_ts * v_s / v_t) * np.asarray(z_t) + b(a_s * v_ts / v_t) * np.asarray(x)
    np.testing.assert_allclose(q.mean, mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(q.std[:, 0, 0, 0] ** 2, v_ts * v_s / v_t, rtol=1e-4)


def test_prior_kl_matches_diag_gaussian():
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (5, 3, 3, 1)), jnp.float32)
    for g1 in (-2.0, 5.0, 12.0):
        a2, s2 = jax.nn.sigmoid(-g1), jax.nn.sigmoid(g1)
        q = dist.DiagGaussian(jnp.sqrt(a2) * x, jnp.full_like(x, 0.5 * jnp.log(s2)), event_ndim=3)
        np.testing.assert_allclose(vdm.prior_kl(x, g1), q.kl_standard_normal(), rtol=1e-4,
                                   atol=1e-7)


@functools.partial(jax.jit, static_argnames=("timesteps",))
def _gaussian_trajectories(key, *, timesteps):
    x = _gaussian_data(jax.random.fold_in(key, 1), 20_000)
    out = vdm.trajectory_terms(x, key, gamma_fn=_fixed, eps_fn=_optimal_eps, timesteps=timesteps)
    return out["diffusion"], out["log_p"] - out["log_q"], vdm.prior_kl(x, G1)


def test_trajectory_sums_the_discrete_bound_and_its_log_weights_average_to_it():
    T = 10
    diff, log_ratio, prior = _gaussian_trajectories(jax.random.key(3), timesteps=T)
    want = _discrete_closed_form(_fixed, T)
    mean, se = _mc(diff)
    assert abs(mean - want) < 4 * se + 1e-3 * want
    # E_q[log p(z_{0..1}) − log q(z_{0..1}|x)] = −(prior KL + L_T).
    mean_r, se_r = _mc(log_ratio + prior)
    assert abs(mean_r + want) < 4 * se_r + 1e-3 * want


# ------------------------------------------------------------------ antithetic time draws

def test_antithetic_times_same_mean_lower_variance():
    keys = jax.random.split(jax.random.key(7), 400)

    def batch_means(antithetic):
        f = lambda k: jnp.mean(_loss_draws(k, gamma_fn=_fixed, n=64,  # noqa: E731
                                           antithetic=antithetic))
        return np.asarray(jax.lax.map(f, keys), np.float64)

    anti, iid = batch_means(True), batch_means(False)
    ratio = anti.var() / iid.var()
    print(f"antithetic / i.i.d. variance of the batch-mean loss: {ratio:.3f}")
    assert ratio < 0.5
    se = math.sqrt(anti.var() / anti.size + iid.var() / iid.size)
    assert abs(anti.mean() - iid.mean()) < 4 * se
    assert abs(anti.mean() - _continuous_closed_form()) < 4 * anti.std() / math.sqrt(anti.size)
    t = np.asarray(sample_times(jax.random.key(0), 10_000, antithetic=True))
    assert t.min() >= 0 and t.max() < 1 and abs(t.mean() - 0.5) < 1e-3


# -------------------------------------------------------------------------- the schedules

@pytest.mark.parametrize("seed", range(4))
def test_monotone_schedule_net_is_monotone_and_hits_its_endpoints(seed):
    # At its init (seed 0, 1) and with every parameter moved by N(0, 3²) (seed 2, 3).
    gamma_fn, _ = _schedule("learned_net", seed=seed, spread=0.0 if seed < 2 else 3.0)
    t = jnp.linspace(0.0, 1.0, 2001)
    g = np.asarray(gamma_fn(t))
    assert np.all(np.diff(g) >= 0)
    assert g[0] == np.float32(G0) and g[-1] == np.float32(G1)
    assert float(gamma_fn(jnp.float32(0.0))) == np.float32(G0)
    assert float(gamma_fn(jnp.float32(1.0))) == np.float32(G1)
    _, dg = jax.jvp(gamma_fn, (t[1:-1],), (jnp.ones_like(t[1:-1]),))
    assert np.all(np.asarray(dg) >= 0)
    # Not merely linear: the network bends the schedule.
    assert np.max(np.abs(g - np.asarray(_fixed(t)))) > 0.2


def test_learned_endpoints_are_parameters():
    gamma_fn, params = _schedule("learned_net", seed=0, learn_endpoints=True)
    ends = np.asarray(gamma_fn(jnp.array([0.0, 1.0])))
    np.testing.assert_allclose(ends, [G0, G1], rtol=1e-5)
    sched = NoiseSchedule("learned_net", G0, G1, learn_endpoints=True, hidden=16)
    moved = jax.tree.map(lambda p: p, params)
    moved["params"]["gamma_min"] = jnp.float32(-9.0)
    g = np.asarray(sched.apply(moved, jnp.linspace(0.0, 1.0, 101)))
    assert g[0] == np.float32(-9.0) and np.all(np.diff(g) >= 0) and g[-1] > -9.0
    lin_fn, lin_params = _schedule("learned_linear")
    np.testing.assert_allclose(lin_fn(jnp.array([0.0, 0.5, 1.0])), [G0, 0.5 * (G0 + G1), G1],
                               rtol=1e-5)
    assert set(lin_params["params"]) == {"gamma_min", "gamma_gap"}


# ------------------------------------------------------------------------------ decoder

def test_pixel_targets_and_decoder_are_exact_masses():
    x8 = jnp.array([0, 1, 128, 255], jnp.float32).reshape(1, 2, 2, 1) / 255.0
    np.testing.assert_allclose(vdm.pixel_targets(x8, likelihood="categorical256").ravel(),
                               (2 * (np.array([0, 1, 128, 255]) + 0.5) / 256) - 1, rtol=1e-6)
    xb = jnp.array([0.0, 1.0, 1.0, 0.0]).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(vdm.pixel_targets(xb, likelihood="bernoulli").ravel(),
                               [-0.5, 0.5, 0.5, -0.5])
    g0 = jnp.float32(-4.0)
    z0 = random.normal(jax.random.key(0), (3, 2, 2, 1))
    a0 = np.sqrt(1 / (1 + np.exp(-4.0)))  # α₀ = sqrt(sigmoid(−γ₀))
    u = np.asarray(z0, np.float64) / a0
    snr0 = np.exp(4.0)
    for lik, v, x in (("categorical256", 256, x8), ("bernoulli", 2, xb)):
        centres = 2 * (np.arange(v) + 0.5) / v - 1
        logits = -0.5 * snr0 * (u[..., None] - centres) ** 2
        log_p = logits - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1,
                                       keepdims=True)) - logits.max(-1, keepdims=True)
        k = np.asarray(jnp.round(x * (v - 1))).astype(int)
        want = np.take_along_axis(log_p, np.broadcast_to(k, u.shape)[..., None], -1)
        got = jax.jit(lambda z, x: vdm.pixel_likelihood(z, g0, likelihood=lik).log_prob(x))(z0, x)
        np.testing.assert_allclose(got, want.sum(axis=(1, 2, 3, 4)), rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------- the model and terms

def _model(**kw):
    cfg = dict(image_shape=(8, 8, 1), channels=8, blocks=1, embed_dim=8, sample_steps=8)
    cfg.update(kw)
    return vdm.vdm_model(**cfg)


def _x8(b=4, shape=(8, 8, 1), seed=1):
    k = np.random.default_rng(seed).integers(0, 256, (b, *shape))
    return jnp.asarray(k / 255.0, jnp.float32)


def _perturbed(params, seed, scale=0.05):
    """Random non-zero parameters (the zero-initialised output layers would give ε̂ = 0)."""
    gen = np.random.default_rng(seed)
    return jax.tree.map(lambda p: p + scale * gen.standard_normal(p.shape).astype(np.float32),
                        params)


@pytest.fixture(scope="module")
def continuous_model():
    """A tiny continuous-time VDM with the monotone-net schedule, and its init parameters."""
    model = _model(schedule="learned_net")
    return model, jax.jit(model.init)(_init_key(), _x8(), jax.random.key(1))


@pytest.mark.slow
def test_terms_plug_into_elbo_terms_and_gradients_are_finite(continuous_model):
    model, params = continuous_model
    x, key = _x8(), jax.random.key(2)

    def loss(p):
        e = losses.elbo_terms(p, x, key, model=model, num_samples=2)
        return -jnp.mean(e["elbo"]), e

    @jax.jit  # one compilation: XLA shares the identical terms computations
    def run(p):
        (_, e), grads = jax.value_and_grad(loss, has_aux=True)(p)
        return (e, grads, model.apply(p, x, key, 2, method="per_example"),
                model.apply(p, x, key, 2, method="terms"),
                losses.log_importance_weights(p, x, key, model=model, num_samples=2))

    e, grads, per, t, lw = run(params)
    assert t["log_px_z"].shape == t["log_pz"].shape == t["log_qz"].shape == (2, 4)
    assert set(t["kl"]) == {"prior", "diffusion"} and t["kl"]["diffusion"].shape == (4,)
    np.testing.assert_allclose(e["elbo"], -(per["recon"] + per["prior"] + per["diffusion"]),
                               rtol=1e-5)
    np.testing.assert_allclose(e["kl_diffusion"], per["diffusion"], rtol=1e-6)
    np.testing.assert_allclose(per["bpd"], per["total"] / (64 * math.log(2)), rtol=1e-5)
    assert not model.exact_log_weights
    np.testing.assert_allclose(jnp.mean(lw, 0), e["elbo"], rtol=1e-5)  # averages to the ELBO
    # ε̂ = 0 at init: the diffusion term is ½ γ′(t) ‖ε‖², whose mean is ½ (γ₁ − γ₀) · 64.
    assert 0.5 * 18.3 * 64 * 0.5 < float(jnp.mean(per["diffusion"])) < 0.5 * 18.3 * 64 * 1.5
    leaves = jax.tree.leaves(grads)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in leaves)
    assert float(jnp.max(jnp.abs(grads["params"]["diffusion"]["score_net"]["out"]["kernel"]))) > 0


def test_sample_prior_gives_images(continuous_model):
    model, params = continuous_model
    params = _perturbed(params, 2)
    sample = jax.jit(lambda k: model.apply(params, k, 5, 1.0, method="sample_prior").mean())
    a, b = sample(jax.random.key(3)), sample(jax.random.key(4))
    assert a.shape == (5, 8, 8, 1) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert float(jnp.max(jnp.abs(a - b))) > 0.1
    np.testing.assert_array_equal(a, sample(jax.random.key(3)))  # keyed, reproducible


@pytest.mark.slow
def test_discrete_trajectory_iwae_tightens_the_bound():
    model = _model(image_shape=(4, 4, 1), likelihood="bernoulli", timesteps=4,
                   gamma_min=-6.0, gamma_max=4.0, fourier_exponents=())
    b, k = 32, 64
    x = jnp.asarray(np.random.default_rng(3).random((b, 4, 4, 1)) < 0.4, jnp.float32)
    params = _perturbed(jax.jit(model.init)(_init_key(), x, jax.random.key(1)), 9)
    assert model.exact_log_weights
    key = jax.random.key(10)
    t, w1 = jax.jit(lambda p: (model.apply(p, x, key, k, method="terms"),
                               losses.iwae_bound(p, x, key, model=model, num_samples=1)))(params)
    log_w = np.asarray(t["log_px_z"] + t["log_pz"] - t["log_qz"], np.float64)   # [k, B]
    elbo = np.asarray(jnp.mean(t["log_px_z"], 0) - sum(t["kl"].values()), np.float64)
    iwae = {n: np.asarray(jax.nn.logsumexp(log_w[:n], axis=0) - math.log(n)) for n in (1, 8, 64)}
    print("ELBO", elbo.mean(), "IWAE-k", {n: float(v.mean()) for n, v in iwae.items()})
    # The log weights average to the ELBO (closed-form KLs vs their Monte Carlo log ratios).
    se = log_w.std() / math.sqrt(log_w.size)
    assert abs(log_w.mean() - elbo.mean()) < 4 * se
    assert iwae[8].mean() > elbo.mean() + 4 * se and iwae[64].mean() > iwae[8].mean()
    assert np.mean(iwae[64] >= elbo) > 0.9
    # losses.iwae_bound with k = 1 is one log weight: the first of the same draws.
    np.testing.assert_allclose(w1, log_w[0], rtol=1e-5)


def test_gaussian_ancestral_sampling_reaches_the_data_distribution():
    """With the Bayes-optimal denoiser, T-step ancestral samples have z₀'s marginal."""
    g0, g1 = -8.0, 6.0
    gamma_fn = lambda t: linear_gamma(t, g0, g1)  # noqa: E731
    a2_1, s2_1 = jax.nn.sigmoid(-g1), jax.nn.sigmoid(g1)
    # Start from the exact z₁ marginal N(α₁ MU, α₁² SIGMA² + σ₁²).
    z1 = jnp.sqrt(a2_1) * MU + jnp.sqrt(a2_1 * SIGMA ** 2 + s2_1) * random.normal(
        jax.random.key(0), (20_000, 2))
    z0 = jax.jit(functools.partial(vdm.ancestral_sample, gamma_fn=gamma_fn, eps_fn=_optimal_eps,
                                   steps=200))(z1, jax.random.key(1))
    x0 = np.asarray(z0) / math.sqrt(float(jax.nn.sigmoid(-g0)))
    assert abs(x0.mean() - MU) < 0.02
    assert abs(x0.std() - SIGMA) < 0.02 * SIGMA
