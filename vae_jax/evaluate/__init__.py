"""Evaluation: per-example ELBO terms and importance-sampled log p(x) (``likelihood``),
active units (``active_units``), the suite a run evaluates with (``suite``), and samples,
reconstructions and PNG grids (``sampling``). The names of ``likelihood`` are re-exported
here (``vae_jax.evaluate.log_likelihood``, ``vae_jax.evaluate.per_example``, ...).
"""

from vae_jax.evaluate.likelihood import (PROGRESS_MIN_BATCHES, elbo_batch,
                                         log_importance_sampled, log_likelihood, make_elbo_fn,
                                         make_log_likelihood_fn, mean_and_stderr, per_example,
                                         summarize)

__all__ = ["per_example", "elbo_batch", "make_elbo_fn", "summarize", "log_importance_sampled",
           "make_log_likelihood_fn", "mean_and_stderr", "log_likelihood",
           "PROGRESS_MIN_BATCHES"]
