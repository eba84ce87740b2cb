"""Latent-space pictures: interpolation maths, traversals, the 2-D manifold, PNG writers."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from scipy.special import ndtri

from vae_jax.ops.initialize import initialize  # jit(model.init)'s values
from vae_jax import config as config_lib
from vae_jax import data, models
from vae_jax.evaluate import sampling

SHAPE = (8, 8, 1)


def _model(latent_dim=3, seed=0):
    model = models.get("mlp", image_shape=SHAPE, latent_dim=latent_dim, hidden=(16,))
    params = jax.tree.map(jnp.asarray, initialize(model.init, jax.random.key(seed),
                                                  jnp.zeros((1, *SHAPE)), jax.random.key(1)))
    return model, params


def _images(n, seed=0):  # clearly synthetic inputs: random grey levels
    return jax.random.uniform(jax.random.key(seed), (n, *SHAPE))


# ------------------------------------------------------------------------ interpolation

def test_lerp_is_the_affine_path():
    z0, z1 = jnp.array([1.0, -2.0]), jnp.array([3.0, 2.0])
    path = sampling.lerp(z0, z1, jnp.array([0.0, 0.25, 1.0]))
    np.testing.assert_allclose(path, [[1, -2], [1.5, -1], [3, 2]], rtol=1e-6)


def test_slerp_orthogonal_unit_vectors_stay_on_the_circle():
    z0, z1 = jnp.array([1.0, 0.0]), jnp.array([0.0, 1.0])
    t = jnp.linspace(0, 1, 7)
    path = sampling.slerp(z0, z1, t)
    # Ω = π/2, so z(t) = (cos(tπ/2), sin(tπ/2)): norm 1 and angle tΩ from z0 all along.
    np.testing.assert_allclose(path, np.stack([np.cos(t * np.pi / 2), np.sin(t * np.pi / 2)], 1),
                               atol=1e-6)
    np.testing.assert_allclose(path[3], np.array([1, 1]) / math.sqrt(2), atol=1e-6)


def test_slerp_general_vectors_matches_the_formula_and_ends():
    z0, z1 = jnp.array([2.0, 0.5, -1.0]), jnp.array([-0.5, 1.5, 1.0])
    t = jnp.array([0.0, 0.3, 1.0])
    omega = np.arccos(np.dot(z0, z1) / (np.linalg.norm(z0) * np.linalg.norm(z1)))
    expected = [(np.sin((1 - s) * omega) * np.asarray(z0) + np.sin(s * omega) * np.asarray(z1))
                / np.sin(omega) for s in np.asarray(t)]
    path = sampling.slerp(z0, z1, t)
    np.testing.assert_allclose(path, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(path[0], z0, atol=1e-6)
    np.testing.assert_allclose(path[-1], z1, atol=1e-6)


@pytest.mark.parametrize("z1", [[2.0, 4.0], [1.0, 2.0 + 1e-7], [-1.0, -2.0], [0.0, 0.0]])
def test_slerp_near_parallel_falls_back_to_lerp(z1):
    z0, z1 = jnp.array([1.0, 2.0]), jnp.array(z1)
    t = jnp.linspace(0, 1, 5)
    path = sampling.slerp(z0, z1, t)
    assert np.all(np.isfinite(path))
    np.testing.assert_allclose(path, sampling.lerp(z0, z1, t), atol=1e-4)


def test_slerp_gradient_is_finite_when_parallel():
    # jnp.where alone would give NaN gradients from the discarded 0/0 branch.
    g = jax.grad(lambda z: jnp.sum(sampling.slerp(z, 2.0 * z, jnp.array([0.5]))))(
        jnp.array([1.0, 2.0]))
    assert np.all(np.isfinite(g))


@pytest.mark.slow
def test_interpolation_endpoints_are_the_reconstructions():
    model, params = _model()
    x = _images(2)
    recon = sampling.reconstructions(params, x, model=model)
    for method in ("linear", "spherical"):
        path = sampling.interpolate(params, x[0], x[1], model=model, num=5, method=method)
        assert path.shape == (5, *SHAPE)
        np.testing.assert_allclose(path[0], recon[0], atol=1e-5)
        np.testing.assert_allclose(path[-1], recon[1], atol=1e-5)
    with pytest.raises(ValueError, match="spherical"):
        sampling.interpolate(params, x[0], x[1], model=model, method="cubic")


# ----------------------------------------------------------------- traversals, manifold

def test_traversal_varies_one_dimension_only():
    z = jnp.array([0.1, -0.2, 0.3])
    values = jnp.array([-1.0, 0.0, 2.0])
    zs = sampling.traversal_latents(z, [2, 0], values)
    assert zs.shape == (2, 3, 3)
    np.testing.assert_allclose(zs[0, :, 2], values)
    np.testing.assert_allclose(zs[0, :, :2], np.tile(z[:2], (3, 1)))
    np.testing.assert_allclose(zs[1, :, 0], values)
    np.testing.assert_allclose(zs[1, :, 1:], np.tile(z[1:], (3, 1)))


def test_latent_traversal_decodes_the_traversed_latents():
    model, params = _model()
    x = _images(1)[0]
    out = sampling.latent_traversal(params, x, model=model, dims=[1], num=3, extent=2.0)
    assert out.shape == (1, 3, *SHAPE)
    z = sampling.encode_mean(params, x[None], model=model)[0]
    expected = sampling.decode_mean(params, z[None].repeat(3, 0).at[:, 1].set(
        jnp.array([-2.0, 0.0, 2.0])), model=model)
    np.testing.assert_allclose(out[0], expected, atol=1e-6)


def test_manifold_latents_are_prior_quantiles_laid_out_like_a_plot():
    z = np.asarray(sampling.manifold_latents(num=3, quantile=0.95))
    q = ndtri(0.95)  # 1.6449
    assert z.shape == (9, 2)
    np.testing.assert_allclose(z[:3, 0], [-q, 0, q], atol=1e-5)     # z1 grows to the right
    np.testing.assert_allclose(z[::3, 1], [q, 0, -q], atol=1e-5)    # z2 grows upwards
    with pytest.raises(ValueError, match="quantile"):
        sampling.manifold_latents(3, quantile=1.0)


def test_manifold_grid_needs_two_latent_dimensions():
    model, params = _model(latent_dim=3)
    with pytest.raises(ValueError, match="latent_dim=2"):
        sampling.manifold_grid(params, model=model, num=4)
    model2, params2 = _model(latent_dim=2)
    grid = sampling.manifold_grid(params2, model=model2, num=4)
    np.testing.assert_allclose(grid, sampling.decode_mean(
        params2, sampling.manifold_latents(4), model=model2), atol=1e-6)


def test_prior_samples_at_zero_temperature_decode_the_origin():
    model, params = _model()
    s = sampling.prior_samples(params, jax.random.key(0), model=model, num=4, temperature=0.0)
    origin = sampling.decode_mean(params, jnp.zeros((1, 3)), model=model)
    np.testing.assert_allclose(s, jnp.broadcast_to(origin, s.shape), atol=1e-6)


def test_active_dims_ranks_by_kl():
    model, params = _model(latent_dim=4)
    bias = params["params"]["encoder"]["out"]["bias"]
    # mean biases of 0, 3, 0, 6 on dims 0..3: KL per dim grows with μ², so 3 then 1 first.
    params["params"]["encoder"]["out"]["bias"] = bias.at[:4].set(jnp.array([0.0, 3.0, 0.0, 6.0]))
    assert sampling.active_dims(params, _images(16), model=model, top=2) == [3, 1]


def test_encode_dataset_batches_like_one_call():
    model, params = _model()
    x = np.asarray(_images(10))
    np.testing.assert_allclose(sampling.encode_dataset(params, x, model=model, batch_size=3),
                               sampling.encode_mean(params, jnp.asarray(x), model=model), atol=1e-6)


# ----------------------------------------------------------------------------- writers

@pytest.mark.slow
def test_write_sample_images_for_a_2d_model(tmp_path):
    model, params = _model(latent_dim=2)
    images = (np.asarray(_images(40)) * 255).astype(np.uint8)
    labels = np.arange(40) % 10
    settings = dict(config_lib.defaults().sample.to_dict(), num=16, num_interpolation=6,
                    traversal_steps=5, manifold_size=7, scatter_points=30, temperature=0.5)
    paths = sampling.write_sample_images(str(tmp_path), params, images, jax.random.key(0),
                                         model=model, test_labels=labels, settings=settings,
                                         class_names=data.CLASS_NAMES["fashion_mnist"])
    assert set(paths) == {"samples_t0.5", "reconstructions", "interpolation_linear",
                          "interpolation_spherical", "traversal", "manifold", "latent_scatter"}
    size = lambda name: Image.open(paths[name]).size  # (width, height)
    cell = SHAPE[0] + 1
    assert size("manifold") == (7 * cell + 1, 7 * cell + 1)
    assert size("interpolation_linear") == (6 * cell + 1, cell + 1)
    assert size("traversal") == (5 * cell + 1, 2 * cell + 1)   # one row per latent dimension
    assert size("reconstructions") == (8 * cell + 1, 4 * cell + 1)  # 16 pairs, 8 per row
    assert all(os.path.getsize(p) > 0 for p in paths.values())


def test_latent_scatter_rejects_non_2d(tmp_path):
    with pytest.raises(ValueError, match="latent_dim=2"):
        sampling.save_latent_scatter(str(tmp_path / "s.png"), np.zeros((5, 3)))
