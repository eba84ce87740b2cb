"""A tiny config for tests: real Fashion-MNIST, a small MLP, a few dozen steps."""

from experiments.configs import default


def get_config():
    config = default.get_config()
    config.model.hidden = (32,)
    config.model.latent_dim = 4
    config.train.batch_size = 32
    config.train.num_steps = 20
    config.train.steps_per_call = 5
    config.train.checkpoint_every_steps = 10
    config.train.eval_every_steps = 10
    # an EMA kept (not the default), so the loop tests cover it: resume, devices, skips
    config.train.ema_decay = 0.999
    config.eval.batch_size = 1000
    # the first 1000 test images: each evaluation a tenth of the full set's work
    config.eval.num_test_images = 1000
    # --mode=eval (and sweeps) estimate log p(x) with few samples: seconds, not minutes.
    config.eval.num_importance_samples = 20
    config.eval.iwae_k = 5
    config.eval.chunk = 10
    return config
