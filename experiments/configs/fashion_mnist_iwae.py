"""Burda et al. (2015)'s 1-stochastic-layer IWAE on fashion_mnist (see burda.py).

    python -m experiments.main --config=experiments/configs/fashion_mnist_iwae.py \
        --workdir=runs/fashion_mnist_iwae [--config.optim.burda_schedule_scale=1.0]
"""

from experiments.configs import burda


def get_config():
    return burda.get_config("fashion_mnist", "iwae")
