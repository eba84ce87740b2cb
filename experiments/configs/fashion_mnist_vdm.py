"""A variational diffusion model (``vae_jax/models/vdm/``) on 8-bit Fashion-MNIST
(``:8bit``, the default: the exact 256-way decoder, bits/dim) or binarized Fashion-MNIST
(``:binary``), and the latent diffusion model (``vae_jax/models/vdm/latent.py``: a VAE whose
prior is a VDM over its latent): ``:latent`` an MLP VAE with a 16-D latent, binarized;
``:latent8bit`` the conv VAE of ``fmnist_8bit_conv.py`` field for field (ResNet encoder and
decoder, 32-D latent, discretized logistic mixture, batch, optimizer, clipping, evaluation)
with the VDM prior in place of N(0, I), so the two differ only in the prior (bits/dim).
``:cifar10`` is the VDM at the paper's scale on 8-bit CIFAR-10 (tfds ``cifar10``, 32x32x3),
for accelerators: prepare the data once with ``tfds build cifar10
--file_format=array_record`` or add ``--config.data.download=True``.

    python -m experiments.main --config=experiments/configs/fashion_mnist_vdm.py \
        --workdir=runs/vdm

Continuous time (``timesteps=0``) with a learned linear schedule for the VDM; set
``--config.model.timesteps=T`` for the discrete-time bound, whose T-layer trajectories give
importance-sampled log p(x) in ``--mode=eval``. Figures: docs/results_diffusion.md.
"""

from experiments.configs import default, fmnist_8bit_conv
from vae_jax.config import override

VDM = {  # the pixel-space VDM on 8-bit Fashion-MNIST
    "model": {"name": "vdm", "schedule": "learned_linear", "channels": 32, "blocks": 2,
              "likelihood": "categorical256"},
    "data.binarization": "none",
    "train.batch_size": 64,
    "train.num_epochs": 10,
    "train.steps_per_call": 50,
    "optim.learning_rate": 2e-4,
    "optim.grad_clip_norm": 1.0,
    "eval.batch_size": 500,
    "eval.num_importance_samples": 0,
    "eval.iwae_k": 0,
}

# variant: (the config it starts from, its changes)
VARIANTS = {
    "8bit": (default.get_config, VDM),
    "binary": (default.get_config, VDM | {"model.likelihood": "bernoulli",
                                          "data.binarization": "dynamic"}),
    "latent": (default.get_config, {
        "model": {"name": "latent_vdm", "latent_dim": 16, "hidden": (500,),
                  "likelihood": "bernoulli"},
        "train.num_epochs": 10,
        "eval.num_importance_samples": 0,
        "eval.iwae_k": 0,
    }),
    # The conv VAE's config itself, only its prior swapped: the same ResNet encoder and
    # decoder (backbone "resnet" reads its channels, blocks, activation), the VDM prior's
    # settings the latent VDM's defaults (continuous time: the ELBO, no log p(x)).
    "latent8bit": (fmnist_8bit_conv.get_config, {"model.name": "latent_vdm",
                                                 "model.backbone": "resnet"}),
    # Kingma et al. (2021), CIFAR-10: a deep full-resolution ResNet ε-net, Fourier
    # features, learned linear schedule from (−13.3, 5), batch 128, Adam 2e-4, EMA.
    "cifar10": (default.get_config, VDM | {
        "data.name": "cifar10",
        "model.channels": 128,
        "model.blocks": 8,
        "model.embed_dim": 128,
        "train.batch_size": 128,
        "train.num_epochs": 1000,
        "train.steps_per_call": 100,
        "train.ema_decay": 0.9999,
        "eval.use_ema": True,
        "eval.batch_size": 200,
    }),
}


def get_config(variant: str = "8bit"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_vdm.py:{variant}: choose one of {tuple(VARIANTS)}.")
    base, changes = VARIANTS[variant]
    return override(base(), changes)
