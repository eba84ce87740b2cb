"""A deep top-down ResNet VAE (VDVAE / NVAE line, ``vae_jax/models/deep_hvae.py``) on
binarized Fashion-MNIST (``:binary``, the default) or 8-bit Fashion-MNIST with a
discretized-logistic mixture (``:8bit``, bits/dim); ``:mnist`` is the binarized network on
MNIST from any folder holding the four IDX files (``--config.data.dir=/path/to/mnist``);
``:cpu`` the binarized data with a network sized for one CPU core (widths 16 → 128, 10
stochastic layers) and a run planned to end: batch 32, Adam 2e-3 decayed to 0 over 20
epochs (about 2 hours of one core; ``docs/results_budget.md``); ``:cpu_patch`` the same
data and recipe with the networks on 2×2 patches (``model.patch_size=2``: no 28×28 stage;
wider, 64 → 96 → 128 at 14, 7, 1, and 11 stochastic layers: 3.0 times ``:cpu``'s FLOPs a
step, XLA's count, in 1.33-1.55 times its time, the Trainer's 20-step calls on one core),
13 epochs (about 2 hours of one core); ``:cifar10`` an 8-bit CIFAR-10
model (tfds ``cifar10``, 32x32x3) for accelerators: prepare the data once with
``tfds build cifar10 --file_format=array_record`` or add ``--config.data.download=True``.

    python -m experiments.main --config=experiments/configs/fashion_mnist_deep_hvae.py \
        --workdir=runs/deep_hvae

Resolutions 28 → 14 → 7 → 1, 2 encoder blocks per resolution, 16 top-down blocks (each a
stochastic layer), width 64, 8 latent channels, VDVAE's scaled residual initialisation and
bounded log-stds. A starting point, not a tuned recipe: no figure of it is claimed yet.
The CIFAR-10 variant is VDVAE's layout (resolutions 32 → 16 → 8 → 4 → 1, a 10-component
logistic mixture, gradient skipping, EMA) at a reduced width and depth (128 channels, 20
stochastic layers; VDVAE's CIFAR-10 model has 384 channels and 45 layers).
"""

from experiments.configs import default

VARIANTS = ("binary", "8bit", "mnist", "cifar10", "cpu", "cpu_patch")


def get_config(variant: str = "binary"):
    if variant not in VARIANTS:
        raise ValueError(f"fashion_mnist_deep_hvae.py:{variant}: choose one of {VARIANTS}.")
    config = default.get_config()
    config.model = config.model.__class__()
    config.model.name = "deep_hvae"
    # ``:cpu``: a network sized for one CPU core. Widths grow as the maps shrink, with a
    # half-width bottleneck (a quarter-width one leaves 8-channel convolutions, which XLA:CPU
    # runs several times slower per FLOP than 32-channel ones), and one deterministic block
    # at 28x28 above 10 stochastic layers.
    cpu = variant in ("cpu", "cpu_patch")
    config.model.resolutions = (28, 14, 7, 1)
    config.model.encoder_blocks = (1, 1, 2, 2) if cpu else 2
    config.model.decoder_blocks = (1, 2, 4, 4) if cpu else (2, 6, 6, 2)
    config.model.widths = (16, 32, 64, 128) if cpu else 64
    config.model.latent_channels = (1, 2, 4, 16) if cpu else 8
    if cpu:
        config.model.bottleneck = 0.5
        config.model.stochastic = (True,) * 10 + (False,)
    if variant == "cpu_patch":
        # 2x2 patches in and out: the 28x28 stage's 8-channel convolutions (the slowest per
        # FLOP on a CPU) go, and the widths that remain run several times faster per FLOP.
        config.model.patch_size = 2
        config.model.resolutions = (14, 7, 1)
        config.model.encoder_blocks = (2, 2, 2)
        config.model.decoder_blocks = (3, 5, 4)
        config.model.widths = (64, 96, 128)
        config.model.latent_channels = (2, 4, 16)
        config.model.stochastic = (True,) * 11 + (False,)
    config.model.log_std_bound = 5.0
    config.model.residual_init = "scaled"
    config.model.likelihood = "bernoulli"
    if variant == "8bit":
        config.data.binarization = "none"
        config.model.likelihood = "discretized_logistic_mix5"
    if variant == "mnist":
        config.data.name = "mnist"  # with --config.data.dir: the folder of IDX files
    config.train.batch_size = 32
    config.train.num_epochs = {"cpu": 20, "cpu_patch": 13}.get(variant, 10)
    config.train.steps_per_call = 50
    config.optim.learning_rate = 2e-3 if cpu else 2e-4
    config.optim.grad_clip_norm = 200.0
    if cpu:
        # A run planned to end: cosine decay from 2e-3 to 0 over the whole run (follows
        # --config.train.num_epochs; batch 32 and this peak won a step-matched comparison
        # against batch 64 / 5e-4, docs/results_budget.md).
        config.optim.schedule = "cosine"
        config.optim.decay_steps = config.train.get_ref("num_epochs") * (
            60_000 // config.train.batch_size)
        config.train.on_nonfinite = "skip"   # a NaN step is dropped and counted, not fatal
    # Every draw is a pass through the network: 100 images x 10 draws per pass; the active
    # units' means over 10 draws (100 would cost 100 ELBO passes).
    config.eval.batch_size = 100
    config.eval.num_importance_samples = 1000
    config.eval.iwae_k = 0
    config.eval.chunk = 10
    config.eval.au_samples = 10
    config.train.eval_every_steps = 5 * (60_000 // config.train.batch_size)  # every 5 epochs
    if cpu:
        # The evaluations during and after the run: ELBO, KL and active units. log p(x) at
        # k = 1000 over the test set costs about 5.5 hours of one core (1.7-2.4 s an image),
        # nearly 3 times the run; measure it afterwards: --mode=eval with
        # --config.eval.num_importance_samples=1000 (and num_test_images), or in resumable
        # chunks on both cores (benchmarks/budget_runs.sh, ONLY=cpu_full_eval).
        config.eval.num_importance_samples = 0
    if variant == "cifar10":
        config.data.name = "cifar10"
        config.data.binarization = "none"
        config.model.likelihood = "discretized_logistic_mix10"
        config.model.resolutions = (32, 16, 8, 4, 1)
        config.model.encoder_blocks = 3
        config.model.decoder_blocks = (2, 4, 6, 6, 2)
        config.model.widths = 128
        config.model.latent_channels = 16
        config.train.num_epochs = 200
        config.train.ema_decay = 0.9998
        config.eval.use_ema = True
        config.optim.skip_grad_norm = 400.0   # VDVAE's CIFAR-10 threshold
        config.eval.batch_size = 200
        config.train.eval_every_steps = 0     # every epoch (an accelerator's)
        config.eval.num_importance_samples = 0  # log p(x): --mode=eval with k chosen there
    return config
