"""vae_jax: variational autoencoders in JAX/Flax, from the ELBO to deep hierarchies.

The public surface: the modules below (each with one job, see its opening docstring) and
the names re-exported here. ``vae_jax.experiment`` runs the four modes of
``experiments/main.py``; ``vae_jax.config`` holds every default.
"""

from vae_jax import (active_units, checkpoint, config, data, distributions, errors, evaluate,
                     experiment, losses, models, optim, parallel, precision, runtime, sampling,
                     suite, train, xla_cpu)
from vae_jax import logs, params_file, progress, restore, saves, sweep
from vae_jax.distributions import Bernoulli, DiagGaussian, Gaussian
from vae_jax.distributions import (Categorical256, DiscretizedLogistic,
                                   DiscretizedLogisticMixture, bits_per_dim)
from vae_jax.errors import (CheckpointError, ConfigError, DataError, NonFiniteLossError,
                            TrainingInterrupted)
from vae_jax.evaluate import log_likelihood
from vae_jax.experiment import evaluate_checkpoint, sample_checkpoint, train_and_evaluate
from vae_jax.losses import elbo, elbo_terms, gaussian_kl, iwae, iwae_bound
from vae_jax.train import TrainState, create_train_state, train_step

__version__ = "0.1.0"
