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
# # The ELBO from scratch: your model, vae_jax's losses
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/vae-jax/vae_jax/blob/main/notebooks/losses_from_scratch.ipynb)
#
# Here the model and the training loop are yours, written below in plain Flax and optax.
# From vae_jax it imports only `vae_jax.distributions` (the Gaussian posterior and the
# Bernoulli pixels) and `vae_jax.losses` (the ELBO as a pure function), plus
# `vae_jax.data` to read Fashion-MNIST into a uint8 array. Then it looks at
#
# 1. the ELBO's two terms, reconstruction E_q[log p(x|z)] and prior matching
#    KL(q(z|x) ‖ p(z)), during training;
# 2. why the reparameterization trick: its gradient against the score-function
#    (REINFORCE) estimate of the same gradient;
# 3. what β does in the β-weighted ELBO E_q[log p(x|z)] − β KL.

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
from functools import partial

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

from vae_jax import distributions as dist
from vae_jax import losses
import vae_jax.data

SMOKE = os.environ.get("VAE_JAX_NOTEBOOK_SMOKE") == "1"
STEPS = 50 if SMOKE else 3000
BATCH = 128

folder = vae_jax.data.FASHION_MNIST_DIR   # Colab: download=True fetches it with tfds
ds = vae_jax.data.load("fashion_mnist", download=not os.path.isdir(folder))
train_x = jnp.asarray(ds.train_images, jnp.float32) / 255.0   # [60000, 28, 28, 1]
test_x = jnp.asarray(ds.test_images[:2000], jnp.float32) / 255.0
print(train_x.shape, test_x.shape)


# %% [markdown]
# ## A model of your own
#
# `vae_jax.losses` needs one method from a model: `terms(x, key, num_samples)` returning
# per-sample `log_px_z`, `log_pz`, `log_qz` ([L, B]) and the closed-form KL per latent
# dimension (`{"z": [B, D]}`). The distributions do the maths: `DiagGaussian.sample` is
# the reparameterized draw z = μ + σ ε, `Bernoulli.log_prob` uses `log_sigmoid` (stable
# for any logit).

# %%
class MyVAE(nn.Module):
    latent_dim: int = 16
    hidden: int = 256
    image_shape: tuple = (28, 28, 1)

    def setup(self):
        self.enc_hidden = nn.Dense(self.hidden)
        self.enc_mean = nn.Dense(self.latent_dim)
        self.enc_log_std = nn.Dense(self.latent_dim)
        self.dec_hidden = nn.Dense(self.hidden)
        self.dec_logits = nn.Dense(int(np.prod(self.image_shape)))

    def encode(self, x):                       # x [B, 28, 28, 1] -> q(z|x), event [D]
        h = nn.relu(self.enc_hidden(x.reshape(x.shape[0], -1)))
        return dist.DiagGaussian(self.enc_mean(h), self.enc_log_std(h))

    def decode(self, z):                       # z [N, D] -> p(x|z), event [28, 28, 1]
        logits = self.dec_logits(nn.relu(self.dec_hidden(z)))
        return dist.Bernoulli(logits.reshape(z.shape[0], *self.image_shape))

    def terms(self, x, key, num_samples=1):
        q = self.encode(x)
        z = q.sample(key, num_samples)          # [L, B, D], differentiable in (μ, σ)
        L, B = z.shape[:2]
        p = self.decode(z.reshape(L * B, -1))
        x_rep = jnp.broadcast_to(x, (L, *x.shape)).reshape(L * B, *x.shape[1:])
        prior = dist.standard_normal((self.latent_dim,))
        return {"log_px_z": p.log_prob(x_rep).reshape(L, B),
                "log_pz": prior.log_prob(z),
                "log_qz": q.log_prob(z),
                "kl": {"z": dist.gaussian_kl_elementwise(q.mean, q.log_std)}}

    def __call__(self, x, key):
        return self.terms(x, key)


model = MyVAE()
params0 = model.init(jax.random.key(0), train_x[:1], jax.random.key(1))
terms = losses.elbo_terms(params0, train_x[:4], jax.random.key(2), model=model)
print({k: v.shape for k, v in terms.items()}, "per-example ELBO:", terms["elbo"])

