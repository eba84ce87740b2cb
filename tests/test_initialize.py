"""ops.initialize: a model's initial parameters from batched draws, bit for bit those of
``jax.jit(model.init)``; the default MLP's initial state is pinned by a checksum."""

import hashlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default, fashion_mnist_deep_hvae
from vae_jax import config as config_lib
from vae_jax import train
from vae_jax.models import registry
from vae_jax.models.deep_hvae import deep_hvae_model
from vae_jax.ops import initialize as init_lib
from vae_jax.run import build
from vae_jax.train import optim

# Bits of XLA's own code generation (digests; two programs that agree bit for bit) carry
# the xla_defaults mark; the integer hash's bits do not depend on it.

# sha256 of the default config's initial parameters and Adam state for seed 0 (paths and
# bytes, ``_digest``), as ``jax.jit`` of ``model.init`` computed them before
# ``ops.initialize``: every figure quoted for the MLP VAE starts from these values.
DEFAULT_PARAMS_SHA256 = "7a75a73a7fd6a5ab2da38a7d6c24aabbc8e4ea3b838a10b35798dc4379ed0871"
DEFAULT_OPT_STATE_SHA256 = "ca4d5178ca532ce87d55159c132c0adcf0a1f99ac76b9c3f4f247e63be34a293"
# The same for ``_small_deep_hvae`` (key 3) and for the trained ``:cpu_patch`` network
# (seed 0; its parameters are in benchmarks/results/cpu_patch_2h): jax.jit(model.init) of
# a deep HVAE compiles for tens of seconds, so its values are pinned rather than recomputed.
SMALL_DEEP_HVAE_SHA256 = "f291f96921c1050946b867092ab01d09c46ac5758b42a18434c979f235ed0def"
CPU_PATCH_PARAMS_SHA256 = "1a952d371783635ee5532a829a3b5a5b932eb423293aa28722499c8a70175a9e"


def _digest(tree) -> str:
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        h.update(jax.tree_util.keystr(path).encode())
        h.update(np.asarray(leaf).tobytes())
    return h.hexdigest()


def _assert_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(x, y)


@pytest.mark.xla_defaults
def test_default_mlp_initial_state_is_unchanged():
    config = config_lib.resolve(default.get_config())
    model = build.build_model(config, (28, 28, 1))
    state = train.create_train_state(build.root_keys(config.seed)["init"], model,
                                     optim.make_optimizer(config.optim, 468), (28, 28, 1),
                                     ema=False)
    assert _digest(state.params) == DEFAULT_PARAMS_SHA256
    assert _digest(state.opt_state) == DEFAULT_OPT_STATE_SHA256


def _small_deep_hvae():
    return deep_hvae_model(image_shape=(8, 8, 1), resolutions=(8, 4, 1), encoder_blocks=1,
                           decoder_blocks=(1, 2, 2), widths=(8, 8, 16), bottleneck=0.5,
                           latent_channels=2, log_std_bound=5.0)


@pytest.mark.xla_defaults
@pytest.mark.slow
def test_deep_hvae_initial_params_are_unchanged():
    """Many parameters of few shapes (batched by shape): jax.jit(model.init)'s values."""
    key = jax.random.key(3)
    params = init_lib.initialize(_small_deep_hvae().init, key, jnp.zeros((1, 8, 8, 1)),
                                 jax.random.fold_in(key, 1))
    assert len(jax.tree.leaves(params)) == 165
    assert _digest(params) == SMALL_DEEP_HVAE_SHA256


@pytest.mark.xla_defaults
@pytest.mark.slow
def test_cpu_patch_initial_params_are_unchanged():
    config = config_lib.resolve(fashion_mnist_deep_hvae.get_config("cpu_patch"))
    model = build.build_model(config, (28, 28, 1))
    state = train.create_train_state(build.root_keys(config.seed)["init"], model,
                                     optim.make_optimizer(config.optim, 1875), (28, 28, 1),
                                     ema=False)
    assert _digest(state.params) == CPU_PATCH_PARAMS_SHA256


@pytest.mark.xla_defaults
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["vdm", "mlp"])
def test_initialize_equals_jit_of_init(kind):
    """GroupNorm's ones, zero output layers and a U-Net (the VDM), matrices (the MLP): the
    values of jax.jit(model.init)."""
    shape = (8, 8, 1)
    if kind == "vdm":
        model = registry.get("vdm", image_shape=shape, likelihood="bernoulli", channels=8,
                             blocks=2, levels=1)
    else:
        model = registry.get("mlp", image_shape=shape, hidden=(64, 32), latent_dim=4)
    key = jax.random.key(3)
    args = (key, jnp.zeros((1, *shape)), jax.random.fold_in(key, 1))
    fast = init_lib.initialize(model.init, *args)
    _assert_identical(fast, jax.jit(model.init)(*args))
    assert all(isinstance(x, np.ndarray) for x in jax.tree.leaves(fast))


@pytest.mark.slow
def test_threefry_without_the_loop_equals_jax_random():
    """fold-in, split and bits of the unrolled hash equal jax.random's, also vectorised
    over keys and for many-dimensional shapes."""
    keys = jax.random.split(jax.random.key(11), 3)

    def ours(k):
        folded = init_lib.threefry_fold_in(k, jnp.uint32(2 ** 31 + 5))
        split = init_lib.threefry_split(k, shape=(2, 3))
        return (jax.random.key_data(folded), jax.random.key_data(split),
                init_lib.threefry_bits(k, bit_width=32, shape=(3, 3, 4, 5)))

    def theirs(k):
        return (jax.random.key_data(jax.random.fold_in(k, 2 ** 31 + 5)),
                jax.random.key_data(jax.random.split(k, (2, 3))),
                jax.random.bits(k, (3, 3, 4, 5), jnp.uint32))

    _assert_identical(jax.jit(jax.vmap(ours))(keys), jax.jit(jax.vmap(theirs))(keys))


@pytest.mark.xla_defaults
def test_unbatchable_operations_and_traced_calls():
    """A value computed through a matrix product (a data-dependent initialisation) is
    evaluated as traced; inside jax.eval_shape the function is traced, not run, and its
    trace is kept for the next call."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7

    def fn(key, x):
        k1, k2 = jax.random.split(key)
        a = jax.random.normal(k1, (3, 4))
        b = jax.random.normal(k2, (3, 4))
        return {"a": a, "b": b, "c": jnp.tanh(x @ w + a[0]), "d": jax.random.uniform(k2, (5,))}

    args = (jax.random.key(5), jnp.ones((2, 3)))
    _assert_identical(init_lib.initialize(fn, *args), jax.jit(fn)(*args))
    shapes = jax.eval_shape(lambda k, x: init_lib.initialize(fn, k, x), *args)
    assert shapes["c"].shape == (2, 4)
    assert init_lib.traced(fn, *args) is init_lib.traced(fn, *args)   # kept
