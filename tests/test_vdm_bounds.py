"""The L_T-vs-T curve (vae_jax/models/vdm/bounds.py): against the closed forms on Gaussian
data with the Bayes-optimal denoiser (each L_T, L_∞ and, sharper, their differences under
common random numbers), and on a VDM / latent VDM against the models' own bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from test_vdm import (_continuous_closed_form, _discrete_closed_form, _fixed, _gaussian_data,
                      _init_key, _optimal_eps)
from vae_jax import losses
from vae_jax.models.vdm import bounds, latent
from vae_jax.models.vdm import model as vdm
from vae_jax.ops.initialize import initialize

STEPS = (10, 100, 1000, 0)


def _closed(T):
    return _discrete_closed_form(_fixed, T) if T else _continuous_closed_form()


def test_diffusion_bounds_match_the_closed_forms_and_decrease_with_t():
    n = 100_000
    x = _gaussian_data(jax.random.key(99), n)
    fn = jax.jit(lambda k: bounds.diffusion_bounds(x, k, gamma_fn=_fixed,
                                                       eps_fn=_optimal_eps, timesteps=STEPS))
    out = {T: np.asarray(v, np.float64) for T, v in fn(jax.random.key(0)).items()}
    assert set(out) == set(STEPS) and all(v.shape == (n,) for v in out.values())
    for T, v in out.items():
        se = v.std() / np.sqrt(n)
        print(f"T={T}: {v.mean():.3f} ± {se:.3f}, closed form {_closed(T):.3f}")
        assert abs(v.mean() - _closed(T)) < 4 * se + 1e-3 * _closed(T)
    # the same (t, ε) for every T: the gaps L_10 − L_100, L_100 − L_1000, L_1000 − L_∞ are
    # each within a few standard errors of their closed forms, and all positive
    for a, b in [(10, 100), (100, 1000), (1000, 0)]:
        d = out[a] - out[b]
        mean, se = d.mean(), d.std() / np.sqrt(n)
        want = _closed(a) - _closed(b)
        print(f"L_{a} - L_{b or 'inf'}: {mean:.4f} ± {se:.4f}, closed form {want:.4f}")
        assert mean > 10 * se and abs(mean - want) < 4 * se + 1e-3 * want
    # without shared draws the smallest gap would be lost in the noise of each value
    assert out[1000].std() / np.sqrt(n) > 0.1 * (_closed(1000) - _closed(0))


@pytest.mark.slow
def test_num_draws_averages_per_example():
    x = _gaussian_data(jax.random.key(3), 64)
    one = bounds.diffusion_bounds(x, jax.random.key(1), gamma_fn=_fixed,
                                      eps_fn=_optimal_eps, timesteps=(10,), num_draws=1)[10]
    many = bounds.diffusion_bounds(x, jax.random.key(1), gamma_fn=_fixed,
                                       eps_fn=_optimal_eps, timesteps=(10,), num_draws=50)[10]
    assert one.shape == many.shape == (64,)
    # averaging 50 draws shrinks the spread over examples (x's own spread stays)
    assert float(jnp.std(many)) < 0.5 * float(jnp.std(one))


def _x8(b=4):
    return (jax.random.randint(jax.random.key(1), (b, 8, 8, 1), 0, 256) / 255.0).astype(
        jnp.float32)


@pytest.mark.slow   # initialising the conv VDM compiles for ~15 s on a shared CPU
@pytest.mark.parametrize("timesteps", [0, 4])
def test_vdm_bounds_at_the_models_own_t_are_its_bound(timesteps):
    """At T = the model's own (one-step) T the curve's terms are the model's per_example,
    bit for bit (their sum up to float rounding); only the diffusion term moves with T."""
    kw = dict(image_shape=(8, 8, 1), channels=8, blocks=1, schedule="learned_net",
              schedule_hidden=8)
    model = vdm.vdm_model(timesteps=timesteps, trajectory=False, **kw)
    x, key = _x8(), jax.random.key(7)
    params = initialize(model.init, _init_key(), x, key)   # one program, not op by op
    own = model.apply(params, x, key, 2, method="per_example")
    curve = bounds.bounds_vs_timesteps(vdm.vdm_model(**kw), params, x, key,
                                           timesteps=(timesteps, 16), num_draws=2)
    for name in ("recon", "prior", "diffusion"):
        np.testing.assert_array_equal(curve[timesteps][name], own[name])
    for name in ("total", "bpd"):
        np.testing.assert_allclose(curve[timesteps][name], own[name], rtol=1e-6)
    np.testing.assert_array_equal(curve[16]["recon"], own["recon"])
    np.testing.assert_array_equal(curve[16]["prior"], own["prior"])
    assert not np.allclose(curve[16]["diffusion"], own["diffusion"])
    np.testing.assert_allclose(curve[16]["bpd"], curve[16]["total"] / (64 * np.log(2)),
                               rtol=1e-6)


@pytest.mark.slow
def test_latent_vdm_bounds_are_its_negative_elbo():
    model = latent.latent_vdm_model(image_shape=(8, 8, 1), latent_dim=4, hidden=(16,),
                                        score_hidden=(16,))
    x = jnp.round(_x8())
    key = jax.random.key(5)
    params = initialize(model.init, _init_key(), x, key)
    curve = bounds.bounds_vs_timesteps(model, params, x, key, timesteps=(0, 50))
    elbo = losses.elbo_terms(params, x, key, model=model)["elbo"]
    np.testing.assert_allclose(curve[0]["total"], -elbo, rtol=1e-6)
    assert set(curve[50]) == {"recon", "prior", "diffusion", "encoder", "total", "bpd"}
    np.testing.assert_array_equal(curve[50]["encoder"], curve[0]["encoder"])


def test_negative_timesteps_are_refused():
    model = vdm.vdm_model(image_shape=(8, 8, 1), channels=8, blocks=1)
    with pytest.raises(ValueError, match="timesteps=-1"):
        bounds.with_timesteps(model, -1)
