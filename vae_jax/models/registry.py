"""The model registry: ``@register("name")`` on a builder, ``get(name, **kwargs)`` to build.

A builder is a function of keyword arguments only: ``image_shape`` always, the rest from
``config.model`` (its defaults are the config's defaults for that model). Each family's
module registers its own builders; importing ``vae_jax.models`` imports every family, and
``import vae_jax`` (which any ``vae_jax.*`` import runs first) imports ``vae_jax.models``,
so the registry is full before anything looks a name up. This module imports no family, so
the config checks read the registry without importing the models above them.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Decorator: register the builder it wraps as model ``name`` (``config.model.name``)."""
    def wrap(fn):
        if name in _REGISTRY:
            raise ValueError(f"Model {name!r} is registered twice.")
        _REGISTRY[name] = fn
        return fn
    return wrap


def unregister(name: str) -> None:
    """Remove model ``name`` (tests and notebooks that register a model for a while)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    """The registered model names, sorted."""
    return sorted(_REGISTRY)


def builder(name: str) -> Callable[..., nn.Module]:
    """The registered builder ``name``: keyword arguments ``image_shape`` and config.model's."""
    if name not in _REGISTRY:
        raise ValueError(f"Unknown model {name!r}; valid: {names()}. "
                         "Set config.model.name to one of them.")
    return _REGISTRY[name]


def get(name: str, **kwargs) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments from ``config.model``."""
    return builder(name)(**kwargs)
