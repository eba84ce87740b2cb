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

import ml_collections

from experiments.configs import default


def get_config(loss: str = "iwae"):
    if loss not in ("elbo", "iwae"):
        raise ValueError(f"mnist_iwae_2layer.py:{loss}: the objective must be 'elbo' or 'iwae'.")
    config = default.get_config()
    config.data.name = "mnist"
    config.data.dir = ""                 # a folder with the four MNIST IDX files (.gz or not)
    config.data.binarization = "dynamic"

    config.model = ml_collections.ConfigDict()
    config.model.name = "hvae"
    config.model.inference = "markov"    # or "ladder"
    config.model.latent_dims = (100, 50)  # bottom (z_1) to top (z_2)
    config.model.hidden = ((100, 100), (50, 50))
    config.model.activation = "tanh"
    config.model.likelihood = "bernoulli"
    config.model.analytic_kl = True

    config.loss.name = loss
    config.loss.num_samples = 5          # k for the IWAE, L for the VAE

    config.optim.eps = 1e-4
    config.train.batch_size = 20         # Burda et al.'s minibatch size
    config.train.num_epochs = 100
    config.eval.batch_size = 1000
    return config
