"""A variational diffusion model (``vae_jax/models/vdm.py``) on 8-bit Fashion-MNIST
(``:8bit``, the default: the exact 256-way decoder, bits/dim) or binarized Fashion-MNIST
(``:binary``), and the latent diffusion model (``:latent``: an MLP VAE whose prior is a VDM
over its 16-D latent, binarized).

    python -m experiments.main --config=experiments/configs/fashion_mnist_vdm.py \
        --workdir=runs/vdm

Continuous time (``timesteps=0``) with a learned linear schedule for the VDM; set
``--config.model.timesteps=T`` for the discrete-time bound, whose T-layer trajectories give
importance-sampled log p(x) in ``--mode=eval``. A starting point: no figure is claimed yet.
"""

from experiments.configs import default

VARIANTS = ("8bit", "binary", "latent")


def get_config(variant: str = "8bit"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_vdm.py:{variant}: choose one of {VARIANTS}.")
    config = default.get_config()
    config.model = config.model.__class__()
    if variant == "latent":
        config.model.name = "latent_vdm"
        config.model.latent_dim = 16
        config.model.hidden = (500,)
        config.model.likelihood = "bernoulli"
    else:
        config.model.name = "vdm"
        config.model.schedule = "learned_linear"
        config.model.channels = 32
        config.model.blocks = 2
        config.model.likelihood = "categorical256" if variant == "8bit" else "bernoulli"
        config.data.binarization = "none" if variant == "8bit" else "dynamic"
        config.train.batch_size = 64
        config.train.steps_per_call = 50
        config.optim.learning_rate = 2e-4
        config.optim.grad_clip_norm = 1.0
        config.eval.batch_size = 500
    config.train.num_epochs = 10
    config.eval.num_importance_samples = 0
    config.eval.iwae_k = 0
    return config
