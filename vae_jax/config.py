"""Configs: the one source of defaults, validation, and what is built from a config.

* ``defaults()``: every field of every section with its default (``experiments/configs/
  default.py`` is exactly these); ``with_defaults(config)`` fills what a config leaves out
  and refuses fields no code reads. The ``model`` section is the registered builder's
  keyword arguments, so its defaults are that builder's (``model_kwargs``).
* ``validate(config)``: every check that needs no data, raising ``ConfigError`` whose
  message names the field, the value and the fix. ``resolve`` = ``with_defaults`` +
  ``validate``.
* ``build_model``, ``check_model_fits``, ``build_loss``, ``beta_fn``, ``root_keys``,
  ``build_trainer``, ``build_suite``: what the modes build from a config.
"""

from __future__ import annotations

import copy
import functools
import inspect
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from vae_jax import (data, distributions, losses, mixed_precision, models, optim, sampling,
                     suite, train)
from vae_jax.defaults import defaults
from vae_jax.errors import ConfigError
from vae_jax.precision import PRECISIONS

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "burda")
NONFINITE_POLICIES = ("raise", "skip")
SECTIONS = ("data", "model", "loss", "optim", "train", "eval", "sample")
OTHER_TOP_LEVEL = ("seed", "sweep")  # ``sweep`` is read by vae_jax.sweep


