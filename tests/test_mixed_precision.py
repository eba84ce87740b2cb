"""bf16 compute (``config.train.compute_dtype``, ``vae_jax.train.mixed_precision``) on every
registered model: the bf16 loss agrees with the float32 one within a stated tolerance, the
linear layers really run in bf16, parameters / optimizer state / EMA stay float32, and the
float32 default is today's loss function itself."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import _runs
from vae_jax import config as config_lib, data, models, train
from vae_jax.run import build
from vae_jax.train import mixed_precision

SHAPE = (8, 8, 1)
MODELS = {
    "mlp": dict(latent_dim=4, hidden=(32,)),
    "conv": dict(latent_dim=4, channels=(8, 16), hidden=32),
    "resnet": dict(latent_dim=4, channels=(8, 16), likelihood="discretized_logistic_mix5"),
    "hvae": dict(latent_dims=(8, 4), hidden=((32,), (16,))),
    "deep_hvae": dict(resolutions=(8, 4), encoder_blocks=1, decoder_blocks=(1, 1), widths=8,
                      latent_channels=2),
    "vdm": dict(likelihood="bernoulli", channels=8, blocks=1, timesteps=4),
    "latent_vdm": dict(latent_dim=4, hidden=(16,), score_hidden=(16,)),
}
# bf16 keeps 8 significant bits (relative rounding 2^-9 per operation); the per-example
# losses here are sums of tens to hundreds of nats, and the errors of the layers partly
# cancel: 2 % of the loss bounds what is seen, with margin.
RTOL = 0.02


def _config(name, dtype):
    config = config_lib.defaults()
    _runs.with_model(config, name, **MODELS[name])
    if config_lib.is_8bit(config):
        config.data.binarization = "none"
    config.train.compute_dtype = dtype
    return config_lib.resolve(config)


def _loss_and_grads(name, dtype):
    config = _config(name, dtype)
    model = build.build_model(config, SHAPE)
    loss_fn = build.train_loss(config, model)
    # the training loop's own init program (the loop tests compile the same models at this
    # shape, so the session's compilation cache compiles it once)
    params = train.create_train_state(jax.random.key(0), model, optax.adam(1e-3), SHAPE).params
    # zero-initialised output layers (VDM's score net) would make the loss independent of
    # the rest of the net at initialisation: give them small weights
    # (numpy: eager jax.random and any() would compile a program per parameter shape)
    params = jax.tree.map(lambda p: p if np.any(p) or p.ndim < 2 else jnp.asarray(
        0.1 * np.random.default_rng(p.size).normal(size=p.shape), jnp.float32), params)
    batch = np.random.default_rng(0).integers(0, 256, (16, *SHAPE)).astype(np.uint8)
    x = data.preprocess(jnp.asarray(batch), jax.random.key(1),
                        binarization=config.data.binarization)
    f = jax.jit(jax.value_and_grad(lambda p: loss_fn(p, x, jax.random.key(2), beta=1.0)[0]))
    loss, grads = f(params)
    return config, model, loss_fn, params, x, float(loss), grads


@pytest.mark.slow  # seven models, each compiled twice: ~1 min on shared cores
@pytest.mark.parametrize("name", sorted(MODELS))
def test_bf16_loss_agrees_with_float32_and_grads_stay_float32(name):
    assert set(MODELS) == set(models.names())  # every registered model is here
    *_, loss32, grads32 = _loss_and_grads(name, "float32")
    config, model, loss_fn, params, x, loss16, grads16 = _loss_and_grads(name, "bfloat16")
    assert np.isfinite(loss16) and loss16 != loss32  # bf16 did run ...
    assert abs(loss16 - loss32) <= RTOL * abs(loss32), (loss16, loss32)  # ... and agrees
    leaves32, leaves16 = jax.tree.leaves(grads32), jax.tree.leaves(grads16)
    assert all(g.dtype == jnp.float32 for g in leaves16)
    # the gradient as a whole points the same way (cosine > 0.9)
    a = np.concatenate([np.ravel(g) for g in leaves32])
    b = np.concatenate([np.ravel(g) for g in leaves16])
    assert a @ b > 0.9 * np.linalg.norm(a) * np.linalg.norm(b)
    # products and convolutions take bf16 operands
    jaxpr = str(jax.make_jaxpr(lambda p: loss_fn(p, x, jax.random.key(2), beta=1.0))(params))
    assert any(("dot_general" in line or "conv_general" in line) and "bf16" in line
               for line in jaxpr.splitlines()), name


@pytest.mark.slow
def test_bf16_step_keeps_params_optimizer_state_and_ema_float32():
    config = _config("mlp", "bfloat16")
    model = build.build_model(config, SHAPE)
    tx = optax.adam(1e-3)
    state = train.create_train_state(jax.random.key(0), model, tx, SHAPE)
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, *SHAPE)), jnp.uint8)
    new, metrics = jax.jit(lambda s: train.train_step(
        s, batch, jax.random.key(1), loss_fn=build.train_loss(config, model),
        optimizer=tx, binarization="dynamic", beta_fn=lambda s: 1.0, ema_decay=0.9))(state)
    floats = [x for x in jax.tree.leaves(new) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(x.dtype == jnp.float32 for x in floats)
    assert all(v.dtype == jnp.float32 for v in metrics.values())
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.params),
                                                     jax.tree.leaves(new.params))]
    assert all(moved)


def test_float32_is_the_plain_loss_and_unknown_dtypes_are_refused():
    config = _config("mlp", "float32")
    model = build.build_model(config, SHAPE)
    fn = build.train_loss(config, model)
    ref = build.build_loss(config, model)
    assert fn.func is ref.func and fn.keywords == ref.keywords  # the same partial, unwrapped
    assert mixed_precision.in_compute_dtype(ref, "float32") is ref
    with pytest.raises(ValueError, match="float16"):
        mixed_precision.in_compute_dtype(ref, "float16")
    config.train.compute_dtype = "float16"
    with pytest.raises(config_lib.ConfigError, match="config.train.compute_dtype='float16'"):
        config_lib.validate(config)


def test_cast_layer_params_casts_only_linear_layers():
    params = {"params": {"Dense_0": {"kernel": jnp.ones((2, 3)), "bias": jnp.zeros(3)},
                         "LayerNorm_0": {"scale": jnp.ones(3), "bias": jnp.zeros(3)},
                         "const": jnp.ones(4)}}
    out = mixed_precision.cast_layer_params(params, jnp.bfloat16)["params"]
    assert out["Dense_0"]["kernel"].dtype == out["Dense_0"]["bias"].dtype == jnp.bfloat16
    assert out["LayerNorm_0"]["bias"].dtype == out["const"].dtype == jnp.float32
