"""``jax.random``'s own draws, bit for bit, without the rolled loop XLA:CPU cannot fuse.

On the CPU, JAX lowers the Threefry-2x32 hash as a ``fori_loop`` over its five groups of
four rounds (to keep compile times short). That loop breaks XLA's fusion: every iteration
materialises the two counter arrays, so the Bernoulli draws of dynamic binarization took a
large share of the default train step (benchmarks/README.md). GPU and TPU lowerings are
already unrolled, so there (and with the ``vae_jax.ops`` switch off) every function
here is ``jax.random``'s own.

The functions here compute exactly what ``jax.random.bits`` / ``uniform`` / ``normal`` /
``bernoulli`` return for a Threefry key under ``jax_threefry_partitionable`` (JAX's default
since 0.5): the same counters (a flat iota), the same 20 rounds and key schedule, the same
bits-to-float map. Written with plain ``jnp`` ops the hash is one elementwise expression
that XLA fuses with its consumer. ``tests/test_rng.py`` checks equality with ``jax.random``
on many keys and shapes, so a change in JAX's generator fails loudly instead of silently
changing the streams. Any other key implementation, a non-float32 dtype, or the
non-partitionable mode falls back to ``jax.random`` itself.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import ops

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _key_words(key: jax.Array):
    """(k1, k2) uint32 scalars of a Threefry key, or None for any other generator."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != () or "threefry" not in str(jax.random.key_impl(key)):
            return None
        data = jax.random.key_data(key)
    else:  # a legacy raw key: uint32 [2] of the default implementation
        if key.shape != (2,) or key.dtype != jnp.uint32:
            return None
        if jax.config.jax_default_prng_impl != "threefry2x32":
            return None
        data = key
    return data[0], data[1]


def _rotl(x: jax.Array, r: int) -> jax.Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array):
    """The Threefry-2x32 hash (20 rounds; Salmon et al. 2011), unrolled: two uint32 arrays."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = _rotl(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def _available(key: jax.Array, dtype) -> bool:
    return (ops.active() and jnp.dtype(dtype) == jnp.float32
            and jax.config.jax_threefry_partitionable and _key_words(key) is not None)


def bits(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """uint32 ``shape``: equal to ``jax.random.bits(key, shape)`` for a Threefry key."""
    shape = tuple(shape)
    words = (_key_words(key) if ops.active() and jax.config.jax_threefry_partitionable
             else None)
    n = math.prod(shape)
    if words is None or n >= 2 ** 32 or not shape:
        return jax.random.bits(key, shape, jnp.uint32)
    counts = jax.lax.iota(jnp.uint32, n).reshape(shape)  # the high count word is 0
    b1, b2 = threefry2x32(words[0], words[1], jnp.zeros_like(counts), counts)
    return b1 ^ b2


def uniform(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32,
            minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
    """Equal to ``jax.random.uniform(key, shape, dtype, minval, maxval)``."""
    if not _available(key, dtype):
        return jax.random.uniform(key, shape, dtype, minval, maxval)
    return _uniform(key, tuple(shape), minval, maxval)


# jit like jax.random's own: XLA contracts floats * (hi - lo) + lo into one FMA inside a
# compiled function, so eager op-by-op arithmetic would differ in the last bit.
@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _uniform(key: jax.Array, shape: tuple[int, ...], minval: float, maxval: float):
    # 23 random mantissa bits under exponent 0: a float in [1, 2), minus 1.
    floats = jax.lax.bitcast_convert_type(
        (bits(key, shape) >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32) - 1.0
    lo, hi = jnp.float32(minval), jnp.float32(maxval)
    return jnp.maximum(lo, floats * (hi - lo) + lo)


def normal(key: jax.Array, shape: tuple[int, ...], dtype=jnp.float32) -> jax.Array:
    """Equal to ``jax.random.normal(key, shape, dtype)``: √2 · erfinv(U(−1, 1))."""
    if not _available(key, dtype):
        return jax.random.normal(key, shape, dtype)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = uniform(key, shape, dtype, lo, 1.0)
    return np.float32(np.sqrt(2.0)) * jax.lax.erf_inv(u)


def bernoulli(key: jax.Array, p: jax.Array) -> jax.Array:
    """bool, p's shape: equal to ``jax.random.bernoulli(key, p)`` (u < p, u ~ U[0, 1))."""
    p = jnp.asarray(p)
    if not _available(key, p.dtype):
        return jax.random.bernoulli(key, p)
    return uniform(key, p.shape, p.dtype) < p
