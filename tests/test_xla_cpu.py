"""vae_jax.ops: the CPU fast paths and their one switch. Off (or on another backend),
every path is plain JAX: jax.random's draws, lax's convolutions, a plain jit."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from vae_jax import ops
from vae_jax.ops import compile as xla_compile
from vae_jax.ops import conv, random


@pytest.fixture
def switched_off():
    ops.set_enabled(False)
    try:
        yield
    finally:
        ops.set_enabled(True)


def _program(make_fn, *args) -> str:
    """The jaxpr (nested ones included) of a freshly made function: a new function object,
    so no trace cached under the other setting of the switch is reused."""
    return str(jax.make_jaxpr(make_fn())(*args))


def test_the_switch_is_on_by_default_on_the_cpu():
    assert ops.enabled() and ops.active() == (jax.default_backend() == "cpu")


def test_off_the_convolution_is_lax_and_on_it_is_products(switched_off):
    x = jnp.ones((2, 8, 8, 3))
    k = jnp.ones((3, 3, 3, 4))
    strided = lambda: lambda x, k: conv.conv_general_dilated(x, k, (2, 2), "SAME",
                                                             dimension_numbers=conv.NHWC)
    assert "conv_general_dilated" in _program(strided, x, k)
    off = strided()(x, k)
    ops.set_enabled(True)
    assert "conv_general_dilated" not in _program(strided, x, k)
    np.testing.assert_allclose(strided()(x, k), off, rtol=1e-6)


def test_off_the_draws_are_jax_randoms_own(switched_off):
    key = jax.random.key(3)
    draw = lambda: lambda k: random.normal(k, (4, 5))
    assert "random_bits" in _program(draw, key)  # jax.random's own primitive
    np.testing.assert_array_equal(random.normal(key, (4, 5)), jax.random.normal(key, (4, 5)))
    ops.set_enabled(True)
    assert "random_bits" not in _program(draw, key)
    np.testing.assert_array_equal(random.normal(key, (4, 5)), jax.random.normal(key, (4, 5)))


def test_off_evaluation_compiles_with_no_options(switched_off):
    assert xla_compile.eval_compiler_options() == {}
    fn = xla_compile.jit_eval(lambda x: x * 2)
    # the plain jax.jit itself, only announced (ops.compile.announced) when it compiles
    assert isinstance(fn.__wrapped__, type(jax.jit(lambda x: x)))


EXIT_AT_SHUTDOWN = """
import atexit, sys
from vae_jax.ops import compile as xla_compile
atexit.register(print, "a later exit handler ran", file=sys.stderr, flush=True)

class Kept:
    def __del__(self):   # the interpreter's finalisation would call this
        print("finalised", file=sys.stderr, flush=True)

kept = Kept()
xla_compile.exit_at_shutdown(143)
print("stopped", end="")   # unflushed: the exit flushes it
sys.exit(0)
"""


def test_exit_at_shutdown_skips_finalisation_after_the_other_exit_handlers():
    """What the command does once a signal stopped it: the exit handlers registered after
    vae_jax's run, stdout is flushed, the process ends with the stop's code and the
    interpreter is not finalised (where XLA's or orbax's threads could abort it)."""
    proc = subprocess.run([sys.executable, "-c", EXIT_AT_SHUTDOWN], cwd=conftest.REPO,
                          env=dict(os.environ, PYTHONPATH=conftest.REPO), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr[-2000:]
    assert proc.stderr == "a later exit handler ran\n" and proc.stdout == "stopped", proc
