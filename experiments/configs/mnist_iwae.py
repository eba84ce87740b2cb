"""Burda et al. (2015)'s 1-stochastic-layer IWAE on mnist (see burda.py).

Needs the four MNIST IDX files (.gz or not) in a folder: --config.data.dir=/path/to/mnist.
    python -m experiments.main --config=experiments/configs/mnist_iwae.py \
        --workdir=runs/mnist_iwae [--config.optim.burda_schedule_scale=1.0]
"""

from experiments.configs import burda


def get_config():
    return burda.get_config("mnist", "iwae")