def with_defaults(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with every missing field of every section (but ``model``) set
    to its default. A field that no code reads (a typo in a config file) is a ConfigError."""
    ref = defaults()
    out = copy.deepcopy(config)
    with out.unlocked():
        for name in list(out.keys()):
            if name not in SECTIONS and name not in OTHER_TOP_LEVEL:
                raise ConfigError(f"config.{name} is not a config field; valid: "
                                  f"{sorted(SECTIONS + OTHER_TOP_LEVEL)}.")
        if "seed" not in out:
            out.seed = ref.seed
        for section in SECTIONS:
            if section not in out:
                out[section] = ml_collections.ConfigDict()
            if section == "model":
                continue
            unknown = sorted(set(out[section].keys()) - set(ref[section].keys()))
            if unknown:
                raise ConfigError(f"Unknown config.{section} fields {unknown}; valid: "
                                  f"{sorted(ref[section].keys())}. Check the spelling.")
            for field in ref[section].keys():
                if field not in out[section]:
                    out[section][field] = ref[section][field]
        if "name" not in out.model:
            out.model.name = ref.model.name
    return out


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``validate(with_defaults(config))``: the config every mode runs from."""
    config = with_defaults(config)
    validate(config)
    return config


# ------------------------------------------------------------------------------ models

def _builder_defaults(name: str) -> dict:
    params = inspect.signature(models.builder(name)).parameters
    return {k: p.default for k, p in params.items()
            if k != "image_shape" and p.kind == inspect.Parameter.KEYWORD_ONLY}


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    """The model builder's keyword arguments: its own defaults overridden by config.model."""
    kwargs = _builder_defaults(config.model.name)
    kwargs.update({k: v for k, v in config.model.to_dict().items() if k != "name"})
    return kwargs


def build_model(config: ml_collections.ConfigDict, image_shape: Sequence[int]) -> nn.Module:
    """The registered model ``config.model.name`` for images [H, W, C] of ``image_shape``.
    A builder's ValueError (its check of a config.model field, naming it) is a ConfigError."""
    kwargs = {k: v for k, v in config.model.to_dict().items() if k != "name"}
    try:
        return models.get(config.model.name, image_shape=tuple(image_shape), **kwargs)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def likelihood(config: ml_collections.ConfigDict) -> str:
    """The pixel likelihood the model uses (its builder's default unless set)."""
    return model_kwargs(config).get("likelihood", "bernoulli")


def is_8bit(config: ml_collections.ConfigDict) -> bool:
    """Whether the likelihood is a mass over 8-bit pixel values (bits/dim are reported)."""
    return likelihood(config) in distributions.DISCRETE_8BIT


def check_model_fits(model: nn.Module, image_shape, config_model_name: str) -> None:
    """Trace (not compile) model.init on [1, *image_shape]; a shape the model cannot take
    becomes a ConfigError naming the model, the data shape and the fix."""
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    try:
        jax.eval_shape(lambda k, x: model.init(k, x, k), key, x)
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


def keeps_ema(config: ml_collections.ConfigDict) -> bool:
    """Whether the run keeps an EMA of its parameters (``config.train.ema_decay > 0``)."""
    return config.train.ema_decay > 0


def root_keys(seed: int) -> dict[str, jax.Array]:
    """The base key of ``seed`` split once by purpose: init, train, order (data), eval."""
    init, train, order, evaluation = jax.random.split(jax.random.key(seed), 4)
    return {"init": init, "train": train, "order": order, "eval": evaluation}


# -------------------------------------------------------------------------- validation

def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flat(value) -> tuple:
    """Hidden sizes may be nested, one tuple per layer (hvae)."""
    if isinstance(value, (tuple, list)):
        return tuple(v for item in value for v in (_flat(item) or (None,)))
    return (value,)


def validate(config: ml_collections.ConfigDict) -> None:
    """Fail fast, before any data is loaded or compiled: a ConfigError naming the field,
    the value and the fix. ``config`` has its defaults (``with_defaults``)."""
    err = ConfigError
    if config.model.name not in models.names():
        raise err(f"Unknown model {config.model.name!r} (config.model.name); valid: "
                  f"{models.names()}.")
    if config.loss.name not in losses.names():
        raise err(f"Unknown loss {config.loss.name!r} (config.loss.name); valid: "
                  f"{losses.names()}.")
    if config.data.binarization not in data.BINARIZATIONS:
        raise err(f"Unknown binarization {config.data.binarization!r} "
                  f"(config.data.binarization); valid: {list(data.BINARIZATIONS)}.")
    if config.data.pipeline not in data.PIPELINES:
        raise err(f"config.data.pipeline={config.data.pipeline!r}; valid: "
                  f"{list(data.PIPELINES)} ('auto' picks 'device' when the training set "
                  "fits config.data.device_budget_mb per device, else 'stream').")
    if not _number(config.data.device_budget_mb) or config.data.device_budget_mb < 0:
        raise err(f"config.data.device_budget_mb={config.data.device_budget_mb!r} must be "
                  ">= 0 (MB per device; 0 = the backend's default).")
    if (isinstance(config.data.prefetch, bool) or not isinstance(config.data.prefetch, int)
            or config.data.prefetch < 1):
        raise err(f"config.data.prefetch={config.data.prefetch!r} must be a positive "
                  "integer (calls' batches read ahead on the streaming pipeline).")
    if (isinstance(config.data.num_workers, bool)
            or not isinstance(config.data.num_workers, int) or config.data.num_workers < -1):
        raise err(f"config.data.num_workers={config.data.num_workers!r} must be an integer "
                  ">= 0 (grain's threads reading and decoding the streamed batches; 0 reads "
                  "on the stream's own thread) or -1 for the backend's default.")
    if not isinstance(config.data.name, str) or not config.data.name:
        raise err(f"config.data.name={config.data.name!r}: give a data set name such as "
                  "'fashion_mnist', 'mnist', 'npz', 'image_folder' or a prepared tfds name.")
    valid_model = sorted(_builder_defaults(config.model.name))
    unknown = sorted(set(config.model.keys()) - set(valid_model) - {"name"})
    if unknown:
        raise err(f"config.model.{unknown[0]} is not an option of model "
                  f"{config.model.name!r}; its options: {valid_model}.")
    for path in ("train.batch_size", "model.latent_dim", "optim.learning_rate",
                 "loss.num_samples", "train.steps_per_call", "eval.batch_size"):
        section, name = path.split(".")
        if section == "model" and name not in config.model:
            continue  # hierarchical models size their layers with model.latent_dims
        value = config[section][name]
        if not _number(value) or value <= 0:
            raise err(f"config.{path}={value!r} must be a positive number.")
    if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
        raise err("Set config.train.num_epochs or config.train.num_steps to a positive "
                  f"number (got {config.train.num_epochs} and {config.train.num_steps}).")
    if not 0.0 <= config.train.ema_decay < 1.0:
        raise err(f"config.train.ema_decay={config.train.ema_decay} must be in [0, 1).")
    if config.eval.use_ema and not keeps_ema(config):
        raise err("config.eval.use_ema=True evaluates the moving average of the parameters, "
                  "but config.train.ema_decay=0 keeps none. Set config.train.ema_decay "
                  "(e.g. 0.999) to keep one, or config.eval.use_ema=False to evaluate the "
                  "parameters themselves.")
    _validate_model(config)
    _validate_loss(config)
    _validate_options(config)


def _validate_model(config: ml_collections.ConfigDict) -> None:
    lik = likelihood(config)
    if lik not in distributions.LIKELIHOODS:
        raise ConfigError(f"Unknown likelihood {lik!r} (config.model.likelihood); valid: "
                          f"{sorted(distributions.LIKELIHOODS)}.")
    if lik in distributions.DISCRETE_8BIT and config.data.binarization != "none":
        raise ConfigError(f"Likelihood {lik!r} models 8-bit pixels: set "
                          "config.data.binarization='none' (binarized pixels would use only "
                          "two of its 256 values).")
    for name in ("latent_dim", "latent_dims", "hidden", "channels"):
        if name not in config.model:
            continue
        value = config.model[name]
        values = _flat(value)
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                             for v in values):
            raise ConfigError(
                f"config.model.{name}={value!r}: sizes must be positive integers "
                f"(e.g. --config.model.{name}={'(32,)' if name != 'latent_dim' else 4}).")


