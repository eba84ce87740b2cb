"""Importance-sampled log p(x) against a model whose log-likelihood is known in closed form
(probabilistic PCA), chunk-size invariance, and 1- vs 8-device agreement."""

import functools
import json
import os
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vae_jax.ops.initialize import initialize  # jit(model.init)'s values
from vae_jax import distributions as dist
from vae_jax import evaluate, models
from vae_jax.run import experiment
from vae_jax import precision as precision_lib
from vae_jax.ops import compile as xla_compile

from conftest import requires_fashion_mnist, run_python

DX, DZ, SIGMA = 6, 2, 0.5


def ppca(seed=0):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, σ²I) with orthogonal columns of W, so the exact
    posterior N(Σ Wᵀ(x − b)/σ², Σ), Σ = (I + WᵀW/σ²)⁻¹, is diagonal (a VAE encoder can be it)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(DX, DZ)))
    w = q * np.array([2.0, 1.0])                 # WᵀW = diag(4, 1)
    b = rng.normal(size=DX)
    cov_post = np.linalg.inv(np.eye(DZ) + w.T @ w / SIGMA ** 2)
    return w, b, cov_post


def exact_log_px(x, w, b):
    """log N(x; b, WWᵀ + σ²I) for x [N, DX] (float64)."""
    cov = w @ w.T + SIGMA ** 2 * np.eye(DX)
    diff = x - b
    _, logdet = np.linalg.slogdet(cov)
    maha = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (maha + logdet + DX * np.log(2 * np.pi))


def ppca_vae_params(w, b, cov_post, mean_shift=0.0, log_std_shift=0.0):
    """The registry's MLP VAE with no hidden layer and a Gaussian likelihood, its weights set
    to the pPCA decoder (fixed log-scale log σ) and to its exact posterior (optionally
    perturbed: an imperfect encoder)."""
    model = models.get("mlp", image_shape=(DX, 1, 1), latent_dim=DZ, hidden=(),
                       likelihood="gaussian")
    a = cov_post @ w.T / SIGMA ** 2               # posterior mean = A (x − b)
    enc_k = np.zeros((DX, 2 * DZ))
    enc_k[:, :DZ] = a.T
    enc_b = np.concatenate([-a @ b + mean_shift, 0.5 * np.log(np.diag(cov_post)) + log_std_shift])
    dec_k = np.zeros((DZ, 2 * DX))
    dec_k[:, 0::2] = w.T                          # decoder outputs interleave (loc, log_scale)
    dec_b = np.zeros(2 * DX)
    dec_b[0::2], dec_b[1::2] = b, np.log(SIGMA)
    p = {"params": {"encoder": {"out": {"kernel": enc_k, "bias": enc_b}},
                    "decoder": {"out": {"kernel": dec_k, "bias": dec_b}}}}
    return model, jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), p)


class PPCATerms(nn.Module):
    """A hand-written model exposing only the ``terms`` interface (no encode/decode), so the
    evaluation takes its generic path. q(z|x) = N(A(x − b) + shift, diag(Σ)·e^{2·shift})."""

    w: np.ndarray
    b: np.ndarray
    cov_post: np.ndarray
    shift: float = 0.0

    def terms(self, x, key, num_samples=1):
        x = x.reshape(x.shape[0], -1)
        a = jnp.asarray(self.cov_post @ self.w.T / SIGMA ** 2, jnp.float32)
        q = dist.DiagGaussian(
            (x - self.b) @ a.T + self.shift,
            jnp.broadcast_to(0.5 * jnp.log(jnp.diag(self.cov_post)) + self.shift,
                             (x.shape[0], DZ)).astype(jnp.float32))
        z = q.sample(key, num_samples)                                   # [L, B, DZ]
        lik = dist.DiagGaussian(z @ jnp.asarray(self.w.T, jnp.float32) + self.b,
                                jnp.full((DX,), np.log(SIGMA), jnp.float32))
        return {"log_px_z": lik.log_prob(x), "log_pz": dist.standard_normal((DZ,)).log_prob(z),
                "log_qz": q.log_prob(z),
                "kl": {"z": dist.gaussian_kl_elementwise(q.mean, q.log_std)}}

    def __call__(self, x, key):
        return self.terms(x, key)


