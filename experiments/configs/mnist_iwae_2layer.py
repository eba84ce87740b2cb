"""Burda et al. (2015)'s two-stochastic-layer model on MNIST, trained as a VAE or an IWAE.

784 → 100-100 tanh → 100 latents (z_1) → 50-50 tanh → 50 latents (z_2); the generative chain
mirrors it (z_2 → 50-50 tanh → z_1 → 100-100 tanh → 784 Bernoulli logits). Markovian
bottom-up inference q(z_1|x) q(z_2|z_1), as in the paper; ``--config.model.inference=ladder``
gives the top-down (ladder) variant.

Objective knob: ``--config=experiments/configs/mnist_iwae_2layer.py:elbo`` (the VAE, L = k
samples) or ``:iwae`` (default), or ``--config.loss.name=elbo``; k is
``--config.loss.num_samples`` (Burda: 1, 5, 50).

MNIST comes from a folder holding the four IDX files: ``--config.data.dir=/path/to/mnist``.
Not replicated from the paper: its learning-rate schedule (3^i epochs at 10⁻³·10^(−i/7),
3280 epochs in all); here Adam at a constant 10⁻³ with ε = 10⁻⁴ as in the paper.
"""

from experiments.configs import default
from vae_jax.config import override

TWO_LAYERS = {
    "data.name": "mnist",
    "data.dir": "",                  # a folder with the four MNIST IDX files (.gz or not)
    "data.binarization": "dynamic",
    "model": {"name": "hvae", "inference": "markov",   # or "ladder"
              "latent_dims": (100, 50),                # bottom (z_1) to top (z_2)
              "hidden": ((100, 100), (50, 50)), "activation": "tanh",
              "likelihood": "bernoulli", "analytic_kl": True},
    "loss.num_samples": 5,           # k for the IWAE, L for the VAE
    "optim.eps": 1e-4,
    "train.batch_size": 20,          # Burda et al.'s minibatch size
    "train.num_epochs": 100,
    "eval.batch_size": 1000,
}

VARIANTS = {"elbo": {"loss.name": "elbo"}, "iwae": {"loss.name": "iwae"}}


def get_config(loss: str = "iwae"):
    if loss not in VARIANTS:
        raise ValueError(f"mnist_iwae_2layer.py:{loss}: the objective must be 'elbo' or 'iwae'.")
    return override(override(default.get_config(), TWO_LAYERS), VARIANTS[loss])
