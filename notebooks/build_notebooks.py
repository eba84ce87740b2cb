"""Write the notebooks in this folder from the cell sources below (outputs stripped).

    python notebooks/build_notebooks.py          # rewrite quickstart.ipynb, losses_from_scratch.ipynb
    python notebooks/build_notebooks.py --check  # exit 1 if the committed files differ

Edit the cells here, not in Jupyter, so the notebooks stay reviewable and in sync (the test
suite runs ``--check``). Each notebook reads ``VAE_JAX_NOTEBOOK_SMOKE=1`` (set by
tests/test_notebooks.py) to shrink its training so it runs in well under two minutes on CPU.
"""

from __future__ import annotations

import os
import sys
import textwrap

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_URL = "https://github.com/vae-jax/vae_jax"  # where Colab installs the package from
COLAB = "https://colab.research.google.com/github/vae-jax/vae_jax/blob/main/notebooks/"

INSTALL = f'''\
# Colab: install vae_jax from its repository. Skipped when vae_jax is importable already
# (a local checkout with `pip install -e .`, or CI, which runs offline).
try:
    import vae_jax
except ImportError:
    %pip install -q "vae_jax[notebooks] @ git+{REPO_URL}"
    import vae_jax
print("vae_jax", vae_jax.__version__)'''

ACCELERATOR = '''\
# JAX picks the runtime's accelerator by itself: Runtime > Change runtime type > GPU / TPU.
import jax

print("JAX", jax.__version__, "| backend:", jax.default_backend(), "|", jax.device_count(),
      "device(s):", [d.device_kind for d in jax.devices()])'''


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


