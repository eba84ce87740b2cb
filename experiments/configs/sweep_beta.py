"""A β × latent-size sweep of the default MLP VAE on Fashion-MNIST (experiments/sweep.py).

β ∈ {0.5, 1, 2, 4} trades reconstruction for prior matching (β-VAE, Higgins et al. 2017);
the test ELBO is always evaluated at β = 1, so it shows what each β costs in likelihood.
"""

import ml_collections

from experiments.configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.train.num_epochs = 5
    config.sweep = ml_collections.ConfigDict({
        "loss": {"beta": (0.5, 1.0, 2.0, 4.0)},
        "model": {"latent_dim": (2, 20, 50)},
    })
    return config
