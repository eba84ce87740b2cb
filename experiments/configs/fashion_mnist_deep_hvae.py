"""A deep top-down ResNet VAE (VDVAE / NVAE line, ``vae_jax/models/deep_hvae/``).

    python -m experiments.main --config=experiments/configs/fashion_mnist_deep_hvae.py \
        --workdir=runs/deep_hvae

Variants (``fashion_mnist_deep_hvae.py:<variant>``), each a table of changes to the base
below:

* ``binary`` (default): binarized Fashion-MNIST. Resolutions 28 → 14 → 7 → 1, 2 encoder
  blocks per resolution, 16 top-down blocks (each a stochastic layer), width 64, 8 latent
  channels, VDVAE's scaled residual initialisation and bounded log-stds; batch 32, Adam
  2e-4, 10 epochs.
* ``8bit``: 8-bit Fashion-MNIST with a discretized-logistic mixture (bits/dim).
* ``mnist``: the binarized network on MNIST from a folder holding the four IDX files
  (``--config.data.dir=/path/to/mnist``).
* ``cpu``: a network sized for one CPU core (widths 16 → 128, a half-width bottleneck, 10
  stochastic layers above one deterministic block at 28x28) and a run planned to end:
  batch 32, Adam 2e-3 decayed to 0 by a cosine over 20 epochs.
* ``cpu_patch``: the ``cpu`` recipe with the networks on 2x2 patches (no 28x28 stage; 64 →
  96 → 128 at 14, 7, 1; 11 stochastic layers), 13 epochs. Its trained parameters are in
  ``pretrained/`` (docs/results_budget.md).
* ``cifar10``: 8-bit CIFAR-10 (tfds ``cifar10``, 32x32x3) for accelerators: VDVAE's layout
  (resolutions 32 → 16 → 8 → 4 → 1, a 10-component logistic mixture, gradient skipping,
  EMA) at a reduced width and depth (128 channels, 20 stochastic layers; VDVAE's CIFAR-10
  model has 384 channels and 45 layers). Prepare the data once with ``tfds build cifar10
  --file_format=array_record`` or add ``--config.data.download=True``.

Evaluation: every draw is a pass through the network, so the ELBO uses 100 images x 10
draws per pass and the active units 10 draws. log p(x) at k = 1000 is left to
``--mode=eval`` for the ``cpu`` variants (8.3 hours of one core for the 10 000 test images
of ``cpu_patch``, docs/results_budget.md) and ``cifar10``.
"""

from experiments.configs import default
from vae_jax.config import override

STEPS_PER_EPOCH = 60_000 // 32  # Fashion-MNIST's training set at batch 32

BASE = {
    "model": {"name": "deep_hvae", "resolutions": (28, 14, 7, 1), "encoder_blocks": 2,
              "decoder_blocks": (2, 6, 6, 2), "widths": 64, "latent_channels": 8,
              "log_std_bound": 5.0, "residual_init": "scaled", "likelihood": "bernoulli"},
    "train.batch_size": 32,
    "train.num_epochs": 10,
    "train.steps_per_call": 50,
    "train.eval_every_steps": 5 * STEPS_PER_EPOCH,
    "optim.learning_rate": 2e-4,
    "optim.grad_clip_norm": 200.0,
    "eval.batch_size": 100,
    "eval.num_importance_samples": 1000,
    "eval.iwae_k": 0,
    "eval.chunk": 10,
    "eval.au_samples": 10,
}

# One CPU core: widths grow as the maps shrink, with a half-width bottleneck (a quarter-width
# one leaves 8-channel convolutions, which XLA:CPU runs several times slower per FLOP than
# 32-channel ones). The cosine decay follows --config.train.num_epochs. log p(x): measured
# afterwards with --mode=eval (scripts/deep_hvae_cpu_2h.sh runs it in resumable chunks).
CPU = {
    "model.resolutions": (28, 14, 7, 1),
    "model.encoder_blocks": (1, 1, 2, 2),
    "model.decoder_blocks": (1, 2, 4, 4),
    "model.widths": (16, 32, 64, 128),
    "model.latent_channels": (1, 2, 4, 16),
    "model.bottleneck": 0.5,
    "model.stochastic": (True,) * 10 + (False,),
    "train.num_epochs": 20,
    "train.on_nonfinite": "skip",   # a NaN step is dropped and counted, not fatal
    "optim.learning_rate": 2e-3,
    "optim.schedule": "cosine",
    "optim.decay_steps": lambda c: c.train.get_ref("num_epochs") * STEPS_PER_EPOCH,
    "eval.num_importance_samples": 0,
}

VARIANTS = {
    "binary": {},
    "8bit": {"data.binarization": "none", "model.likelihood": "discretized_logistic_mix5"},
    "mnist": {"data.name": "mnist"},
    "cpu": CPU,
    # 2x2 patches in and out: the 28x28 stage's 8-channel convolutions (the slowest per
    # FLOP on a CPU) go, and the widths that remain run several times faster per FLOP.
    "cpu_patch": CPU | {
        "model.patch_size": 2,
        "model.resolutions": (14, 7, 1),
        "model.encoder_blocks": (2, 2, 2),
        "model.decoder_blocks": (3, 5, 4),
        "model.widths": (64, 96, 128),
        "model.latent_channels": (2, 4, 16),
        "model.stochastic": (True,) * 11 + (False,),
        "train.num_epochs": 13,
    },
    "cifar10": {
        "data.name": "cifar10",
        "data.binarization": "none",
        "model.likelihood": "discretized_logistic_mix10",
        "model.resolutions": (32, 16, 8, 4, 1),
        "model.encoder_blocks": 3,
        "model.decoder_blocks": (2, 4, 6, 6, 2),
        "model.widths": 128,
        "model.latent_channels": 16,
        "train.num_epochs": 200,
        "train.ema_decay": 0.9998,
        "train.eval_every_steps": 0,        # every epoch (an accelerator's)
        "eval.use_ema": True,
        "eval.batch_size": 200,
        "eval.num_importance_samples": 0,   # log p(x): --mode=eval with k chosen there
        "optim.skip_grad_norm": 400.0,      # VDVAE's CIFAR-10 threshold
    },
}


def get_config(variant: str = "binary"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_deep_hvae.py:{variant}: choose one of "
                         f"{tuple(VARIANTS)}.")
    return override(override(default.get_config(), BASE), VARIANTS[variant])