def quickstart() -> nbformat.NotebookNode:
    cells = [
        md(f"""
        # vae_jax quickstart: train a VAE on Fashion-MNIST

        [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB}quickstart.ipynb)

        This notebook calls the same public functions as the command line
        (`python -m experiments.main --config=experiments/configs/default.py --workdir=...`):
        `vae_jax.train_and_evaluate` trains the default MLP VAE (784-500-20, Bernoulli pixels,
        dynamic binarization, Adam 1e-3), then we plot its loss curve, look at reconstructions
        and prior samples, estimate log p(x), reload its checkpoint and write the pictures that
        `--mode=sample` writes.
        """),
        code(INSTALL),
        code(ACCELERATOR),
        md("""
        ## Configuration

        The config is the CLI's `experiments/configs/default.py`; change fields as you would with
        `--config.train.num_epochs=3`. `SMOKE` (set by the test suite through
        `VAE_JAX_NOTEBOOK_SMOKE=1`) shrinks everything so the notebook runs in CI on a CPU.
        """),
        code("""
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
        print(config.model)
        """),
        md("""
        ## Data

        `vae_jax.data.load("fashion_mnist")` reads the real IDX files from
        `/usr/share/datasets/fashion-mnist` (Debian's `dataset-fashion-mnist` package) or a
        prepared TensorFlow Datasets copy. **On Colab** neither exists, so we opt in to the
        tfds download (the CLI's `--config.data.download=True`; it needs internet).
        """),
        code("""
        if not os.path.isdir(vae_jax.data.FASHION_MNIST_DIR):
            config.data.download = True   # Colab: tfds downloads and prepares it once
        ds = vae_jax.data.load(config.data.name, download=config.data.download)
        print(ds.name, "train", ds.train_images.shape, "test", ds.test_images.shape,
              ds.train_images.dtype)
        plt.figure(figsize=(6, 1.2))
        plt.imshow(vae_jax.sampling.image_grid(ds.test_images[:16], ncols=16)[..., 0], cmap="gray")
        plt.axis("off");
        """),
        md("""
        ## Train

        One call, as the CLI's `--mode=train`: checkpoints, TensorBoard scalars and PNG grids go
        to `WORKDIR`. Running the cell again resumes from the latest checkpoint (and returns at
        once when training has finished).
        """),
        code("""
        state = vae_jax.train_and_evaluate(config, WORKDIR)
        print("trained to step", int(state.step))
        """),
        md("""
        ## Loss curve

        `vae_jax.logs.read_scalars` reads back what the run logged: the training loss (negative
        ELBO, nats per image, averaged over the steps between logs) and the test ELBO.
        """),
        code("""
        scalars = vae_jax.logs.read_scalars(WORKDIR)
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(*scalars["train_loss"], label="train: −ELBO")
        steps, test_elbo = scalars["test_elbo"]
        ax.plot(steps, -test_elbo, "o-", label="test: −ELBO")
        ax.set_xlabel("step"); ax.set_ylabel("nats per image"); ax.legend()
        ax.set_ylim(top=np.percentile(scalars["train_loss"][1], 95));
        """),
        md("""
        ## Reconstructions and prior samples

        `vae_jax.sampling` has pure functions of `(params, inputs, *, model)` returning images in
        [0, 1]: reconstructions decode the posterior mean μ(x); prior samples decode
        z ~ N(0, T² I) (temperature T < 1 gives cleaner, less varied samples).
        """),
        code("""
        import jax
        import jax.numpy as jnp

        from vae_jax import sampling

        model = vae_jax.config.build_model(config, ds.image_shape)
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
        """),
        md("""
        ## log p(x)

        The ELBO is a lower bound on log p(x); importance sampling with k posterior draws
        tightens it (the IWAE bound, which tends to log p(x) as k grows). We use
        `vae_jax.evaluate.log_likelihood` (k up to 5000, chunked) when this vae_jax provides it,
        and otherwise compute the IWAE bound with `vae_jax.losses.iwae_bound` directly.
        """),
        code("""
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
        """),
        md("""
        ## Save and reload a checkpoint

        Training saved orbax checkpoints in `WORKDIR/checkpoints`. `vae_jax.experiment.restore_state`
        rebuilds the `TrainState` (params, optimizer state, EMA params, step), exactly as
        `--mode=eval` and `--mode=sample` do; the restored model reconstructs identically.
        """),
        code("""
        restored = vae_jax.experiment.restore_state(config, WORKDIR, model, ds.image_shape)
        same = jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)),
                                         restored.params, state.params))
        recon2 = sampling.reconstructions(restored.params, x, model=model)
        print("step", int(restored.step), "| params identical:", same,
              "| max reconstruction difference:", float(jnp.max(jnp.abs(recon2 - recon))))
        assert same
        """),
        md("""
        ## The latent space: `--mode=sample`

        `vae_jax.sample_checkpoint(config, workdir)` is `--mode=sample`: it restores
        the checkpoint and writes PNGs of prior samples, reconstructions, linear and spherical
        interpolations between two test images' latents, and traversals of the most active
        latent dimensions. We train a second model with a **2-D latent space**, for which it also
        draws the decoded manifold and a scatter of test encodings coloured by class.
        """),
        code("""
        from PIL import Image


        def show(paths, names, width=14):
            fig, axes = plt.subplots(1, len(names), figsize=(width, width / len(names) * 1.1))
            for ax, name in zip(np.atleast_1d(axes), names):
                ax.imshow(Image.open(paths[name]), cmap="gray")
                ax.set_title(name); ax.axis("off")


        paths = vae_jax.sample_checkpoint(config, WORKDIR)
        show(paths, ["interpolation_linear", "interpolation_spherical"])
        show(paths, ["traversal"], width=6)
        """),
        code("""
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
        vae_jax.train_and_evaluate(config2d, WORKDIR + "_2d")
        paths2d = vae_jax.sample_checkpoint(config2d, WORKDIR + "_2d")
        show(paths2d, ["manifold", "latent_scatter"], width=12)
        """),
        md("""
        The same from a shell:

        ```
        python -m experiments.main --config=experiments/configs/default.py --workdir=runs/default --config.train.num_epochs=3
        python -m experiments.main --config=experiments/configs/default.py --workdir=runs/default --mode=sample --config.sample.temperature=0.7
        python -m experiments.main --config=experiments/configs/default.py --workdir=runs/latent2 --config.model.latent_dim=2
        python -m experiments.main --config=experiments/configs/default.py --workdir=runs/latent2 --config.model.latent_dim=2 --mode=sample
        ```
        """),
    ]
    return _notebook(cells)


