"""Hierarchical VAEs on Fashion-MNIST (the evidence in docs/results_hvae.md).

``--config=experiments/configs/fashion_mnist_hvae.py:2layer`` (default): Burda et al.'s
two-stochastic-layer model (``mnist_iwae_2layer.py``) on Fashion-MNIST.
``:1layer``: Burda's one-layer model, 784 → 200-200 tanh → 50 latents (a one-layer HVAE,
which is exactly the plain MLP VAE). ``:2layer-ladder``: the two-layer model with top-down
(ladder) inference. Objective: ``--config.loss.name=elbo|iwae``, ``--config.loss.num_samples``.
"""

from experiments.configs import mnist_iwae_2layer

VARIANTS = ("1layer", "2layer", "2layer-ladder")


def get_config(variant: str = "2layer"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_hvae.py:{variant}: choose one of {VARIANTS}.")
    config = mnist_iwae_2layer.get_config("elbo")
    config.data.name = "fashion_mnist"
    config.data.dir = ""                 # default: /usr/share/datasets/fashion-mnist
    config.loss.num_samples = 1
    config.train.batch_size = 100
    config.train.num_epochs = 50
    if variant == "1layer":
        config.model.latent_dims = (50,)
        config.model.hidden = ((200, 200),)
    elif variant == "2layer-ladder":
        config.model.inference = "ladder"
    return config
