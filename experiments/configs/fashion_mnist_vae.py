"""Burda et al. (2015)'s 1-stochastic-layer VAE on fashion_mnist (see burda.py).

    python -m experiments.main --config=experiments/configs/fashion_mnist_vae.py \
        --workdir=runs/fashion_mnist_vae [--config.optim.burda_schedule_scale=1.0]
"""

from experiments.configs import burda


def get_config():
    return burda.get_config("fashion_mnist", "elbo")