def losses_from_scratch() -> nbformat.NotebookNode:
    cells = [
        md(f"""
        # The ELBO from scratch: your model, vae_jax's losses

        [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({COLAB}losses_from_scratch.ipynb)

        Here the model and the training loop are yours, written below in plain Flax and optax.
        From vae_jax we import only `vae_jax.distributions` (the Gaussian posterior and the
        Bernoulli pixels) and `vae_jax.losses` (the ELBO as a pure function), plus
        `vae_jax.data` to read Fashion-MNIST into a uint8 array. We then look at

        1. the ELBO's two terms, reconstruction E_q[log p(x|z)] and prior matching
           KL(q(z|x) ‖ p(z)), during training;
        2. why the reparameterization trick: its gradient against the score-function
           (REINFORCE) estimate of the same gradient;
        3. what β does in the β-weighted ELBO E_q[log p(x|z)] − β KL.
        """),
        code(INSTALL),
        code(ACCELERATOR),
        code("""
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
        STEPS = 150 if SMOKE else 3000
        BATCH = 128

        folder = vae_jax.data.FASHION_MNIST_DIR   # Colab: download=True fetches it with tfds
        ds = vae_jax.data.load("fashion_mnist", download=not os.path.isdir(folder))
        train_x = jnp.asarray(ds.train_images, jnp.float32) / 255.0   # [60000, 28, 28, 1]
        test_x = jnp.asarray(ds.test_images[:2000], jnp.float32) / 255.0
        print(train_x.shape, test_x.shape)
        """),
        md("""
        ## A model of our own

        `vae_jax.losses` needs one method from a model: `terms(x, key, num_samples)` returning
        per-sample `log_px_z`, `log_pz`, `log_qz` ([L, B]) and the closed-form KL per latent
        dimension (`{"z": [B, D]}`). The distributions do the maths: `DiagGaussian.sample` is
        the reparameterized draw z = μ + σ ε, `Bernoulli.log_prob` uses `log_sigmoid` (stable
        for any logit).
        """),
        code("""
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
        """),
        md("""
        ## Our training loop

        `losses.elbo(params, x, key, *, model, beta)` returns `(loss, metrics)` for
        `jax.value_and_grad(..., has_aux=True)`; we bind the model with `partial` before
        `jax.jit`, pass β as an array (so changing it does not recompile), binarize each batch
        afresh and fold the step into one base key.
        """),
        code("""
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
        """),
        md("""
        ## The ELBO's two terms

        −ELBO = reconstruction error −E_q[log p(x|z)] + KL(q(z|x) ‖ p(z)). Early on the
        reconstruction term dominates and falls fast; the KL *rises*: the encoder spends nats
        of information about x in z because that buys a better reconstruction.
        """),
        code("""
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
        """),
        md("""
        ## Reparameterization vs score function

        We need ∇_φ E_{q_φ(z)}[f(z)]. Two unbiased estimators from samples z ~ q:

        * **reparameterization**: z = μ + σ ε, gradient ∇_φ f(μ + σ ε) (what `DiagGaussian.sample`
          gives under `jax.grad`);
        * **score function** (REINFORCE): f(z) ∇_φ log q_φ(z), with z held fixed.

        First a case with a closed form: q = N(μ, σ²), f(z) = (z − 3)², so E[f] = (μ − 3)² + σ²
        and ∂/∂μ = 2(μ − 3), ∂/∂log σ = 2σ².
        """),
        code("""
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
        """),
        md("""
        Both are unbiased, but the score-function estimate is far noisier. The same holds
        for the real thing: the gradient of the reconstruction term E_q[log p(x|z)] with respect
        to the posterior mean μ(x) of one test image under the model trained above.
        """),
        code("""
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
        """),
        md("""
        ## β: reconstruction vs prior matching

        Weighting the KL by β (β-VAE) moves the optimum along a rate–distortion curve: β < 1
        buys sharper reconstructions with more nats in z (a larger KL, the *rate*); β > 1 pushes
        q(z|x) towards the prior, switching latent dimensions off, with blurrier reconstructions.
        The true ELBO (β = 1) is best near β = 1.
        """),
        code("""
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
        """),
    ]
    return _notebook(cells)


def _notebook(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
        "accelerator": "GPU",
        "colab": {"provenance": []},
    }
    for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
        cell["id"] = f"cell-{i:02d}"
    return nb


NOTEBOOKS = {"quickstart.ipynb": quickstart, "losses_from_scratch.ipynb": losses_from_scratch}


def render(build) -> str:
    return nbformat.writes(build(), version=4) + "\n"


def main(argv) -> int:
    check = "--check" in argv
    stale = []
    for name, build in NOTEBOOKS.items():
        path = os.path.join(HERE, name)
        text = render(build)
        nbformat.validate(nbformat.reads(text, as_version=4))
        if check:
            with open(path) as f:
                if f.read() != text:
                    stale.append(name)
        else:
            with open(path, "w") as f:
                f.write(text)
            print("wrote", path)
    if stale:
        print(f"Out of date: {stale}; run `python notebooks/build_notebooks.py`.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
