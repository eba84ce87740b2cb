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
# # Beyond the single-layer VAE: hierarchies and diffusion with vae_jax
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/vae-jax/vae_jax/blob/main/notebooks/beyond_the_vae.ipynb)
#
# The two other notebooks stop at the single-layer VAE. This one walks on with the library's
# own functions:
#
# 1. a **two-layer hierarchical VAE**, trained briefly, and its KL layer by layer;
# 2. the **trained deep hierarchical VAE** kept in the repository (`pretrained/`): loaded,
#    not trained, and sampled at several temperatures;
# 3. a **variational diffusion model as a hierarchical VAE with a fixed encoder**: on
#    Gaussian data, where the best denoiser and every bound are known in closed form, the
#    T-step bound tightens towards the continuous-time one as T grows;
# 4. **ancestral sampling** down the same hierarchy.
#
# It runs top to bottom on a CPU in a few minutes.

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

# %%
import os
import urllib.request

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import vae_jax
from vae_jax import models
from vae_jax.config import defaults, override
from vae_jax.evaluate import active_units, sampling
from vae_jax.models.vdm import bounds as vdm_bounds
from vae_jax.models.vdm import model as vdm
from vae_jax.models.vdm.schedules import linear_gamma
from vae_jax.run import params_file

SMOKE = os.environ.get("VAE_JAX_NOTEBOOK_SMOKE") == "1"
print("JAX", jax.__version__, "| backend:", jax.default_backend())

# %% [markdown]
# ## 1. A two-layer hierarchical VAE
#
# x → z₁ → z₂ for inference and z₂ → z₁ → x for generation (Burda et al. 2015's layout,
# smaller here): `models.get("hvae", ...)` builds it, and `vae_jax.train_and_evaluate`
# trains it with the same trainer, losses and evaluation as the single-layer VAE. Its
# `terms` return the KL of every layer, so the ELBO's prior-matching term can be read layer
# by layer: a layer whose KL is near 0 carries no information about x (it has collapsed
# onto its prior).

# %%
config = override(defaults(), {
    "model": {"name": "hvae", "latent_dims": (32, 8), "hidden": ((256,), (64,)),
              "activation": "tanh"},
    "train.num_steps": 200 if SMOKE else 3000,
    "train.batch_size": 100,
    "train.steps_per_call": 50,
    "eval.num_test_images": 1000,
})
if not os.path.isdir(vae_jax.data.FASHION_MNIST_DIR):   # Colab: tfds fetches it
    config.data.download = True
WORKDIR = "/tmp/vae_jax_hvae"
state = vae_jax.train_and_evaluate(config, WORKDIR)

# %%
from vae_jax.run import build

ds = vae_jax.data.load(config.data.name, download=config.data.download)
model = build.build_model(config, ds.image_shape)
x = vae_jax.data.preprocess(jnp.asarray(ds.test_images[:1000]), jax.random.key(1),
                            binarization="dynamic")
terms = model.apply(state.params, x, jax.random.key(2), 1, method="terms")
for layer, kl in terms["kl"].items():
    print(f"layer z_{layer}: KL {float(jnp.mean(jnp.sum(kl, axis=-1))):6.2f} nats")
units = active_units.active_units(state.params, ds.test_images[:1000], model=model,
                                  key=jax.random.key(3), num_samples=10)
print("active units per layer:", units, "of", dict(zip(("1", "2"), (32, 8))))

# %% [markdown]
# ## 2. The trained deep hierarchical VAE, loaded
#
# `pretrained/fashion_mnist_deep_hvae_cpu_patch.npz` holds a deep top-down ResNet VAE
# (11 stochastic layers on 2×2 patches) trained for two hours of one CPU core; its test
# log p(x) is −226.13 nats (`pretrained/README.md`). The file carries the model's settings,
# so the model is built from it alone. Lower temperatures (a scaled-down prior standard
# deviation in every layer) give cleaner, less varied samples.

# %%
NAME = "fashion_mnist_deep_hvae_cpu_patch.npz"
source = os.environ.get("VAE_JAX_SOURCE", "")
path = os.path.join(source, "pretrained", NAME)
if not os.path.isfile(path):   # Colab: fetch it from the repository
    path = os.path.join("/tmp", NAME)
    if not os.path.isfile(path):
        urllib.request.urlretrieve(f"{REPOSITORY}/raw/main/pretrained/{NAME}", path)
params, meta = params_file.load(path)
settings = {k: v for k, v in meta["model"].items() if k != "name"}
deep = models.get(meta["model"]["name"], image_shape=tuple(meta["image_shape"]), **settings)
print(f"step {meta['step']}: {deep.num_layers} stochastic layers,",
      sum(p.size for p in jax.tree.leaves(params)), "parameters")

fig, axes = plt.subplots(1, 3, figsize=(12, 4))
for ax, t in zip(axes, (1.0, 0.8, 0.6)):
    images = sampling.prior_samples(params, jax.random.key(0), model=deep, num=36,
                                    temperature=t)
    ax.imshow(sampling.image_grid(np.asarray(images), ncols=6)[..., 0], cmap="gray")
    ax.set_title(f"temperature {t}")
    ax.axis("off")

