"""The VDM's ε-networks (vae_jax/models/vdm_nets.py): the U-Net variant (levels > 0)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.models.vdm import model as vdm
from vae_jax.models.vdm.nets import ScoreNet
from vae_jax.ops.initialize import initialize


def _net_and_params(levels: int, shape=(2, 8, 8, 1)):
    net = ScoreNet(channels=8, blocks=1, levels=levels, fourier_exponents=(), embed_dim=8)
    z = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    gamma = jnp.linspace(-10.0, 4.0, shape[0])
    # one small program (ops.initialize), not Flax's initialisation op by op
    params = jax.tree.map(jnp.asarray, initialize(net.init, jax.random.key(1), z, gamma))
    return net, params, z, gamma


@pytest.mark.slow
@pytest.mark.parametrize("levels", [0, 2])
def test_score_net_is_zero_at_init_with_the_input_shape(levels):
    net, params, z, gamma = _net_and_params(levels)
    eps_hat = jax.jit(net.apply)(params, z, gamma)
    assert eps_hat.shape == z.shape
    np.testing.assert_array_equal(np.asarray(eps_hat), 0.0)


@pytest.mark.slow
def test_every_unet_parameter_reaches_the_output():
    """No dead branch: with the zero-initialised layers perturbed, every parameter array of
    the U-Net (both paths, every level's skip merge, the γ embedding) moves ε̂; two levels,
    so both the outer and the inner skip are checked."""
    levels = 2
    net, params, z, gamma = _net_and_params(levels)
    rng = np.random.default_rng(2)   # numpy: eager draws would compile one per shape
    params = jax.tree.map(lambda p: p + jnp.asarray(0.3 * rng.normal(size=p.shape),
                                                    jnp.float32), params)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(jnp.sin(net.apply(p, z, gamma)))))(params)
    names = [f"down_{lvl}" for lvl in range(levels)] + [f"up_{lvl}" for lvl in range(levels)]
    names += [f"merge_{lvl}" for lvl in range(levels)]
    names += [f"up_{lvl}_block_0" for lvl in range(levels)]
    assert set(names) <= set(params["params"]), sorted(params["params"])
    flat = jax.tree_util.tree_flatten_with_path(grads)[0]
    dead = [jax.tree_util.keystr(path) for path, g in flat if not np.any(np.asarray(g) != 0)]
    assert not dead, dead


def test_unet_needs_sides_divisible_by_two_to_the_levels():
    vdm.vdm_model(image_shape=(28, 28, 1), levels=2)  # 28 = 7 · 2²
    with pytest.raises(ValueError, match=r"levels=3.*divisible by 8; got 28x28.*"
                                         r"config\.model\.levels"):
        vdm.vdm_model(image_shape=(28, 28, 1), levels=3)
