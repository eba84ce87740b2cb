"""8-bit Fashion-MNIST with a ResNet-style conv VAE and a discretized logistic mixture.

Pixels are modelled as 8-bit values (binarization "none": the model sees pixel / 255 and the
likelihood puts a probability on each of the 256 values), so the test log-likelihood is
reported in bits/dim: −log p(x) / (784 ln 2).

    python -m experiments.main --config=experiments/configs/fmnist_8bit_conv.py \
        --workdir=runs/fmnist_8bit_conv
"""

from experiments.configs import default


def get_config():
    config = default.get_config()
    config.data.binarization = "none"
    config.model.name = "resnet"
    config.model.latent_dim = 32
    config.model.channels = (16, 32)
    config.model.blocks = 1
    config.model.activation = "swish"
    config.model.likelihood = "discretized_logistic_mix5"
    del config.model["hidden"]
    config.train.batch_size = 64
    config.train.num_epochs = 10
    config.train.steps_per_call = 50
    config.optim.grad_clip_norm = 100.0
    config.eval.batch_size = 500
    config.eval.ll_batch_size = 500
    config.eval.num_importance_samples = 1000
    config.eval.iwae_k = 0
    config.eval.chunk = 10
    return config
