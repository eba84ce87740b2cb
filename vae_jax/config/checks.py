"""A config made whole and checked: defaults filled in, then every check that needs no data.

* ``with_defaults(config)`` fills what a config leaves out from ``fields.defaults()`` and
  refuses fields no code reads. The ``model`` section is the registered builder's keyword
  arguments, so its defaults are that builder's (``model_kwargs``).
* ``validate(config)``: every check that needs no data, raising ``ConfigError`` whose
  message names the field, the value and the fix. ``resolve`` = ``with_defaults`` +
  ``validate``.
* ``likelihood``, ``is_8bit``, ``keeps_ema``: what a config says, asked in one place.

What is built from a config (model, loss, trainer, evaluation suite, keys) is
``vae_jax.run.build``.
"""

from __future__ import annotations

import copy
import inspect
import numbers

import ml_collections

from vae_jax import distributions, losses
from vae_jax.data.batches import BINARIZATIONS
from vae_jax.data.pipeline import PIPELINES
from vae_jax.config.fields import defaults
from vae_jax.errors import ConfigError
from vae_jax.models import registry
from vae_jax.precision import COMPUTE_DTYPES, PRECISIONS

OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "burda")
NONFINITE_POLICIES = ("raise", "skip")
SECTIONS = ("data", "model", "loss", "optim", "train", "eval", "sample")
OTHER_TOP_LEVEL = ("seed", "sweep")  # ``sweep`` is read by vae_jax.run.sweep


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
    params = inspect.signature(registry.builder(name)).parameters
    return {k: p.default for k, p in params.items()
            if k != "image_shape" and p.kind == inspect.Parameter.KEYWORD_ONLY}


def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    """The model builder's keyword arguments: its own defaults overridden by config.model."""
    kwargs = _builder_defaults(config.model.name)
    kwargs.update({k: v for k, v in config.model.to_dict().items() if k != "name"})
    return kwargs


def likelihood(config: ml_collections.ConfigDict) -> str:
    """The pixel likelihood the model uses (its builder's default unless set)."""
    return model_kwargs(config).get("likelihood", "bernoulli")


def is_8bit(config: ml_collections.ConfigDict) -> bool:
    """Whether the likelihood is a mass over 8-bit pixel values (bits/dim are reported)."""
    return likelihood(config) in distributions.DISCRETE_8BIT


