"""Every config field with its default, in one place: ``defaults()`` is the default
experiment (``experiments/configs/default.py`` returns it), and ``vae_jax.config.with_defaults``
fills any field a config leaves out from it. ``override`` applies a table of changes: a
config file's variants are such tables (``path.py:variant``)."""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from vae_jax.precision import EVAL_PRECISION


def defaults() -> ml_collections.ConfigDict:
    """Every config field with its default: the default experiment (the classic 784-500-20
    MLP VAE on Fashion-MNIST, batch 128, Adam 1e-3, 30 epochs, dynamic binarization)."""
    c = ml_collections.ConfigDict()
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "fashion_mnist"
    c.data.dir = ""                 # "" = the data set's default location
    c.data.download = False         # opt in to a tfds download (needs internet)
    c.data.binarization = "dynamic"  # "dynamic", "static" or "none" (8-bit likelihoods)
    # "device": the training set split over the devices (1/n each), batches gathered there;
    # "stream": batches read on the host and prefetched; "auto": "device" when the set's
    # share per device fits device_budget_mb, else "stream" (the choice is printed)
    c.data.pipeline = "auto"
    c.data.device_budget_mb = 0     # MB per device for "auto"; 0 = the backend's default
    c.data.prefetch = 2             # "stream": calls' batches read ahead on a host thread
    # "stream": grain's threads reading/decoding batches; 0 reads on the stream's own thread,
    # -1 = the backend's default (0 on the CPU, where XLA's step keeps every core busy; 4 on
    # an accelerator: data.grain_pipeline.read_threads)
    c.data.num_workers = -1

    c.model = ml_collections.ConfigDict()   # the registered builder's keyword arguments
    c.model.name = "mlp"
    c.model.latent_dim = 20
    c.model.hidden = (500,)
    c.model.activation = "relu"
    c.model.likelihood = "bernoulli"

    c.loss = ml_collections.ConfigDict()
    c.loss.name = "elbo"            # a registered objective: "elbo" or "iwae"
    c.loss.num_samples = 1          # L (ELBO) or k (IWAE)
    c.loss.beta = 1.0
    c.loss.warmup_steps = 0         # linear KL warm-up from beta=0
    c.loss.free_bits = 0.0          # nats per latent dimension

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adam"           # or "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "constant"   # "constant", "cosine" (over decay_steps) or "burda"
    c.optim.decay_steps = 0
    c.optim.burda_schedule_scale = 1.0  # "burda": stage i runs 3^i · scale epochs
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.grad_clip_norm = 0.0    # 0 = off
    # drop (skip, count, log) an update whose global gradient norm, before clipping,
    # exceeds this (VDVAE's skip threshold); 0 = off
    c.optim.skip_grad_norm = 0.0

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128
    c.train.num_epochs = 30
    c.train.num_steps = 0           # > 0 overrides num_epochs
    # steps fused per dispatch with lax.scan (the nearest divisor of the epoch within 2x, so
    # every call is one program: train.call_length)
    c.train.steps_per_call = 100
    c.train.matmul_precision = "default"   # JAX's default: TF32 allowed on GPUs
    # "bfloat16": the train step's linear layers compute in bf16 (vae_jax.mixed_precision;
    # a model with its own dtype, deep_hvae, runs in it); parameters, optimizer state, EMA,
    # losses and every evaluation stay float32
    c.train.compute_dtype = "float32"
    # > 0: keep an EMA of the parameters with this decay (in the checkpoints; evaluated with
    # eval.use_ema); 0 = none kept, and no pass over the parameters spent on it each step
    c.train.ema_decay = 0.0
    c.train.checkpoint_every_steps = 0     # 0 = every epoch
    c.train.checkpoints_to_keep = 3
    # True: orbax writes each checkpoint in the background while training goes on (a failed
    # write is reported at the next save or at exit); False: each save waits for its write
    c.train.async_checkpoint = True
    c.train.eval_every_steps = 0           # 0 = every epoch
    c.train.on_nonfinite = "raise"         # NaN/Inf loss or grads: "raise" or "skip"

    c.eval = ml_collections.ConfigDict()
    c.eval.batch_size = 1000
    c.eval.num_samples = 1          # L for the test ELBO
    c.eval.use_ema = False          # True: evaluate the EMA (needs train.ema_decay > 0)
    c.eval.matmul_precision = EVAL_PRECISION   # float32 products for every reported nat
    # --mode=eval: importance-sampled log p(x) with k samples (Burda et al.: 5000) and the
    # IWAE-k bound; 0 skips. Samples stream `chunk` at a time over `ll_batch_size` images.
    c.eval.num_importance_samples = 5000
    c.eval.iwae_k = 50
    c.eval.chunk = 100
    c.eval.ll_batch_size = 0        # 0 = eval.batch_size
    c.eval.num_test_images = 0      # > 0: evaluate only the first n test images
    # active units of a model whose layers depend on sampled layers (hvae, deep_hvae):
    # E_q[z_l | x] averaged over au_samples draws, streamed `chunk` at a time
    c.eval.au_samples = 100

    c.sample = ml_collections.ConfigDict()   # --mode=sample (vae_jax.evaluate.sampling)
    # prior samples z ~ N(0, temperature² I); models with layers (deep_hvae) also take one
    # value per stochastic layer, top-down, e.g. (1.0, 0.8, 0.6, ...)
    c.sample.temperature = ml_collections.FieldReference(1.0, field_type=object)
    c.sample.num = 64               # prior samples and reconstructions shown
    c.sample.pair = (0, 1)          # test images interpolated between
    c.sample.num_interpolation = 10  # images on each interpolation path, ends included
    c.sample.traversal_dims = 10    # the most active latent dimensions, one row each
    c.sample.traversal_steps = 9
    c.sample.traversal_extent = 3.0  # values in [-extent, extent] prior standard deviations
    c.sample.manifold_size = 20     # latent_dim == 2 only: manifold_size² decoded grid
    c.sample.scatter_points = 5000  # latent_dim == 2 only: test encodings in the scatter
    return c


def override(config: ml_collections.ConfigDict,
             table: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Set each dotted field of ``table`` in ``config`` (in place; returned), e.g.
    ``{"model.widths": (16, 32), "train.batch_size": 32}``: a config file's variant.

    A value may change a field's type (a per-layer tuple where the base has one number); a
    dict value replaces a whole section; a callable value is called with the config after
    the other values are set (e.g. a FieldReference to a field that a flag may change).
    """
    deferred = []
    for path, value in table.items():
        if callable(value):
            deferred.append((path, value))
        else:
            _set(config, path, value)
    for path, make in deferred:
        _set(config, path, make(config))
    return config


def _set(config: ml_collections.ConfigDict, path: str, value) -> None:
    *parents, name = path.split(".")
    section = config
    for part in parents:
        section = section[part]
    if isinstance(value, Mapping):
        value = ml_collections.ConfigDict(dict(value))
    try:
        section[name] = value
    except TypeError:  # another type than the base's: replace the field
        del section[name]
        section[name] = value