@pytest.fixture(scope="module")
def data():
    w, b, cov_post = ppca()
    rng = np.random.default_rng(1)
    x = rng.normal(size=(64, DZ)) @ w.T + b + SIGMA * rng.normal(size=(64, DX))
    return w, b, cov_post, x.reshape(64, DX, 1, 1).astype(np.float32)


def _ll(model, params, x, k, chunk=None, key=3, batch_size=64, mesh=None):
    return evaluate.log_likelihood(params, x, jax.random.key(key), model=model, num_samples=k,
                                   chunk=chunk or k, batch_size=batch_size, mesh=mesh)


@pytest.mark.slow
def test_exact_posterior_gives_exact_log_px_for_any_k(data):
    w, b, cov_post, x = data
    truth = exact_log_px(x.reshape(len(x), DX).astype(np.float64), w, b)
    model, params = ppca_vae_params(w, b, cov_post)
    generic = PPCATerms(w, b, cov_post)
    for k, chunk in ((1, 1), (7, 3)):
        np.testing.assert_allclose(_ll(model, params, x, k, chunk)["log_px"], truth, atol=2e-4)
        np.testing.assert_allclose(_ll(generic, {}, x, k, chunk)["log_px"], truth, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["vae", "generic"])
def test_imperfect_encoder_converges_to_exact_log_px(data, which):
    """Mean gap (estimate − truth) over 64 points: at k = 1 it is −KL(q || p(z|x)) (well
    below zero; the KL is in closed form); by k = 20,000 it is zero within a few standard
    errors."""
    w, b, cov_post, x = data
    truth = exact_log_px(x.reshape(len(x), DX).astype(np.float64), w, b)
    shift = 0.5
    if which == "vae":
        model, params = ppca_vae_params(w, b, cov_post, mean_shift=shift, log_std_shift=shift)
    else:
        model, params = PPCATerms(w, b, cov_post, shift=shift), {}
    # KL(q || exact posterior): both diagonal Gaussians with the same covariance axes.
    post = dist.DiagGaussian(jnp.zeros(DZ), 0.5 * jnp.log(jnp.diag(cov_post)))
    kl = float(dist.DiagGaussian(jnp.full(DZ, shift), post.log_std + shift).kl(post))
    gaps, errs = [], []
    for k in (1, 20_000):
        # Average over 8 keys so the k = 1 figure's noise is small, too.
        est = np.mean([_ll(model, params, x, k, chunk=2000, key=s)["log_px"]
                       for s in range(8 if k == 1 else 1)], axis=0)
        gap = est - truth
        gaps.append(gap.mean())
        errs.append(gap.std(ddof=1) / np.sqrt(len(gap)))
    assert abs(gaps[0] + kl) < 4 * errs[0] + 0.02, (gaps[0], -kl)  # k = 1: the ELBO
    assert gaps[0] < -0.3                                           # clearly a loose bound
    assert abs(gaps[1]) < 4 * errs[1] + 2e-3, (gaps, errs)          # converged
    assert abs(gaps[1]) < abs(gaps[0]) / 50


@pytest.mark.slow
def test_chunked_equals_unchunked_and_summary():
    model = models.get("mlp", image_shape=(8, 8, 1), latent_dim=4, hidden=(32,))
    params = initialize(model.init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)),
                        jax.random.key(1))
    images = np.random.default_rng(0).integers(0, 256, (24, 8, 8, 1), dtype=np.uint8)
    kw = dict(model=model, num_samples=60, batch_size=8, binarization="dynamic")
    whole = evaluate.log_likelihood(params, images, jax.random.key(2), chunk=60, **kw)
    for chunk in (7, 16):  # 7 and 16 do not divide 60: the padded samples must not count
        part = evaluate.log_likelihood(params, images, jax.random.key(2), chunk=chunk, **kw)
        np.testing.assert_allclose(part["log_px"], whole["log_px"], rtol=1e-5, atol=1e-3)
    v = whole["log_px"].astype(np.float64)
    assert whole["mean"] == pytest.approx(v.mean())
    assert whole["stderr"] == pytest.approx(v.std(ddof=1) / np.sqrt(len(v)))
    assert whole["bpd"] == pytest.approx(-v.mean() / (64 * np.log(2)))


