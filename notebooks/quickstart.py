# ---
# jupyter:
#   accelerator: GPU
#   colab:
#     provenance: []
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: accelerator,colab
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # vae_jax quickstart: train a VAE on Fashion-MNIST
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/vae-jax/vae_jax/blob/main/notebooks/quickstart.ipynb)
#
# This notebook calls the same public functions as the command line
# (`python -m experiments.main --config=experiments/configs/default.py --workdir=...`):
# `vae_jax.train_and_evaluate` trains the default MLP VAE (784-500-20, Bernoulli pixels,
# dynamic binarization, Adam 1e-3); then the notebook plots its loss curve, shows reconstructions
# and prior samples, estimate log p(x), reload its checkpoint and write the pictures that
# `--mode=sample` writes.

# %%
# Install vae_jax. VAE_JAX_SOURCE names what to install (a local checkout, a wheel, or a
# git+https URL; CI sets it to this checkout); without it, the cell installs from REPOSITORY,
# which must equal pyproject.toml's [project.urls] "Repository" (a test checks they agree),
# and only when vae_jax is not importable already. The core install has no TensorFlow: on
# Colab tensorflow-datasets is there already, so nothing installs a second TensorFlow.
import importlib.metadata
import importlib.util
import os
import subprocess
import sys

REPOSITORY = "https://github.com/vae-jax/vae_jax"
SOURCE = os.environ.get("VAE_JAX_SOURCE") or f"git+{REPOSITORY}"


def _versions():
    return {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}