# %% [markdown]
# ## Your training loop
#
# `losses.elbo(params, x, key, *, model, beta)` returns `(loss, metrics)` for
# `jax.value_and_grad(..., has_aux=True)`; the model is bound with `partial` before
# `jax.jit`, pass β as an array (so changing it does not recompile), binarize each batch
# afresh and fold the step into one base key.

# %%
optimizer = optax.adam(1e-3)


@partial(jax.jit, donate_argnums=(0, 1))
def train_step(params, opt_state, step, beta, base_key, train_x):
    # train_x is an argument, not a closure: a captured array would be baked into
    # the compiled program as a 188 MB constant.
    key = jax.random.fold_in(base_key, step)
    k_batch, k_bin, k_z = jax.random.split(key, 3)
    idx = jax.random.randint(k_batch, (BATCH,), 0, train_x.shape[0])
    x = jax.random.bernoulli(k_bin, train_x[idx]).astype(jnp.float32)
    loss_fn = partial(losses.elbo, model=model, beta=beta)
    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, k_z)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, metrics


def fit(beta, steps=STEPS, seed=0):
    params = model.init(jax.random.key(seed), train_x[:1], jax.random.key(1))
    opt_state = optimizer.init(params)
    history = []
    for step in range(steps):
        params, opt_state, m = train_step(params, opt_state, step, jnp.float32(beta),
                                          jax.random.key(seed + 100), train_x)
        history.append(jax.device_get(m))
    return params, {k: np.array([h[k] for h in history]) for k in history[0]}


def test_terms(params):
    x = jax.random.bernoulli(jax.random.key(7), test_x).astype(jnp.float32)
    t = losses.elbo_terms(params, x, jax.random.key(8), model=model)
    return {k: float(v.mean()) for k, v in t.items()}


params, hist = fit(beta=1.0)
print("test:", test_terms(params))


# %% [markdown]
# ## The ELBO's two terms
#
# −ELBO = reconstruction error −E_q[log p(x|z)] + KL(q(z|x) ‖ p(z)). Early on the
# reconstruction term dominates and falls fast; the KL *rises*: the encoder spends nats
# of information about x in z because that buys a better reconstruction.

# %%
def smooth(v, n=25):
    n = min(n, len(v))
    return np.convolve(v, np.ones(n) / n, mode="valid")


fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
axes[0].plot(smooth(-hist["log_px_z"]), label="reconstruction −E[log p(x|z)]")
axes[0].plot(smooth(-hist["elbo"]), label="−ELBO", alpha=0.7)
axes[0].set_ylim(top=np.percentile(-hist["elbo"], 90))
axes[1].plot(smooth(hist["kl"]), color="C2", label="KL(q(z|x) ‖ p(z))")
for ax in axes:
    ax.set_xlabel("step"); ax.set_ylabel("nats per image"); ax.legend()

# %% [markdown]
# ## Reparameterization vs score function
#
# The ELBO's gradient needs ∇_φ E_{q_φ(z)}[f(z)]. Two unbiased estimators from samples z ~ q:
#
# * **reparameterization**: z = μ + σ ε, gradient ∇_φ f(μ + σ ε) (what `DiagGaussian.sample`
#   gives under `jax.grad`);
# * **score function** (REINFORCE): f(z) ∇_φ log q_φ(z), with z held fixed.
#
# First a case with a closed form: q = N(μ, σ²), f(z) = (z − 3)², so E[f] = (μ − 3)² + σ²
# and ∂/∂μ = 2(μ − 3), ∂/∂log σ = 2σ².

# %%
mu, log_std = jnp.array([1.0]), jnp.array([np.log(0.5)])
f = lambda z: jnp.sum((z - 3.0) ** 2, axis=-1)
exact = np.array([2 * (1.0 - 3.0), 2 * 0.5 ** 2])


def reparam_grad(theta, key):
    return jax.grad(lambda th: f(dist.DiagGaussian(th[:1], th[1:]).sample(key)))(theta)


def score_grad(theta, key):
    z = jax.lax.stop_gradient(dist.DiagGaussian(theta[:1], theta[1:]).sample(key))
    return f(z) * jax.grad(lambda th: dist.DiagGaussian(th[:1], th[1:]).log_prob(z))(theta)