@pytest.mark.slow
def test_eight_devices_agree_with_one():
    code = textwrap.dedent("""
        import json, jax, jax.numpy as jnp, numpy as np
        from vae_jax import evaluate, models, parallel
        assert jax.device_count() == 8, jax.devices()
        model = models.get("mlp", image_shape=(8, 8, 1), latent_dim=4, hidden=(32,))
        params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)), jax.random.key(1))
        images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 1), dtype=np.uint8)
        out = {}
        for n in (1, 8):
            r = evaluate.log_likelihood(params, images, jax.random.key(2), model=model,
                                        num_samples=30, chunk=7, batch_size=16,
                                        binarization="dynamic",
                                        mesh=parallel.data_mesh(jax.devices()[:n]))
            out[n] = r["log_px"].tolist()
        print(json.dumps(out))
    """)
    out = json.loads(run_python(code, devices=8).strip().splitlines()[-1])
    np.testing.assert_allclose(out["8"], out["1"], rtol=1e-5, atol=1e-3)
    assert len(out["1"]) == 40 and np.all(np.isfinite(out["1"]))


@requires_fashion_mnist
@pytest.mark.slow
def test_iwae_training_then_eval_mode_writes_eval_json(tmp_path):
    """config.loss.name = "iwae" trains; --mode=eval's function restores the checkpoint and
    writes ELBO, IWAE-k and log p(x) with their k, step, data set and seed."""
    from experiments.configs import smoke

    config = smoke.get_config()
    config.loss.name, config.loss.num_samples = "iwae", 5
    config.train.num_steps, config.train.eval_every_steps = 10, 10
    config.eval.batch_size = config.eval.ll_batch_size = 100
    config.eval.num_test_images, config.eval.iwae_k = 200, 5
    config.eval.num_importance_samples, config.eval.chunk = 40, 16
    workdir = str(tmp_path / "run")
    experiment.train_and_evaluate(config, workdir)
    result = experiment.evaluate_checkpoint(config, workdir)
    with open(os.path.join(workdir, "eval.json")) as f:
        saved = json.load(f)
    assert saved == pytest.approx(result)
    assert (saved["step"], saved["log_px_k"], saved["iwae_k"]) == (10, 40, 5)
    assert (saved["dataset"], saved["seed"], saved["num_test_images"]) == ("fashion_mnist", 0, 200)
    # Same binarized images for all three: the bounds are ordered (up to Monte Carlo noise).
    assert saved["test_elbo"] - 1.0 < saved["test_iwae"] < saved["test_log_px"] + 1.0
    assert saved["test_log_px"] > saved["test_elbo"]


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian", "discretized_logistic_mix5",
                                        "categorical256"])
@pytest.mark.slow
def test_fast_path_equals_direct_log_weight(likelihood):
    """k = 1: the chunked fast path (flattened event) equals log p(x|z) + log p(z) − log q(z|x)
    computed directly with the model's own distributions for the same z."""
    model = models.get("mlp", image_shape=(4, 4, 1), latent_dim=2, hidden=(8,),
                       likelihood=likelihood)
    params = initialize(model.init, jax.random.key(0), jnp.zeros((1, 4, 4, 1)),
                        jax.random.key(0))
    x = jnp.asarray(np.random.default_rng(0).integers(0, 256, (3, 4, 4, 1)) / 255.0,
                    jnp.float32)
    if likelihood == "bernoulli":
        x = jnp.round(x)
    key = jax.random.key(1)
    got = evaluate.log_importance_sampled(params, x, key, model=model, num_samples=1, chunk=1)
    q = model.apply(params, x, method="encode")
    z = q.mean + q.std * jax.random.normal(jax.random.fold_in(key, 0), (3, 2))
    want = (model.apply(params, z, method="decode").log_prob(x)
            + model.apply(params, method=lambda m: m.prior()).log_prob(z) - q.log_prob(z))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def _dot_precisions(fn, *args) -> set[str]:
    text = jax.jit(fn).lower(*args).as_text()
    return {line.split("precision = ")[1].split("]")[0] + "]"
            for line in text.splitlines() if "dot_general" in line and "precision" in line}