if os.environ.get("VAE_JAX_SOURCE") or importlib.util.find_spec("vae_jax") is None:
    before = _versions()
    extra = [] if importlib.util.find_spec("matplotlib") else ["matplotlib"]
    spec = SOURCE if os.path.exists(SOURCE) else f"vae_jax @ {SOURCE}"  # a path, or a URL
    pip = subprocess.run([sys.executable, "-m", "pip", "install", spec, *extra], text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    print(pip.stdout)  # into the cell's output (a subprocess would print to the kernel's log)
    pip.check_returncode()
    importlib.invalidate_caches()
    after = _versions()
    # Python keeps the version it imported first: an upgraded package (jax, numpy, ...) is only
    # seen after a restart.
    changed = sorted(name for name in before if after.get(name, before[name]) != before[name])
    if changed:
        print("Upgraded", ", ".join(changed), "-> RESTART THE RUNTIME now (Colab: Runtime > "
              "Restart), then run the notebook again from the top.")
    else:
        print("Installed from", SOURCE, "- no restart needed.")
import vae_jax

print("vae_jax", vae_jax.__version__, "from", os.path.dirname(vae_jax.__file__))

# %%
# JAX picks the runtime's accelerator by itself: Runtime > Change runtime type > GPU / TPU.
import jax

print("JAX", jax.__version__, "| backend:", jax.default_backend(), "|", jax.device_count(),
      "device(s):", [d.device_kind for d in jax.devices()])

# %% [markdown]
# ## Configuration
#
# The config is the CLI's `experiments/configs/default.py`; change fields as you would with
# `--config.train.num_epochs=3`. `SMOKE` (set by the test suite through
# `VAE_JAX_NOTEBOOK_SMOKE=1`) shrinks everything so the notebook runs in CI on a CPU.

# %%
import os

import matplotlib.pyplot as plt
import numpy as np

import vae_jax
from experiments.configs import default

SMOKE = os.environ.get("VAE_JAX_NOTEBOOK_SMOKE") == "1"
WORKDIR = os.path.abspath("runs/quickstart")

config = default.get_config()
config.train.num_epochs = 3
if SMOKE:
    config.train.num_steps = 100        # overrides num_epochs
    config.train.steps_per_call = 50
    config.train.eval_every_steps = 100
    config.train.checkpoint_every_steps = 100
    config.eval.num_test_images = 1000  # evaluate the first 1000 test images
    config.model.hidden = (64,)
print(config.model)

# %% [markdown]
# ## Data
#
# `vae_jax.data.load("fashion_mnist")` reads the real IDX files from
# `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist` package) or a
# prepared TensorFlow Datasets copy. **On Colab** neither exists, so the cell opts in to the
# tfds download (the CLI's `--config.data.download=True`; it needs internet).

# %%
if not os.path.isdir(vae_jax.data.FASHION_MNIST_DIR):
    config.data.download = True   # Colab: tfds downloads and prepares it once
ds = vae_jax.data.load(config.data.name, download=config.data.download)
print(ds.name, "train", ds.train_images.shape, "test", ds.test_images.shape,
      ds.train_images.dtype)
plt.figure(figsize=(6, 1.2))
grid = vae_jax.evaluate.sampling.image_grid(ds.test_images[:16], ncols=16)
plt.imshow(grid[..., 0], cmap="gray")
plt.axis("off");

# %% [markdown]
# ## Train
#
# One call, as the CLI's `--mode=train`: checkpoints, TensorBoard scalars and PNG grids go
# to `WORKDIR`. Running the cell again resumes from the latest checkpoint (and returns at
# once when training has finished).

# %%
state = vae_jax.train_and_evaluate(config, WORKDIR)
print("trained to step", int(state.step))

# %% [markdown]
# ## Loss curve
#
# `vae_jax.read_scalars` reads back what the run logged: the training loss (negative ELBO,
# nats per image, averaged over the steps between logs) and the test ELBO.

# %%
scalars = vae_jax.read_scalars(WORKDIR)
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(*scalars["train_loss"], label="train: −ELBO")
steps, test_elbo = scalars["test_elbo"]
ax.plot(steps, -test_elbo, "o-", label="test: −ELBO")
ax.set_xlabel("step"); ax.set_ylabel("nats per image"); ax.legend()
ax.set_ylim(top=np.percentile(scalars["train_loss"][1], 95));

# %% [markdown]
# ## Reconstructions and prior samples
#
# `vae_jax.evaluate.sampling` has pure functions of `(params, inputs, *, model)` returning
# images in [0, 1]: reconstructions decode the posterior mean μ(x); prior samples decode
# z ~ N(0, T² I) (temperature T < 1 gives cleaner, less varied samples).

# %%
import jax
import jax.numpy as jnp

from vae_jax.evaluate import sampling
from vae_jax.run import build

model = build.build_model(config, ds.image_shape)
params = state.params
x = sampling.display_inputs(ds.test_images[:16], config.data.binarization)
recon = sampling.reconstructions(params, x, model=model)
samples = {t: sampling.prior_samples(params, jax.random.key(1), model=model, num=32,
                                     temperature=t) for t in (1.0, 0.7)}

fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
axes[0].imshow(sampling.reconstruction_grid(np.asarray(x), np.asarray(recon))[..., 0],
               cmap="gray")
axes[0].set_title("test images (odd rows) and reconstructions")
for ax, (t, s) in zip(axes[1:], samples.items()):
    ax.imshow(sampling.image_grid(np.asarray(s), ncols=8)[..., 0], cmap="gray")
    ax.set_title(f"prior samples, T = {t}")
for ax in axes:
    ax.axis("off")

# %% [markdown]
# ## log p(x)
#
# The ELBO is a lower bound on log p(x); importance sampling with k posterior draws
# tightens it (the IWAE bound, which tends to log p(x) as k grows). The cell uses
# `vae_jax.evaluate.log_likelihood` (k up to 5000, chunked) when this vae_jax provides it,
# and otherwise compute the IWAE bound with `vae_jax.losses.iwae_bound` directly.

# %%
from functools import partial

K = 10 if SMOKE else 1000
N = 200 if SMOKE else 1000
key = jax.random.key(2)
images = ds.test_images[:N]
x_bin = vae_jax.data.preprocess(jnp.asarray(images), key,
                                binarization=config.data.binarization)


def iwae_log_px(params, x, key, k, chunk=100):
    bound = jax.jit(partial(vae_jax.losses.iwae_bound, model=model, num_samples=k))
    keys = [jax.random.fold_in(key, i) for i in range(0, len(x), chunk)]
    return np.concatenate([np.asarray(bound(params, x[i:i + chunk], k))
                           for i, k in zip(range(0, len(x), chunk), keys)])


log_likelihood = getattr(vae_jax.evaluate, "log_likelihood", None)
if log_likelihood is not None:   # float inputs: the same binarized images as the ELBO
    out = log_likelihood(params, np.asarray(x_bin), key, model=model, num_samples=K)
    log_px = np.asarray(out["log_px"] if isinstance(out, dict) else out)
    how = "vae_jax.evaluate.log_likelihood"
else:
    log_px = iwae_log_px(params, x_bin, key, K)
    how = "vae_jax.losses.iwae_bound"
elbo = np.asarray(vae_jax.elbo_terms(params, x_bin, key, model=model)["elbo"])
print(f"{N} test images: ELBO {elbo.mean():.2f}  log p(x) ≈ {log_px.mean():.2f} nats "
      f"(k = {K}, {how})")

# %% [markdown]
# ## Save and reload a checkpoint
#
# Training saved orbax checkpoints in `WORKDIR/checkpoints`.
# `vae_jax.run.experiment.restore_state` rebuilds the `TrainState` (params, optimizer state,
# EMA params, step), exactly as `--mode=eval` and `--mode=sample` do; the restored model
# reconstructs identically.

# %%
restored = vae_jax.run.experiment.restore_state(config, WORKDIR, model, ds.image_shape)
same = jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                 restored.params, state.params))
recon2 = sampling.reconstructions(restored.params, x, model=model)
print("step", int(restored.step), "| params identical:", same,
      "| max reconstruction difference:", float(jnp.max(jnp.abs(recon2 - recon))))
