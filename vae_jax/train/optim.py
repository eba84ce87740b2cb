"""Optimizers and learning-rate schedules from the ``config.optim`` section."""

from __future__ import annotations

from typing import Optional

import jax.numpy as jnp
import ml_collections
import optax


def burda_schedule(learning_rate: float, scale: float, steps_per_epoch: int,
                   num_stages: int = 8) -> optax.Schedule:
    """Burda et al. (2015)'s schedule: stage i = 0..7 runs 3^i · ``scale`` epochs at
    learning_rate · 10^(−i/7) (scale = 1: 3280 epochs in all), then stays at the last rate."""
    boundaries, total = [], 0.0
    for i in range(num_stages - 1):
        total += 3 ** i * scale
        boundaries.append(max(1, int(round(total * steps_per_epoch))))
    values = [learning_rate * 10 ** (-i / 7) for i in range(num_stages)]
    return lambda count: jnp.asarray(values)[jnp.searchsorted(
        jnp.asarray(boundaries), count, side="right")]


def learning_rate(optim: ml_collections.ConfigDict,
                  steps_per_epoch: Optional[int] = None) -> float | optax.Schedule:
    """``optim.learning_rate`` under ``optim.schedule``: "constant", "cosine" (over
    ``decay_steps``) or "burda" (needs ``steps_per_epoch``; scaled by
    ``burda_schedule_scale``)."""
    if optim.schedule == "cosine":
        return optax.cosine_decay_schedule(optim.learning_rate, optim.decay_steps)
    if optim.schedule == "burda":
        # Restoring only needs the optimizer state's structure, which the boundaries do not
        # change; training always passes the real steps_per_epoch.
        return burda_schedule(optim.learning_rate, optim.burda_schedule_scale,
                              steps_per_epoch or 1)
    return optim.learning_rate


def make_optimizer(optim: ml_collections.ConfigDict,
                   steps_per_epoch: Optional[int] = None) -> optax.GradientTransformation:
    """Adam (or AdamW) from the ``config.optim`` section, optionally after global-norm
    clipping (``grad_clip_norm`` > 0)."""
    lr = learning_rate(optim, steps_per_epoch)
    if optim.name == "adam":
        tx = optax.adam(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    elif optim.name == "adamw":
        tx = optax.adamw(lr, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                         weight_decay=optim.weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {optim.name!r} (config.optim.name); valid: "
                         "['adam', 'adamw'].")
    if optim.grad_clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(optim.grad_clip_norm), tx)
    return tx
