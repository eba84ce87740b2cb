"""vae_jax.ops.random must reproduce jax.random bit for bit (it is only a faster lowering)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.ops import random

SHAPES = [(1,), (7,), (3, 5), (128, 28, 28, 1), (2, 1000, 20), (4, 3, 2, 5)]


def _keys():
    return [jax.random.key(s) for s in (0, 1, 42, 2**31 - 1)] + [
        jax.random.fold_in(jax.random.key(7), 123), jax.random.split(jax.random.key(3))[1]]


@pytest.mark.parametrize("shape", SHAPES)
def test_bits_equal_jax_random_bits(shape):
    for key in _keys():
        np.testing.assert_array_equal(random.bits(key, shape), jax.random.bits(key, shape))
        np.testing.assert_array_equal(jax.jit(random.bits, static_argnums=1)(key, shape),
                                      jax.random.bits(key, shape))


@pytest.mark.xla_defaults  # float bits of two programs: how XLA generates each one's code
@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_normal_equal_jax_random(shape):
    for key in _keys():
        np.testing.assert_array_equal(jax.jit(random.uniform, static_argnums=1)(key, shape),
                                      jax.random.uniform(key, shape))
        np.testing.assert_array_equal(random.uniform(key, shape, minval=-2.0, maxval=3.0),
                                      jax.random.uniform(key, shape, minval=-2.0, maxval=3.0))
        np.testing.assert_array_equal(jax.jit(random.normal, static_argnums=1)(key, shape),
                                      jax.random.normal(key, shape))


@pytest.mark.slow
@pytest.mark.xla_defaults
def test_bernoulli_equals_jax_random_on_8bit_pixel_probabilities():
    pixels = jax.random.randint(jax.random.key(5), (64, 28, 28, 1), 0, 256).astype(jnp.uint8)
    p = pixels.astype(jnp.float32) / 255.0
    for key in _keys():
        ours = jax.jit(random.bernoulli)(key, p)
        assert ours.dtype == jnp.bool_
        np.testing.assert_array_equal(ours, jax.random.bernoulli(key, p))
    # and it is a Bernoulli(p): 0 and 1 exactly, frequencies at p within 5 s.e.
    p = jnp.linspace(0.0, 1.0, 11)
    draws = jax.vmap(lambda k: random.bernoulli(k, p))(jax.random.split(jax.random.key(0), 20000))
    freq = np.asarray(draws.mean(0))
    se = np.sqrt(np.asarray(p) * (1 - np.asarray(p)) / 20000) + 1e-12
    assert freq[0] == 0.0 and freq[-1] == 1.0
    assert np.all(np.abs(freq - np.asarray(p)) <= 5 * se + 1e-9)


def test_threefry_known_answer():
    """Salmon et al.'s Random123 known-answer vector for Threefry-2x32-20."""
    u = lambda v: jnp.asarray(v, jnp.uint32)  # noqa: E731
    out = random.threefry2x32(u(0x13198A2E), u(0x03707344), u(0x243F6A88), u(0x85A308D3))
    assert [int(o) for o in out] == [0xC4923A9C, 0x483DF7A0]
    out = random.threefry2x32(u(0), u(0), u(0), u(0))
    assert [int(o) for o in out] == [0x6B200159, 0x99BA4EFE]


def test_other_generators_fall_back_to_jax_random():
    key = jax.random.key(0, impl="rbg")
    np.testing.assert_array_equal(random.bits(key, (3, 4)), jax.random.bits(key, (3, 4)))
    np.testing.assert_array_equal(random.normal(key, (5,)), jax.random.normal(key, (5,)))
    p = jnp.full((6,), 0.5, jnp.bfloat16)  # not float32: jax.random's own path
    k = jax.random.key(1)
    np.testing.assert_array_equal(random.bernoulli(k, p), jax.random.bernoulli(k, p))