def _validate_loss(config: ml_collections.ConfigDict) -> None:
    loss, ref = config.loss, defaults().loss
    objective = losses.objective(loss.name)
    if not objective.takes_beta and (loss.beta != 1.0 or loss.warmup_steps):
        raise ConfigError(
            f"The {loss.name.upper()} bound takes no beta or KL warm-up (config.loss.beta="
            f"{loss.beta}, config.loss.warmup_steps={loss.warmup_steps}): set "
            "config.loss.beta=1 and warmup_steps=0, or use loss 'elbo'.")
    for name in ("num_samples", "free_bits"):
        if name not in objective.options and loss[name] != ref[name]:
            raise ConfigError(
                f"config.loss.{name}={loss[name]!r} has no meaning for loss {loss.name!r} "
                f"(it reads {list(objective.options)}): set it back to {ref[name]!r}, or use "
                "a loss that reads it.")


def _validate_options(config: ml_collections.ConfigDict) -> None:
    err = ConfigError
    if config.optim.name not in OPTIMIZERS:
        raise err(f"Unknown optimizer {config.optim.name!r} (config.optim.name); valid: "
                  f"{list(OPTIMIZERS)}.")
    if config.optim.schedule not in SCHEDULES:
        raise err(f"Unknown schedule {config.optim.schedule!r} (config.optim.schedule); "
                  f"valid: {list(SCHEDULES)}.")
    for path in ("train.batch_size", "eval.batch_size", "train.steps_per_call",
                 "train.checkpoints_to_keep", "loss.num_samples", "eval.au_samples"):
        section, name = path.split(".")
        value = config[section][name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise err(f"config.{path}={value!r} must be a positive integer.")
    for path in ("optim.grad_clip_norm", "optim.skip_grad_norm", "train.checkpoint_every_steps",
                 "train.eval_every_steps", "train.num_steps", "train.num_epochs",
                 "loss.warmup_steps", "loss.free_bits", "eval.ll_batch_size",
                 "eval.num_test_images", "eval.iwae_k", "eval.num_importance_samples"):
        section, name = path.split(".")
        value = config[section][name]
        if not _number(value) or value < 0:
            raise err(f"config.{path}={value!r} must be >= 0 (0 turns it off / means the "
                      "default).")
    for path in ("train.matmul_precision", "eval.matmul_precision"):
        section, name = path.split(".")
        value = config[section][name]
        if value is not None and value not in PRECISIONS:
            raise err(f"config.{path}={value!r}; valid: {list(PRECISIONS)} "
                      "('highest' computes float32 products on every backend; 'default' "
                      "lets GPUs use TF32).")
    if config.train.compute_dtype not in mixed_precision.COMPUTE_DTYPES:
        raise err(f"config.train.compute_dtype={config.train.compute_dtype!r}; valid: "
                  f"{list(mixed_precision.COMPUTE_DTYPES)} (parameters, optimizer state and "
                  "reported figures stay float32 either way).")
    if config.train.on_nonfinite not in NONFINITE_POLICIES:
        raise err(f"config.train.on_nonfinite={config.train.on_nonfinite!r}; valid: "
                  f"{list(NONFINITE_POLICIES)} ('raise' stops at the first NaN/Inf keeping "
                  "the last good checkpoint, 'skip' discards such updates and counts them).")
    if not isinstance(config.train.async_checkpoint, bool):
        raise err(f"config.train.async_checkpoint={config.train.async_checkpoint!r} must be "
                  "True (write checkpoints in the background) or False (wait for each).")
    sampling.validate_temperature(config.sample.temperature)
    ll_batch = config.eval.ll_batch_size or config.eval.batch_size
    # The ELBO's batch size fixes which binarization each image gets; a different batching
    # for log p(x) would binarize the test set differently.
    if config.data.binarization == "dynamic" and ll_batch != config.eval.batch_size:
        raise err(f"config.eval.ll_batch_size={config.eval.ll_batch_size} differs from "
                  f"config.eval.batch_size={config.eval.batch_size}: with dynamic "
                  "binarization they must be equal (or ll_batch_size 0) so every figure sees "
                  "the same binarized test set.")


# ----------------------------------------------------------------------------- trainer

def build_trainer(config: ml_collections.ConfigDict, model: nn.Module, mesh,
                  steps_per_epoch: int) -> train.Trainer:
    """The ``train.Trainer`` of ``config`` (objective, optimizer, β schedule, step options)."""
    return train.Trainer(
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
    other has its linear layers cast (``mixed_precision.in_compute_dtype``)."""
    dtype = config.train.compute_dtype
    if dtype != "float32" and "dtype" in getattr(model, "__dataclass_fields__", {}):
        return build_loss(config, model.clone(dtype=dtype))
    return mixed_precision.in_compute_dtype(build_loss(config, model), dtype)


def build_suite(config: ml_collections.ConfigDict, model: nn.Module, mesh) -> suite.Suite:
    """The evaluation ``suite.Suite`` of ``config.eval`` for ``model``."""
    ev = config.eval
    return suite.Suite(model, mesh, binarization=config.data.binarization,
                       batch_size=ev.batch_size, num_samples=ev.num_samples,
                       precision=ev.matmul_precision, iwae_k=ev.iwae_k,
                       num_importance_samples=ev.num_importance_samples, chunk=ev.chunk,
                       ll_batch_size=ev.ll_batch_size, au_samples=ev.au_samples,
                       bits_per_dim=is_8bit(config))