assert same

# %% [markdown]
# ## The latent space: `--mode=sample`
#
# `vae_jax.sample_checkpoint(config, workdir)` is `--mode=sample`: it restores
# the checkpoint and writes PNGs of prior samples, reconstructions, linear and spherical
# interpolations between two test images' latents, and traversals of the most active
# latent dimensions. A second model with a **2-D latent space** is trained too, for which it also
# draws the decoded manifold and a scatter of test encodings coloured by class.

# %%
from PIL import Image


def show(paths, names, width=14):
    fig, axes = plt.subplots(1, len(names), figsize=(width, width / len(names) * 1.1))
    for ax, name in zip(np.atleast_1d(axes), names):
        ax.imshow(Image.open(paths[name]), cmap="gray")
        ax.set_title(name); ax.axis("off")


paths = vae_jax.sample_checkpoint(config, WORKDIR)
show(paths, ["interpolation_linear", "interpolation_spherical"])
show(paths, ["traversal"], width=6)

# %%
config2d = default.get_config()
config2d.model.latent_dim = 2
config2d.train.num_epochs = config.train.num_epochs
config2d.train.num_steps = config.train.num_steps
config2d.train.eval_every_steps = config.train.eval_every_steps
config2d.train.checkpoint_every_steps = config.train.checkpoint_every_steps
config2d.data.download = config.data.download
config2d.train.steps_per_call = config.train.steps_per_call
if SMOKE:
    config2d.train.num_steps = 50
    config2d.sample.scatter_points = 1000
    config2d.eval.num_test_images = 1000
    config2d.model.hidden = config.model.hidden
vae_jax.train_and_evaluate(config2d, WORKDIR + "_2d")
paths2d = vae_jax.sample_checkpoint(config2d, WORKDIR + "_2d")
show(paths2d, ["manifold", "latent_scatter"], width=12)

# %% [markdown]
# The same from a shell:
#
# ```
# python -m experiments.main --config=experiments/configs/default.py --workdir=runs/default --config.train.num_epochs=3
# python -m experiments.main --config=experiments/configs/default.py --workdir=runs/default --mode=sample --config.sample.temperature=0.7
# python -m experiments.main --config=experiments/configs/default.py --workdir=runs/latent2 --config.model.latent_dim=2
# python -m experiments.main --config=experiments/configs/default.py --workdir=runs/latent2 --config.model.latent_dim=2 --mode=sample
# ```
