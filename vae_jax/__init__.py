"""vae_jax: variational autoencoders in JAX/Flax."""

from vae_jax import (checkpoint, data, distributions, evaluate, losses, models, parallel,
                     reliability, sampling)
from vae_jax import logs, progress, sweep
from vae_jax.distributions import Bernoulli, DiagGaussian, Gaussian
from vae_jax.distributions import (Categorical256, DiscretizedLogistic,
                                   DiscretizedLogisticMixture, bits_per_dim)
from vae_jax.evaluate import log_likelihood
from vae_jax.losses import elbo, elbo_terms, gaussian_kl, iwae, iwae_bound
from vae_jax.train import TrainState, create_train_state, train_and_evaluate, train_step

__version__ = "0.1.0"
