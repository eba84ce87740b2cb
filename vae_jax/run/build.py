"""What a run is built from its config: the model, its loss and the trainer (the run's keys
are ``root_keys(config.seed)``; the evaluation suite is ``evaluate.suite.from_config``). The
modes (``vae_jax.run.experiment``) and the scripts call these; the config itself is checked
first (``vae_jax.config.resolve``).
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import losses
from vae_jax.models import registry
from vae_jax.errors import ConfigError
from vae_jax.ops.initialize import initialize
from vae_jax.train import mixed_precision, optim
from vae_jax.train.trainer import Trainer, root_keys  # noqa: F401 (root_keys: public here too)


# ------------------------------------------------------------------------------ models

def build_model(config: ml_collections.ConfigDict, image_shape: Sequence[int]) -> nn.Module:
    """The registered model ``config.model.name`` for images [H, W, C] of ``image_shape``.
    A builder's ValueError (its check of a config.model field, naming it) is a ConfigError."""
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    try:
        return registry.get(config.model.name, image_shape=tuple(image_shape), **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def check_model_fits(model: nn.Module, image_shape, config_model_name: str) -> None:
    """Trace (not compile) model.init on [1, *image_shape]; a shape the model cannot take
    becomes a ConfigError naming the model, the data shape and the fix."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    try:
        jax.eval_shape(lambda k, x: initialize(model.init, k, x, k), key, x)  # trace kept
    except Exception as e:
        raise ConfigError(
            f"config.model.name={config_model_name!r} cannot take the data set's images of "
            f"shape {tuple(image_shape)} [H, W, C]: {type(e).__name__}: {e} Choose a model "
            "that fits (e.g. 'mlp' takes any shape; 'conv' needs sides divisible by 4) or "
            "resize the images.") from None


# ------------------------------------------------------------------------------ losses

def build_loss(config: ml_collections.ConfigDict, model: nn.Module) -> Callable:
    """``config.loss.name`` with ``model`` and the options it declares bound:
    ``loss_fn(params, x, key, *, beta) -> (loss, metrics)``."""
    objective = losses.objective(config.loss.name)
    return losses.bind(config.loss.name, model,
                       **{name: config.loss[name] for name in objective.options})


def beta_fn(config: ml_collections.ConfigDict) -> Callable:
    """step -> β of that step (``config.loss.beta`` after a linear warm-up)."""
    return functools.partial(losses.beta_schedule, beta=config.loss.beta,
                             warmup_steps=config.loss.warmup_steps)


# ----------------------------------------------------------------------------- trainer

def build_trainer(config: ml_collections.ConfigDict, model: nn.Module, mesh,
                  steps_per_epoch: int) -> Trainer:
    """The ``Trainer`` of ``config`` (objective, optimizer, β schedule, step options)."""
    return Trainer(
        model, mesh, loss_fn=train_loss(config, model),
        optimizer=optim.make_optimizer(config.optim, steps_per_epoch),
        beta_fn=beta_fn(config), binarization=config.data.binarization,
        ema_decay=config.train.ema_decay, batch_size=config.train.batch_size,
        steps_per_epoch=steps_per_epoch,
        skip_nonfinite=config.train.on_nonfinite == "skip",
        skip_grad_norm=config.optim.skip_grad_norm,
        matmul_precision=config.train.matmul_precision)


def train_loss(config: ml_collections.ConfigDict, model: nn.Module) -> Callable:
    """The train step's loss: ``build_loss`` computed in ``config.train.compute_dtype``.
    A model with a ``dtype`` field of its own (deep_hvae) is cloned with that dtype; any
    other has its linear layers cast (``mixed_precision.in_compute_dtype``). A model that
    scans runs of equal blocks (deep_hvae's ``scan_blocks``) is cloned without: its
    derivative is the unrolled blocks' anyway, and the unrolled model traces it directly
    rather than through the scan's derivative rule."""
    if getattr(model, "scan_blocks", False):
        model = model.clone(scan_blocks=False)
    dtype = config.train.compute_dtype
    if dtype != "float32" and "dtype" in getattr(model, "__dataclass_fields__", {}):
        return build_loss(config, model.clone(dtype=dtype))
    return mixed_precision.in_compute_dtype(build_loss(config, model), dtype)