def test_evaluation_asks_for_float32_products_and_training_for_the_default():
    """GPUs run float32 dots in TF32 at JAX's default precision; every evaluation figure is
    computed at 'highest' (float32) unless asked otherwise, the train step at the default."""
    model = models.get("mlp", image_shape=(4, 4, 1), latent_dim=2, hidden=(8,))
    x = jnp.zeros((2, 4, 4, 1), jnp.uint8)
    key = jax.random.key(0)
    params = initialize(model.init, key, x.astype(jnp.float32), key)
    for precision, expected in (("highest", "[HIGHEST, HIGHEST]"),
                                ("default", "[DEFAULT, DEFAULT]")):
        elbo_fn = evaluate.make_elbo_fn(model, binarization="static", precision=precision)
        ll_fn = evaluate.make_log_likelihood_fn(model, binarization="static", num_samples=3,
                                                chunk=2, precision=precision)
        for fn in (elbo_fn, ll_fn):
            assert _dot_precisions(fn, params, x, key) == {expected}
    assert _dot_precisions(evaluate.make_elbo_fn(model, binarization="static"),
                           params, x, key) == {"[HIGHEST, HIGHEST]"}
    with pytest.raises(ValueError, match="Unknown matmul precision 'fp64'"):
        precision_lib.at_precision(lambda: None, "fp64")


@pytest.mark.slow
@pytest.mark.skipif(jax.default_backend() != "cpu", reason="an XLA:CPU option")
def test_evaluation_keeps_ynnpack_for_products_only():
    """XLA:CPU's YNNPACK reduce fusions ran the likelihood's pixel sum ~3x slower than
    XLA's loops; evaluation functions compile with YNNPACK for matrix products only."""
    model = models.get("mlp", image_shape=(28, 28, 1), latent_dim=4, hidden=(32,))
    x = jnp.zeros((100, 28, 28, 1), jnp.uint8)
    key = jax.random.key(0)
    params = initialize(model.init, key, x.astype(jnp.float32), key)

    def ynn_reductions(fn) -> int:
        text = fn.lower(params, x, key).compile().as_text()
        bodies = [b for b in text.split("\n\n") if "reduce(" in b]
        ynn = {line.split("calls=%")[1].split(",")[0] for line in text.splitlines()
               if "__ynn_fusion" in line and "calls=%" in line}
        return sum(1 for b in bodies for name in ynn if b.lstrip().startswith(f"%{name} "))

    plain = jax.jit(functools.partial(evaluate.elbo_batch, model=model,
                                      binarization="dynamic", num_samples=1))
    assert xla_compile.eval_compiler_options(), "the option was refused: re-check the speed"
    assert ynn_reductions(plain) > 0  # what XLA does by default (else this test is moot)
    assert ynn_reductions(evaluate.make_elbo_fn(model, binarization="dynamic")) == 0


@pytest.mark.slow
def test_evaluation_functions_nest_inside_jit():
    model = models.get("mlp", image_shape=(4, 4, 1), latent_dim=2, hidden=(8,))
    x = jax.random.randint(jax.random.key(1), (3, 4, 4, 1), 0, 256).astype(jnp.uint8)
    key = jax.random.key(0)
    params = initialize(model.init, key, x.astype(jnp.float32), key)
    for fn in (evaluate.make_elbo_fn(model, binarization="dynamic"),
               evaluate.make_log_likelihood_fn(model, binarization="dynamic", num_samples=4,
                                               chunk=2)):
        outer = jax.jit(lambda p, x, k, fn=fn: fn(p, x, k))
        for name, value in fn(params, x, key).items():
            np.testing.assert_allclose(outer(params, x, key)[name], value, rtol=1e-5,
                                       atol=1e-4)
