"""The operations the models and evaluation call: random draws (``random``), convolutions
(``conv``), compiled evaluation programs (``compile``) and parameter initialisation
(``initialize``), each with a CPU fast path behind one switch.

XLA:CPU leaves four things slow that the GPU and TPU compilers do well, and each has a
fast path here that computes the same values (tests check them against the reference):

* ``random``: ``jax.random``'s Threefry draws bit for bit, unrolled so XLA:CPU fuses them
  (its own CPU lowering is a loop that breaks fusion); falls back to ``jax.random``.
* ``conv``: strided and transposed convolutions and unpadded 1x1s as matrix products, and
  stride-1 convolutions with gradients written as canonical convolutions (XLA:CPU runs the
  gradients of these through a slow generic loop, stride-1 ones inside loops such as the
  train step's ``lax.scan``); falls back to ``lax.conv_general_dilated``.
* ``compile.jit_eval``: evaluation programs compiled with YNNPACK fusions kept for matrix
  products only; falls back to a plain ``jax.jit``.
* ``initialize``: ``model.init``'s values from one small program (the draws of all
  parameters of one shape batched, Threefry unrolled) instead of one Threefry loop per
  parameter, which XLA:CPU compiles one by one; falls back to ``jax.jit(model.init)``.

``compile.announced`` (on every backend) makes a long compilation say so while it runs.

The switch: on by default on the CPU backend and always off on every other backend
(``active()``); ``VAE_JAX_XLA_CPU=0`` in the environment, or ``set_enabled(False)`` before
anything is traced, turns every path off at once, so results can be compared with plain
JAX. The figures behind each path are in benchmarks/README.md.
"""

from __future__ import annotations

import os

import jax

_ENABLED = os.environ.get("VAE_JAX_XLA_CPU", "1").strip().lower() not in ("0", "false", "no")


def set_enabled(enabled: bool) -> None:
    """Turn the CPU fast paths on or off. It affects functions traced afterwards: a
    function JAX has already traced (and cached) keeps the path it was traced with."""
    global _ENABLED
    _ENABLED = bool(enabled)


def enabled() -> bool:
    """Whether the switch is on (``VAE_JAX_XLA_CPU`` / ``set_enabled``)."""
    return _ENABLED


def active() -> bool:
    """Whether the fast paths apply now: the switch is on and the default backend is the CPU."""
    return _ENABLED and jax.default_backend() == "cpu"
