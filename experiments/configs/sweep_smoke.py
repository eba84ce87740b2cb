"""A two-point sweep of the smoke config, for tests: β ∈ {0.5, 2}."""

import ml_collections

from experiments.configs import smoke


def get_config() -> ml_collections.ConfigDict:
    config = smoke.get_config()
    config.sweep = ml_collections.ConfigDict({"loss": {"beta": (0.5, 2.0)}})
    return config
