"""The default experiment's step rate in vae_jax, a straightforward Flax loop and PyTorch.

All three train the same model on the same data the same way: 784-500-(2x20) / 20-500-784
ReLU MLP, Bernoulli likelihood, dynamic binarization (a fresh Bernoulli draw per pixel per
step), one-sample ELBO, Adam 1e-3, batch 128, Fashion-MNIST held in memory. Timed
round-robin (one block of steps of each per round) so a shared machine's load hits all
alike; prints medians and ratios.

* ``vae_jax``: the library's ``Trainer`` (data on device, ``lax.scan`` over 100 steps per
  dispatch, EMA and metrics included).
* ``flax_loop``: what the Flax VAE example does once jitted: a ``jax.jit`` step per batch,
  batches sliced on the host and sent each step, ``jax.random.bernoulli``, ``optax.adam``.
* ``pytorch``: the PyTorch VAE example's model and loss on the CPU with ``torch.bernoulli``
  and ``torch.optim.Adam``; skipped when torch is not installed (it is not a dependency:
  ``pip install torch``).

``--model=conv``: the registry's conv VAE instead (two stride-2 convolutions 32, 64; a
256-unit layer; the mirrored decoder with stride-2 transposed convolutions), vae_jax
against the same network in PyTorch (``Conv2d`` / ``ConvTranspose2d``), 10 steps per block.

  python -m benchmarks.compare_frameworks --rounds=7
  python -m benchmarks.compare_frameworks --model=conv --rounds=5
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vae_jax import config as config_lib, data, parallel, train
from vae_jax.run import build

BATCH, STEPS, CONV_STEPS = 128, 100, 10
CONV = dict(name="conv", latent_dim=20, channels=(32, 64), hidden=256, activation="relu",
            likelihood="bernoulli")


def vae_jax_runner(images_np, model_name="mlp"):
    config = config_lib.defaults()
    if model_name == "conv":
        config.model = ml_collections.ConfigDict(CONV)
    mesh = parallel.data_mesh()
    model = build.build_model(config, (28, 28, 1))
    spe = len(images_np) // BATCH
    trainer = build.build_trainer(config, model, mesh, spe)
    keys = build.root_keys(config.seed)
    state = jax.device_put(train.create_train_state(keys["init"], model, trainer.optimizer,
                                                    (28, 28, 1)), trainer.replicated)
    images = parallel.put_global(images_np, mesh, trainer.replicated)
    perm = trainer.permutation(keys["order"], 0, len(images_np))
    fn = trainer.call(STEPS if model_name == "mlp" else CONV_STEPS)
    box = {"state": state}

    def run():
        box["state"] = box["state"].replace(step=jnp.zeros((), jnp.int32))
        box["state"], m = fn(box["state"], images, perm, keys["train"])
        jax.block_until_ready(m)
    return run


class FlaxVAE(nn.Module):
    """The Flax example's model, sized as the default config."""

    @nn.compact
    def __call__(self, x, key):
        h = nn.relu(nn.Dense(500)(x))
        mean, logvar = nn.Dense(20)(h), nn.Dense(20)(h)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape)
        logits = nn.Dense(784)(nn.relu(nn.Dense(500)(z)))
        return logits, mean, logvar


def flax_runner(images_np):
    model = FlaxVAE()
    flat = images_np.reshape(len(images_np), 784)
    params = model.init(jax.random.key(0), jnp.zeros((1, 784)), jax.random.key(1))
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, key):
        k_bin, k_z = jax.random.split(key)
        x = jax.random.bernoulli(k_bin, batch.astype(jnp.float32) / 255.0).astype(jnp.float32)

        def loss_fn(params):
            logits, mean, logvar = model.apply(params, x, k_z)
            bce = jnp.sum(optax.sigmoid_binary_cross_entropy(logits, x), axis=-1)
            kl = -0.5 * jnp.sum(1 + logvar - mean ** 2 - jnp.exp(logvar), axis=-1)
            return jnp.mean(bce + kl)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(0)
    box = {"params": params, "opt": opt_state, "i": 0}

    def run():
        order = rng.permutation(len(flat))
        loss = None
        for j in range(STEPS):
            idx = order[j * BATCH:(j + 1) * BATCH]
            box["params"], box["opt"], loss = step(box["params"], box["opt"], flat[idx],
                                                   jax.random.key(box["i"]))
            box["i"] += 1
        jax.block_until_ready(loss)
    return run