theta = jnp.concatenate([mu, log_std])
keys = jax.random.split(jax.random.key(3), 2000 if SMOKE else 20000)
g_rep = np.asarray(jax.vmap(reparam_grad, (None, 0))(theta, keys))
g_sf = np.asarray(jax.vmap(score_grad, (None, 0))(theta, keys))
for name, g in [("reparameterization", g_rep), ("score function", g_sf)]:
    print(f"{name:>19}: mean {g.mean(0).round(3)}  std per sample {g.std(0).round(3)}")
print(f"{'exact':>19}: {exact}")

# %% [markdown]
# Both are unbiased, but the score-function estimate is far noisier. The same holds
# for the real thing: the gradient of the reconstruction term E_q[log p(x|z)] with respect
# to the posterior mean μ(x) of one test image under the model trained above.

# %%
x1 = jax.random.bernoulli(jax.random.key(4), test_x[:1]).astype(jnp.float32)
q1 = model.apply(params, x1, method=MyVAE.encode)
log_lik = lambda z: model.apply(params, z, method=MyVAE.decode).log_prob(x1)[0]


def rep_mu(key):
    eps = jax.random.normal(key, q1.mean.shape)
    return jax.grad(lambda m: log_lik(m + q1.std * eps))(q1.mean)[0]


def sf_mu(key):
    z = q1.sample(key)
    score = jax.grad(lambda m: dist.DiagGaussian(m, q1.log_std).log_prob(z)[0])(q1.mean)
    return log_lik(z) * score[0]


keys = jax.random.split(jax.random.key(5), 500 if SMOKE else 5000)
g_rep, g_sf = np.asarray(jax.vmap(rep_mu)(keys)), np.asarray(jax.vmap(sf_mu)(keys))
ratio = g_sf.var(0) / g_rep.var(0)
print("variance ratio score/reparam per latent dim: median", np.median(ratio).round(1),
      "min", ratio.min().round(1))
d = int(np.argmax(np.abs(g_rep.mean(0))))
plt.figure(figsize=(6, 3))
plt.hist(g_sf[:, d], bins=60, alpha=0.6, density=True, label="score function")
plt.hist(g_rep[:, d], bins=60, alpha=0.8, density=True, label="reparameterization")
plt.axvline(g_rep[:, d].mean(), color="k", lw=1)
plt.title(f"one-sample gradient estimates, latent dim {d}"); plt.legend();

# %% [markdown]
# ## β: reconstruction vs prior matching
#
# Weighting the KL by β (β-VAE) moves the optimum along a rate–distortion curve: β < 1
# buys sharper reconstructions with more nats in z (a larger KL, the *rate*); β > 1 pushes
# q(z|x) towards the prior, switching latent dimensions off, with blurrier reconstructions.
# The true ELBO (β = 1) is best near β = 1.

# %%
betas = (0.5, 1.0, 4.0)
results = {}
for beta in betas:
    p = params if beta == 1.0 else fit(beta=beta)[0]   # β = 1 was trained above
    t = test_terms(p)
    q = model.apply(p, test_x[:500], method=MyVAE.encode)
    kl_per_dim = np.asarray(dist.gaussian_kl_elementwise(q.mean, q.log_std)).mean(0)
    active = int(np.sum(kl_per_dim > 0.1))   # dims carrying > 0.1 nat about x
    results[beta] = (p, t, active)
    print(f"β={beta}: reconstruction {-t['log_px_z']:.1f}  KL {t['kl']:.1f}  "
          f"−ELBO {-t['elbo']:.1f} nats;  {active}/{model.latent_dim} active dims")

fig, axes = plt.subplots(1, len(betas) + 1, figsize=(14, 3))
rate = [results[b][1]["kl"] for b in betas]
distortion = [-results[b][1]["log_px_z"] for b in betas]
axes[0].plot(rate, distortion, "o-")
for b in betas:
    axes[0].annotate(f"β={b}", (results[b][1]["kl"], -results[b][1]["log_px_z"]))
axes[0].set_xlabel("rate: KL (nats)"); axes[0].set_ylabel("distortion: −E log p(x|z)")
x8 = test_x[:8]
for ax, b in zip(axes[1:], betas):
    rec = model.apply(results[b][0], x8,
                      method=lambda m, x: m.decode(m.encode(x).mean).mean())
    ax.imshow(np.concatenate([np.hstack(x8[..., 0]), np.hstack(rec[..., 0])]), cmap="gray")
    ax.set_title(f"β = {b}"); ax.axis("off")
