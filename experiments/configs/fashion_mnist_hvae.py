"""Hierarchical VAEs on Fashion-MNIST (figures: docs/results_hvae.md).

``--config=experiments/configs/fashion_mnist_hvae.py:2layer`` (default): Burda et al.'s
two-stochastic-layer model (``mnist_iwae_2layer.py``) on Fashion-MNIST.
``:1layer``: Burda's one-layer model, 784 → 200-200 tanh → 50 latents (a one-layer HVAE,
which is exactly the plain MLP VAE). ``:2layer-ladder``: the two-layer model with top-down
(ladder) inference. Objective: ``--config.loss.name=elbo|iwae``, ``--config.loss.num_samples``.
"""

from experiments.configs import mnist_iwae_2layer
from vae_jax.config import override

FASHION_MNIST = {
    "data.name": "fashion_mnist",
    "data.dir": "",                 # default: /usr/share/datasets/fashion-mnist
    "loss.num_samples": 1,
    "train.batch_size": 100,
    "train.num_epochs": 50,
}

VARIANTS = {
    "1layer": {"model.latent_dims": (50,), "model.hidden": ((200, 200),)},
    "2layer": {},
    "2layer-ladder": {"model.inference": "ladder"},
}


def get_config(variant: str = "2layer"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_hvae.py:{variant}: choose one of {tuple(VARIANTS)}.")
    return override(override(mnist_iwae_2layer.get_config("elbo"), FASHION_MNIST),
                    VARIANTS[variant])
