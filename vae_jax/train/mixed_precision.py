"""bf16 compute for any model's loss: ``in_compute_dtype(loss_fn, "bfloat16")``.

What runs in bf16: every Flax linear layer (``Dense``, ``DenseGeneral``, ``Conv``,
``ConvTranspose``, ``vae_jax.models.layers.ConvTranspose``) that has no ``dtype`` of its
own: its inputs, kernel and bias are cast to bf16 (a Flax method interceptor) and its output
comes back float32, like ``torch.autocast``. Everything else (activations, noise,
normalisation, every log-probability and KL, the loss) stays float32, so the random streams
are those of the float32 step. The parameters, their gradients (the cast's transpose casts
back), the optimizer state and the EMA stay float32. A model with its own ``dtype`` field
(deep_hvae) computes in that dtype instead (``config.build_trainer`` sets it).

"float32" returns ``loss_fn`` itself: the float32 step is today's, bit for bit.
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax.models import layers
from vae_jax.precision import COMPUTE_DTYPES

_LINEAR = (nn.Dense, nn.DenseGeneral, nn.Conv, nn.ConvTranspose, layers.ConvTranspose)


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if isinstance(a, jax.Array)
                        and jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _autocast(dtype):
    def interceptor(next_fun, args, kwargs, context):
        module = context.module
        if (context.method_name != "__call__" or not isinstance(module, _LINEAR)
                or getattr(module, "dtype", None) is not None):
            return next_fun(*args, **kwargs)
        return _cast(next_fun(*_cast(args, dtype), **_cast(kwargs, dtype)), jnp.float32)
    return interceptor


def cast_layer_params(params, dtype):
    """Every ``kernel`` and its sibling ``bias`` (a linear layer's parameters) cast to
    ``dtype``; other parameters (norm scales, learned constants, schedules) unchanged."""
    if isinstance(params, dict) or hasattr(params, "items"):
        items = dict(params.items())
        if "kernel" in items and not hasattr(items["kernel"], "items"):
            return {k: (v.astype(dtype) if k in ("kernel", "bias") else v)
                    for k, v in items.items()}
        return {k: cast_layer_params(v, dtype) for k, v in items.items()}
    return params


def in_compute_dtype(loss_fn: Callable, dtype: str) -> Callable:
    """``loss_fn(params, x, key, **kw) -> (loss, metrics)`` with its linear layers computed
    in ``dtype`` ("float32": ``loss_fn`` itself); loss and metrics returned float32."""
    if dtype not in COMPUTE_DTYPES:
        raise ValueError(f"Unknown compute dtype {dtype!r}; valid: {list(COMPUTE_DTYPES)}.")
    if dtype == "float32":
        return loss_fn
    dt = jnp.dtype(dtype)

    @functools.wraps(loss_fn)
    def wrapped(params, x, key, **kwargs):
        with nn.intercept_methods(_autocast(dt)):
            loss, metrics = loss_fn(cast_layer_params(params, dt), x, key, **kwargs)
        return _cast(loss, jnp.float32), _cast(metrics, jnp.float32)
    return wrapped
