"""A deep top-down ResNet VAE (VDVAE / NVAE line, ``vae_jax/models/deep_hvae.py``) on
binarized Fashion-MNIST (``:binary``, the default) or 8-bit Fashion-MNIST with a
discretized-logistic mixture (``:8bit``, bits/dim).

    python -m experiments.main --config=experiments/configs/fashion_mnist_deep_hvae.py \
        --workdir=runs/deep_hvae

Resolutions 28 → 14 → 7 → 1, 2 encoder blocks per resolution, 16 top-down blocks (each a
stochastic layer), width 64, 8 latent channels, VDVAE's scaled residual initialisation and
bounded log-stds. A starting point, not a tuned recipe: no figure of it is claimed yet.
"""

from experiments.configs import default

VARIANTS = ("binary", "8bit")


def get_config(variant: str = "binary"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_deep_hvae.py:{variant}: choose one of {VARIANTS}.")
    config = default.get_config()
    config.model = config.model.__class__()
    config.model.name = "deep_hvae"
    config.model.resolutions = (28, 14, 7, 1)
    config.model.encoder_blocks = 2
    config.model.decoder_blocks = (2, 6, 6, 2)
    config.model.widths = 64
    config.model.latent_channels = 8
    config.model.log_std_bound = 5.0
    config.model.residual_init = "scaled"
    config.model.likelihood = "bernoulli"
    if variant == "8bit":
        config.data.binarization = "none"
        config.model.likelihood = "discretized_logistic_mix5"
    config.train.batch_size = 32
    config.train.num_epochs = 10
    config.train.steps_per_call = 50
    config.optim.learning_rate = 2e-4
    config.optim.grad_clip_norm = 200.0
    config.eval.batch_size = 500
    config.eval.num_importance_samples = 1000
    config.eval.iwae_k = 0
    config.eval.chunk = 10
    return config