# %% [markdown]
# ## 3. A diffusion model is a hierarchical VAE with a fixed encoder
#
# A variational diffusion model (Kingma et al. 2021) is a deep hierarchical VAE whose
# "encoder" adds noise: q(z_t | x) = N(α_t x, σ_t² I) with α_t² = sigmoid(−γ(t)) and
# σ_t² = sigmoid(γ(t)). Only the top-down (generative) side is learned: a denoiser ε̂(z_t, t).
# With T layers the bound's diffusion term is L_T = Σ_i KL(q(z_s | z_t, x) ‖ p(z_s | z_t));
# as T grows it tightens towards the continuous-time L_∞.
#
# On Gaussian data x ~ N(μ, s² I) the best denoiser is known (E[x | z_t] in closed form), and
# so is every bound: L_∞ = (D/2) ln[(1 + SNR_max s²)/(1 + SNR_min s²)] and
# L_T = Σ_i ½ (SNR_s − SNR_t) D s²/(1 + SNR_t s²). `vdm_bounds.diffusion_bounds` estimates
# them from the same draws for every T.

# %%
MU, S, D = 0.3, 0.7, 8
G0, G1 = -13.3, 5.0                     # log-SNR endpoints, as in the paper
gamma = lambda t: linear_gamma(t, G0, G1)


def best_eps(z, g):
    """E[ε | z_t] for x ~ N(MU, S² I): x̂ = MU + α S² (z − α MU)/(α² S² + σ²)."""
    a2, s2 = jax.nn.sigmoid(-g)[:, None], jax.nn.sigmoid(g)[:, None]
    x_hat = MU + jnp.sqrt(a2) * S ** 2 * (z - jnp.sqrt(a2) * MU) / (a2 * S ** 2 + s2)
    return (z - jnp.sqrt(a2) * x_hat) / jnp.sqrt(s2)


x = MU + S * jax.random.normal(jax.random.key(0), (2000 if SMOKE else 20000, D))
T_list = (1, 2, 5, 10, 100, 1000, 0)
estimates = vdm_bounds.diffusion_bounds(x, jax.random.key(1), gamma_fn=gamma, eps_fn=best_eps,
                                        timesteps=T_list, num_draws=4)


def closed_form(T):
    snr = lambda t: np.exp(-np.asarray(gamma(jnp.asarray(t, jnp.float32)), np.float64))
    if T == 0:
        return 0.5 * D * np.log((1 + np.exp(-G0) * S ** 2) / (1 + np.exp(-G1) * S ** 2))
    t = np.arange(1, T + 1) / T
    return float(np.sum(0.5 * (snr(t - 1 / T) - snr(t)) * D * S ** 2 / (1 + snr(t) * S ** 2)))


print(" T      estimate (nats)    closed form")
for T in T_list:
    values = np.asarray(estimates[T], np.float64)
    stderr = values.std() / np.sqrt(values.size)
    print(f"{'∞' if T == 0 else T:>5}  {values.mean():8.3f} ± {stderr:.3f}   {closed_form(T):8.3f}")

# %% [markdown]
# The bound falls monotonically with T and meets the continuous-time value: more layers
# in the hierarchy, a tighter bound, at the price of one denoiser call per layer when
# sampling.
#
# ## 4. Ancestral sampling
#
# Sampling walks down the same hierarchy: z₁ ~ N(0, I), then z_s ~ p(z_s | z_t) for
# t = 1 … 1/T (`vdm.ancestral_sample`). With the best denoiser, z₀/α₀ approaches the data
# distribution N(0.3, 0.7²) per dimension as the number of steps grows: each step's
# Gaussian p(z_s | z_t) is exact only in the limit of small steps.

# %%
z1 = jax.random.normal(jax.random.key(2), (2000 if SMOKE else 20000, D))
alpha_0 = float(jnp.sqrt(jax.nn.sigmoid(-gamma(0.0))))
for steps in (50, 200, 1000):
    z0 = vdm.ancestral_sample(z1, jax.random.key(3), gamma_fn=gamma, eps_fn=best_eps,
                              steps=steps)
    x0 = np.asarray(z0) / alpha_0
    print(f"{steps:5d} steps: mean {x0.mean():.3f} (data {MU}), std {x0.std():.3f} (data {S})")
plt.hist(x0.ravel(), bins=60, density=True, alpha=0.6, label="ancestral samples, 1000 steps")
grid = np.linspace(-2, 2.6, 200)
plt.plot(grid, np.exp(-0.5 * ((grid - MU) / S) ** 2) / (S * np.sqrt(2 * np.pi)), label="data")
plt.legend();

# %% [markdown]
# Where next: `experiments/configs/fashion_mnist_vdm.py` trains a VDM on Fashion-MNIST
# (`:8bit`, or `:latent` for a VDM prior over a VAE's latent), and
# `experiments/configs/fashion_mnist_deep_hvae.py` trains the deep HVAE; `docs/models.md`
# describes every family.
