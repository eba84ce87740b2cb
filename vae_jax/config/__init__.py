"""The config schema: every field with its default (``fields``), and the checks that make a
config whole and refuse a bad one before anything runs (``checks``).

``defaults()`` is the default experiment (``experiments/configs/default.py`` returns it);
``override(config, {"model.latent_dim": 10, ...})`` changes fields (a config's variants);
``resolve(config)`` fills what a config leaves out and validates it, raising a
``ConfigError`` that names the field, the value and the fix. A config is data: building a
run from it (model, loss, trainer, evaluation) is ``vae_jax.run.build``.
"""

from vae_jax.config.checks import (NONFINITE_POLICIES, OPTIMIZERS, SCHEDULES, SECTIONS,
                                   is_8bit, keeps_ema, likelihood, model_kwargs, resolve,
                                   validate, validate_temperature, with_defaults)
from vae_jax.config.fields import defaults, override
from vae_jax.errors import ConfigError

__all__ = ["ConfigError", "defaults", "override", "with_defaults", "validate", "resolve", "model_kwargs", "likelihood",
           "is_8bit", "keeps_ema", "validate_temperature", "SECTIONS", "OPTIMIZERS",
           "SCHEDULES", "NONFINITE_POLICIES"]
