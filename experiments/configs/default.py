"""The default experiment: the classic MLP VAE on Fashion-MNIST.

784-500-(2x20) / 20-500-784, ReLU, Bernoulli likelihood, dynamic binarization, batch 128,
Adam 1e-3, 30 epochs: the setup of the Flax VAE example and PyTorch's, so figures compare.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.name = "fashion_mnist"
    config.data.dir = ""            # "" = the data set's default location
    config.data.download = False    # opt in to a tfds download (needs internet)
    config.data.binarization = "dynamic"

    config.model = ml_collections.ConfigDict()
    config.model.name = "mlp"
    config.model.latent_dim = 20
    config.model.hidden = (500,)
    config.model.activation = "relu"
    config.model.likelihood = "bernoulli"

    config.loss = ml_collections.ConfigDict()
    config.loss.name = "elbo"       # or "iwae"
    config.loss.num_samples = 1     # L (ELBO) or k (IWAE)
    config.loss.beta = 1.0
    config.loss.warmup_steps = 0    # linear KL warm-up from beta=0
    config.loss.free_bits = 0.0     # nats per latent dimension

    config.optim = ml_collections.ConfigDict()
    config.optim.name = "adam"
    config.optim.learning_rate = 1e-3
    config.optim.schedule = "constant"
    config.optim.decay_steps = 0
    config.optim.b1 = 0.9
    config.optim.b2 = 0.999
    config.optim.eps = 1e-8
    config.optim.weight_decay = 0.0
    config.optim.grad_clip_norm = 0.0   # 0 = off

    config.train = ml_collections.ConfigDict()
    config.train.batch_size = 128
    config.train.num_epochs = 30
    config.train.num_steps = 0          # > 0 overrides num_epochs
    config.train.steps_per_call = 100   # steps fused per dispatch with lax.scan
    config.train.matmul_precision = "default"   # JAX's default: TF32 allowed on GPUs
    config.train.ema_decay = 0.999
    config.train.checkpoint_every_steps = 0   # 0 = every epoch
    config.train.checkpoints_to_keep = 3
    config.train.eval_every_steps = 0         # 0 = every epoch
    config.train.on_nonfinite = "raise"       # NaN/Inf loss or grads: "raise" or "skip"

    config.eval = ml_collections.ConfigDict()
    config.eval.batch_size = 1000
    config.eval.num_samples = 1         # L for the test ELBO
    config.eval.use_ema = False
    config.eval.matmul_precision = "highest"    # float32 products for every reported nat
    # --mode=eval: importance-sampled log p(x) with k samples (Burda et al.: 5000) and the
    # IWAE-k bound; 0 skips. Samples stream `chunk` at a time over `ll_batch_size` images.
    config.eval.num_importance_samples = 5000
    config.eval.iwae_k = 50
    config.eval.chunk = 100
    config.eval.ll_batch_size = 1000
    config.eval.num_test_images = 0     # > 0: evaluate only the first n test images

    config.sample = ml_collections.ConfigDict()   # --mode=sample (vae_jax.sampling)
    config.sample.temperature = 1.0     # prior samples z ~ N(0, temperature² I)
    config.sample.num = 64
    config.sample.pair = (0, 1)         # test images interpolated between
    config.sample.num_interpolation = 10
    config.sample.traversal_dims = 10   # the most active latent dimensions, one row each
    config.sample.traversal_steps = 9
    config.sample.traversal_extent = 3.0
    config.sample.manifold_size = 20    # latent_dim == 2 only
    config.sample.scatter_points = 5000
    return config
