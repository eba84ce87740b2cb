"""Burda et al. (2015)'s 1-stochastic-layer VAE on mnist (see burda.py).

Needs the four MNIST IDX files (.gz or not) in a folder: --config.data.dir=/path/to/mnist.
    python -m experiments.main --config=experiments/configs/mnist_vae.py \
        --workdir=runs/mnist_vae [--config.optim.burda_schedule_scale=1.0]
"""

from experiments.configs import burda


def get_config():
    return burda.get_config("mnist", "elbo")
