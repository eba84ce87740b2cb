"""``jit_eval``: evaluation programs compiled with XLA:CPU options that suit them.

XLA:CPU hands reductions with elementwise producers (the likelihood's Σ over pixels of
x·l − softplus(l)) to YNNPACK fusions, which run the test ELBO several times slower than
XLA's own loops (benchmarks/README.md); the train step is faster with them. Evaluation
functions therefore keep YNNPACK for matrix products only. Where the fast paths are not
active (another backend, or the ``vae_jax.ops`` switch off), or this XLA refuses the
option, ``jit_eval`` is a plain ``jax.jit``.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax
import numpy as np

from vae_jax import ops

CPU_EVAL_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT"}


@functools.lru_cache(maxsize=None)
def _accepted_options(active: bool) -> tuple:
    if not active:
        return ()
    try:  # an experimental XLA option: a version without it must not break evaluation
        jax.jit(lambda x: x + 1, compiler_options=CPU_EVAL_OPTIONS)(np.float32(0))
    except Exception:  # noqa: BLE001  (XLA reports an unknown option as a runtime error)
        return ()
    return tuple(CPU_EVAL_OPTIONS.items())


def eval_compiler_options() -> dict:
    """The options ``jit_eval`` compiles with here and now ({} where none apply)."""
    return dict(_accepted_options(ops.active()))


def jit_eval(fn: Callable) -> Callable:
    """``jax.jit(fn)`` for evaluation functions, compiled with ``eval_compiler_options()``
    when called from Python; traced inside another ``jit`` (where XLA takes no per-function
    options) it is a plain nested ``jax.jit``. ``.lower`` lowers the top-level version."""
    options = eval_compiler_options()
    plain = jax.jit(fn)
    if not options:
        return plain
    top = jax.jit(fn, compiler_options=options)

    @functools.wraps(fn)
    def call(*args, **kwargs):
        traced = any(isinstance(a, jax.core.Tracer) for a in jax.tree.leaves((args, kwargs)))
        return (plain if traced else top)(*args, **kwargs)

    call.lower = top.lower
    return call
