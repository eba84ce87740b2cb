"""The default experiment: the classic MLP VAE on Fashion-MNIST.

784-500-(2x20) / 20-500-784, ReLU, Bernoulli likelihood, dynamic binarization, batch 128,
Adam 1e-3, 30 epochs: the setup of the Flax VAE example and PyTorch's, so figures compare.
Every field, with its default and a comment, is in ``vae_jax.config.defaults`` (the one
source of defaults); the other configs start from this one and change what they need.
"""

import ml_collections

from vae_jax import config as config_lib


def get_config() -> ml_collections.ConfigDict:
    return config_lib.defaults()