def keeps_ema(config: ml_collections.ConfigDict) -> bool:
    """Whether the run keeps an EMA of its parameters (``config.train.ema_decay > 0``)."""
    return config.train.ema_decay > 0



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
    seed = config.seed
    if (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
            or not 0 <= seed < 2 ** 32):
        raise err(f"config.seed={seed!r} must be an integer in [0, 2**32) = [0, "
                  f"{2 ** 32 - 1}]: JAX's keys hold 32 bits, so a seed outside that range "
                  "would silently train the same run as another seed (2**32 + s as s, -1 "
                  f"as {2 ** 32 - 1}). Give a seed in that range, e.g. --config.seed=1.")
    if config.model.name not in registry.names():
        raise err(f"Unknown model {config.model.name!r} (config.model.name); valid: "
                  f"{registry.names()}.")
    if config.loss.name not in losses.names():
        raise err(f"Unknown loss {config.loss.name!r} (config.loss.name); valid: "
                  f"{losses.names()}.")
    if config.data.binarization not in BINARIZATIONS:
        raise err(f"Unknown binarization {config.data.binarization!r} "
                  f"(config.data.binarization); valid: {list(BINARIZATIONS)}.")
    if config.data.pipeline not in PIPELINES:
        raise err(f"config.data.pipeline={config.data.pipeline!r}; valid: "
                  f"{list(PIPELINES)} ('auto' picks 'device' when the training set "
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
    for path in ("train.batch_size", "train.steps_per_call", "train.checkpoints_to_keep",
                 "loss.num_samples"):
        section, name = path.split(".")
        value = config[section][name]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise err(f"config.{path}={value!r} must be a positive integer.")
    _validate_counts(config)
    for path in ("optim.grad_clip_norm", "optim.skip_grad_norm", "train.checkpoint_every_steps",
                 "train.eval_every_steps", "train.num_steps", "train.num_epochs",
                 "loss.warmup_steps", "loss.free_bits"):
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
    if config.train.compute_dtype not in COMPUTE_DTYPES:
        raise err(f"config.train.compute_dtype={config.train.compute_dtype!r}; valid: "
                  f"{list(COMPUTE_DTYPES)} (parameters, optimizer state and "
                  "reported figures stay float32 either way).")
    if config.train.on_nonfinite not in NONFINITE_POLICIES:
        raise err(f"config.train.on_nonfinite={config.train.on_nonfinite!r}; valid: "
                  f"{list(NONFINITE_POLICIES)} ('raise' stops at the first NaN/Inf keeping "
                  "the last good checkpoint, 'skip' discards such updates and counts them).")
    if not isinstance(config.train.async_checkpoint, bool):
        raise err(f"config.train.async_checkpoint={config.train.async_checkpoint!r} must be "
                  "True (write checkpoints in the background) or False (wait for each).")
    validate_temperature(config.sample.temperature)
    ll_batch = config.eval.ll_batch_size or config.eval.batch_size
    # The ELBO's batch size fixes which binarization each image gets; a different batching
    # for log p(x) would binarize the test set differently.
    if config.data.binarization == "dynamic" and ll_batch != config.eval.batch_size:
        raise err(f"config.eval.ll_batch_size={config.eval.ll_batch_size} differs from "
                  f"config.eval.batch_size={config.eval.batch_size}: with dynamic "
                  "binarization they must be equal (or ll_batch_size 0) so every figure sees "
                  "the same binarized test set.")


# Every size and count of the evaluation and the pictures: (field, smallest value, what it
# counts). Checked with the rest of the config, so that none fails after a long evaluation.
COUNTS = (
    ("eval.batch_size", 1, "test images per ELBO batch"),
    ("eval.num_samples", 1, "draws of z per image for the test ELBO"),
    ("eval.chunk", 1, "importance samples drawn per device call"),
    ("eval.au_samples", 1, "draws averaged for each posterior mean of the active units"),
    ("eval.ll_batch_size", 0, "test images per log p(x) batch; 0 = eval.batch_size"),
    ("eval.num_test_images", 0, "test images evaluated; 0 = all"),
    ("eval.iwae_k", 0, "samples of the IWAE bound; 0 skips it"),
    ("eval.num_importance_samples", 0, "samples of the log p(x) estimate; 0 skips it"),
    ("sample.num", 1, "prior samples and reconstructions drawn"),
    ("sample.num_interpolation", 2, "images on each interpolation path, both ends included"),
    ("sample.traversal_dims", 1, "latent dimensions traversed, one row each"),
    ("sample.traversal_steps", 2, "images in each traversal row"),
    ("sample.manifold_size", 1, "rows and columns of the 2-D latent manifold"),
    ("sample.scatter_points", 1, "test encodings in the 2-D latent scatter"),
)


def _validate_counts(config: ml_collections.ConfigDict) -> None:
    for path, least, what in COUNTS:
        section, name = path.split(".")
        value = config[section][name]
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
            kind = "a positive integer" if least == 1 else f"an integer >= {least}"
            raise ConfigError(f"config.{path}={value!r} must be {kind} ({what}).")
    extent = config.sample.traversal_extent
    if not _number(extent) or not extent > 0:
        raise ConfigError(f"config.sample.traversal_extent={extent!r} must be a number > 0 "
                          "(traversals span [-extent, extent] prior standard deviations).")
    pair = config.sample.pair
    if (not isinstance(pair, (tuple, list)) or len(pair) != 2
            or any(isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in pair)):
        raise ConfigError(f"config.sample.pair={pair!r} must be two test image indices >= 0, "
                          "e.g. --config.sample.pair='(0, 1)'.")


def validate_temperature(value) -> None:
    """``config.sample.temperature``: a number >= 0 or a non-empty tuple of them."""
    values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    if not values or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ConfigError(
            f"config.sample.temperature={value!r}: give a number >= 0 or, for a model with "
            "stochastic layers (deep_hvae), one per layer in top-down order, e.g. "
            "--config.sample.temperature=0.8 or '(1.0, 0.8, 0.6)'.")
