"""A variational diffusion model (``vae_jax/models/vdm.py``) on 8-bit Fashion-MNIST
(``:8bit``, the default: the exact 256-way decoder, bits/dim) or binarized Fashion-MNIST
(``:binary``), and the latent diffusion model (``vae_jax/models/latent_vdm.py``: a VAE whose
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
importance-sampled log p(x) in ``--mode=eval``. A starting point: no figure is claimed yet.
"""

from experiments.configs import default, fmnist_8bit_conv

VARIANTS = ("8bit", "binary", "latent", "latent8bit", "cifar10")


def get_config(variant: str = "8bit"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_vdm.py:{variant}: choose one of {VARIANTS}.")
    if variant == "latent8bit":
        # The conv VAE's config itself, only its prior swapped: the same ResNet encoder and
        # decoder (backbone "resnet" reads its channels, blocks, activation), the VDM prior's
        # settings the latent VDM's defaults (continuous time: the ELBO, no log p(x)).
        config = fmnist_8bit_conv.get_config()
        config.model.name = "latent_vdm"
        config.model.backbone = "resnet"
        return config
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
        eight_bit = variant in ("8bit", "cifar10")
        config.model.likelihood = "categorical256" if eight_bit else "bernoulli"
        config.data.binarization = "none" if eight_bit else "dynamic"
        config.train.batch_size = 64
        config.train.steps_per_call = 50
        config.optim.learning_rate = 2e-4
        config.optim.grad_clip_norm = 1.0
        config.eval.batch_size = 500
    if variant == "cifar10":
        # Kingma et al. (2021), CIFAR-10: a deep full-resolution ResNet ε-net, Fourier
        # features, learned linear schedule from (−13.3, 5), batch 128, Adam 2e-4, EMA.
        config.data.name = "cifar10"
        config.model.channels = 128
        config.model.blocks = 8
        config.model.embed_dim = 128
        config.train.batch_size = 128
        config.train.num_epochs = 1000
        config.train.steps_per_call = 100
        config.train.ema_decay = 0.9999
        config.eval.use_ema = True
        config.eval.batch_size = 200
    else:
        config.train.num_epochs = 10
    config.eval.num_importance_samples = 0
    config.eval.iwae_k = 0
    return config
