"""Matrix-product precision: ``at_precision`` traces a function under a named setting.

Reported figures use float32 products on every backend (``EVAL_PRECISION``): JAX's own
default lets GPUs use TF32 (10-bit mantissas) for float32 dots. The train step takes
``config.train.matmul_precision``, the evaluation ``config.eval.matmul_precision``.
"""

from __future__ import annotations

import functools
from typing import Callable, Optional

import jax

EVAL_PRECISION = "highest"
PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32")
# The train step's compute dtype (``config.train.compute_dtype``; ``train.mixed_precision``).
COMPUTE_DTYPES = ("float32", "bfloat16")


def at_precision(fn: Callable, precision: Optional[str]) -> Callable:
    """``fn`` traced under ``jax.default_matmul_precision(precision)`` (None: JAX's default).

    The precision is fixed into the traced dots, so wrap before ``jax.jit``. On the CPU
    every setting computes in float32; on GPUs "default" allows TF32 and "highest" does not.
    """
    if precision is None:
        return fn
    if precision not in PRECISIONS:
        raise ValueError(f"Unknown matmul precision {precision!r}; valid: {list(PRECISIONS)}.")

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(precision):
            return fn(*args, **kwargs)
    return wrapped
