"""vae_jax: variational autoencoders in JAX/Flax, from the ELBO to deep hierarchies and
variational diffusion models.

The package, by stage of a run (each module opens with its job):

* the maths: ``distributions``, ``losses`` (pure functions, per-example terms);
* ``models`` (a registry of families), ``data`` (sources, batching, pipelines);
* ``config`` (every field, its default, the checks);
* ``train`` (the train step, optimizers, mixed precision), ``evaluate`` (ELBO, log p(x),
  active units, samples);
* ``run`` (the modes of ``vae-jax``, checkpoints, the workdir, sweeps), ``cli``;
* the ground floor: ``ops`` (random draws and convolutions with CPU fast paths), ``errors``,
  ``parallel``, ``precision``, ``progress``.
"""

from vae_jax import config, data, distributions, errors, evaluate, losses, models, train
from vae_jax.distributions import (Bernoulli, Categorical256, DiagGaussian,
                                   DiscretizedLogistic, DiscretizedLogisticMixture, Gaussian,
                                   bits_per_dim)
from vae_jax.errors import (CheckpointError, ConfigError, DataError, NonFiniteLossError,
                            TrainingInterrupted)
from vae_jax.evaluate import log_likelihood
from vae_jax.losses import elbo, elbo_terms, gaussian_kl, iwae, iwae_bound
from vae_jax.run.experiment import evaluate_checkpoint, sample_checkpoint, train_and_evaluate
from vae_jax.run.logs import read_scalars
from vae_jax.train import TrainState, create_train_state, train_step

__version__ = "0.1.0"