def _torch_conv_vae(torch):
    """The registry's conv VAE in PyTorch (same layers and sizes; symmetric padding)."""
    nn_ = torch.nn

    class ConvVAE(nn_.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn_.Sequential(
                nn_.Conv2d(1, 32, 3, 2, 1), nn_.ReLU(), nn_.Conv2d(32, 64, 3, 2, 1), nn_.ReLU(),
                nn_.Flatten(), nn_.Linear(3136, 256), nn_.ReLU(), nn_.Linear(256, 40))
            self.dec = nn_.Sequential(
                nn_.Linear(20, 256), nn_.ReLU(), nn_.Linear(256, 3136), nn_.ReLU(),
                nn_.Unflatten(1, (64, 7, 7)),
                nn_.ConvTranspose2d(64, 64, 3, 2, 1, output_padding=1), nn_.ReLU(),
                nn_.ConvTranspose2d(64, 32, 3, 2, 1, output_padding=1), nn_.ReLU(),
                nn_.Conv2d(32, 1, 3, 1, 1), nn_.Flatten())

        def forward(self, x):
            mean, log_std = self.enc(x.view(-1, 1, 28, 28)).chunk(2, dim=-1)
            z = mean + torch.exp(log_std) * torch.randn_like(mean)
            return self.dec(z), mean, 2 * log_std

    return ConvVAE()


def torch_runner(images_np, model_name="mlp"):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)

    class VAE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = (torch.nn.Linear(784, 500),
                                              torch.nn.Linear(500, 20), torch.nn.Linear(500, 20))
            self.fc3, self.fc4 = torch.nn.Linear(20, 500), torch.nn.Linear(500, 784)

        def forward(self, x):
            h = torch.relu(self.fc1(x))
            mean, logvar = self.fc21(h), self.fc22(h)
            z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
            return self.fc4(torch.relu(self.fc3(z))), mean, logvar

    model = VAE() if model_name == "mlp" else _torch_conv_vae(torch)
    steps = STEPS if model_name == "mlp" else CONV_STEPS
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    flat = torch.from_numpy(images_np.reshape(len(images_np), 784))
    f = torch.nn.functional

    def run():
        order = torch.randperm(len(flat))
        for j in range(steps):
            x = torch.bernoulli(flat[order[j * BATCH:(j + 1) * BATCH]].float() / 255.0)
            logits, mean, logvar = model(x)
            bce = f.binary_cross_entropy_with_logits(logits, x, reduction="sum")
            kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
            loss = (bce + kl) / BATCH
            opt.zero_grad()
            loss.backward()
            opt.step()
    run.version = f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--model", default="mlp", choices=["mlp", "conv"])
    args = ap.parse_args()
    ds = data.load("fashion_mnist")
    steps = STEPS if args.model == "mlp" else CONV_STEPS
    runners = {"vae_jax": vae_jax_runner(ds.train_images, args.model),
               "flax_loop": flax_runner(ds.train_images) if args.model == "mlp" else None,
               "pytorch": torch_runner(ds.train_images, args.model)}
    runners = {k: v for k, v in runners.items() if v is not None}
    print(f"{args.model}: jax {jax.__version__} ({jax.default_backend()}), {os.cpu_count()} "
          "cores; " + getattr(runners.get("pytorch"), "version", "pytorch not installed")
          + f"; {steps} steps per block, {args.rounds} rounds")
    for run in runners.values():
        run()  # compile / warm up
    rates = {k: [] for k in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run()
            rates[name].append(steps / (time.perf_counter() - t0))
    base = statistics.median(rates["vae_jax"])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:10s} {med:7.1f} steps/s (median; min {min(r):.1f}, max {max(r):.1f}) "
              f"= {med * BATCH:8.0f} images/s; vae_jax is {base / med:.2f}x")


if __name__ == "__main__":
    main()
