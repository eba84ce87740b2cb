"""Burda et al. (2015)'s one-stochastic-layer model and training recipe, shared by the
mnist_* and fashion_mnist_* configs.

Encoder 784-200-200-(2x50), decoder 50-200-200-784, tanh, Bernoulli likelihood, dynamic
binarization, batch 20, Adam(β1 0.9, β2 0.999, ε 1e-4) with their schedule: 3^i epochs at
1e-3 · 10^(−i/7) for i = 0..7 (3280 epochs). ``config.optim.burda_schedule_scale``
shrinks every stage (and num_epochs follows it): 1.0 is the paper, 0.01 ≈ 33 epochs.
Evaluation: k = 5000 importance samples.
"""

import ml_collections

from experiments.configs import default

PAPER_EPOCHS = sum(3 ** i for i in range(8))  # 3280


def get_config(dataset: str, loss: str, scale: float = 0.01) -> ml_collections.ConfigDict:
    config = default.get_config()
    config.data.name = dataset
    config.model.hidden = (200, 200)
    config.model.latent_dim = 50
    config.model.activation = "tanh"
    config.loss.name = loss
    config.loss.num_samples = 50 if loss == "iwae" else 1
    config.optim.eps = 1e-4
    config.optim.schedule = "burda"
    # A FieldReference: overriding --config.optim.burda_schedule_scale also moves num_epochs.
    scale_ref = ml_collections.FieldReference(scale)
    config.optim.burda_schedule_scale = scale_ref
    config.train.batch_size = 20
    config.train.num_epochs = (scale_ref * PAPER_EPOCHS).to_int()
    config.eval.batch_size = 1000
    config.eval.num_importance_samples = 5000
    config.eval.iwae_k = 50
    return config
