"""The variational diffusion model (Kingma, Salimans, Poole & Ho 2021) and its loss terms.

Conventions (variance preserving, as the paper): z_t = α_t x̃ + σ_t ε, α_t² = sigmoid(−γ(t)),
σ_t² = sigmoid(γ(t)), SNR(t) = exp(−γ(t)) (``schedules``). Pixels k ∈ {0, …, V − 1}
(V = 256 for 8-bit images, V = 2 for binarized ones) enter as the bin centres
x̃ = 2 (k + ½)/V − 1 ∈ (−1, 1): 8-bit values at ±(1 − 1/256) … , binary ones at ±½.

The negative ELBO per example, in nats, is recon + prior + diffusion:

* recon = −log p(x | z₀): a factorised decoder that is an exact probability mass: per pixel
  the V-way categorical with logits −½ SNR₀ (z₀/α₀ − x̃_j)² over the centres x̃_j
  (``distributions.Categorical256`` for 8 bits; for V = 2 it is a Bernoulli with logit
  SNR₀ · z₀/α₀, since x̃ = ±½).
* prior = KL(q(z₁|x) ‖ N(0, I)), closed form.
* diffusion, in continuous time ½ E_{t~U(0,1)} γ′(t) ‖ε − ε̂(z_t, γ_t)‖² (γ′ by ``jax.jvp``),
  or with T steps Σ_i KL(q(z_s|z_t, x) ‖ p(z_s|z_t)) (s = (i−1)/T, t = i/T), estimated from
  one step as ½ T expm1(γ_t − γ_s) ‖ε − ε̂‖², or summed in closed form along a whole drawn
  trajectory (``trajectory=True``; each step's KL is ½ (SNR_s − SNR_t) ‖x̃ − x̂‖²).

``terms`` follows the models' contract (DESIGN.md): kl = {"prior": [B], "diffusion": [B]}.
Only the discrete-time trajectory gives per-draw log importance weights
log p(x, z_{0..T}) − log q(z_{0..T} | x) (``exact_log_weights``); continuous time and the
one-step estimator fill ``log_pz`` / ``log_qz`` so that log_px_z + log_pz − log_qz averages
to the ELBO estimate, but importance sampling (IWAE, ``evaluate.log_likelihood``) is valid
only for the discrete-time trajectory model.

The pure functions take ``gamma_fn`` (t [...] -> γ [...], elementwise) and ``eps_fn``
(z [N, ...], γ [N] -> ε̂ [N, ...]) so tests can run them with an analytic denoiser.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax.ops import random
from vae_jax.models.common import base_grid
from vae_jax.models.registry import register
from vae_jax.models.vdm.nets import ScoreNet
from vae_jax.models.vdm.schedules import (NoiseSchedule, alpha_sigma_sq, discretize_times,
                                          sample_times)

GammaFn = Callable[[jax.Array], jax.Array]
EpsFn = Callable[[jax.Array, jax.Array], jax.Array]
LIKELIHOODS = ("categorical256", "bernoulli")


def _per(v: jax.Array, x: jax.Array) -> jax.Array:
    """[N] (or a scalar) -> broadcastable against x [N, ...]."""
    v = jnp.asarray(v)
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _sum_event(v: jax.Array) -> jax.Array:
    """[N, ...] -> [N]."""
    return jnp.sum(v.reshape(v.shape[0], -1), axis=-1)


# ------------------------------------------------------------------- the diffusion maths

def diffuse(x: jax.Array, gamma: jax.Array, eps: jax.Array) -> jax.Array:
    """z_t = α x + σ ε: x, eps [N, ...], gamma [N] or scalar -> [N, ...]."""
    a2, s2 = alpha_sigma_sq(_per(gamma, x))
    return jnp.sqrt(a2) * x + jnp.sqrt(s2) * eps


def prior_kl(x: jax.Array, gamma_1: jax.Array) -> jax.Array:
    """KL(q(z₁|x) ‖ N(0, I)) with q(z₁|x) = N(α₁ x, σ₁²): x [N, ...] -> [N].

    Per dimension ½(α₁² x² + σ₁² − 1 − log σ₁²) = ½(α₁² (x² − 1) − log sigmoid(γ₁)).
    """
    g = _per(gamma_1, x)
    return _sum_event(0.5 * (jax.nn.sigmoid(-g) * (x * x - 1.0) - jax.nn.log_sigmoid(g)))


def diffusion_loss_continuous(x: jax.Array, t: jax.Array, eps: jax.Array, *,
                              gamma_fn: GammaFn, eps_fn: EpsFn) -> jax.Array:
    """½ γ′(t) ‖ε − ε̂(z_t, γ_t)‖², one draw per example: x, eps [N, ...], t [N] -> [N].

    γ′ by forward-mode differentiation of ``gamma_fn`` (``jax.jvp``). Averaged over
    t ~ U(0, 1) and ε ~ N(0, I) this is the continuous-time diffusion loss L_∞.
    """
    gamma, dgamma = jax.jvp(gamma_fn, (t,), (jnp.ones_like(t),))
    z = diffuse(x, gamma, eps)
    err = eps - eps_fn(z, gamma)
    return 0.5 * dgamma * _sum_event(err * err)


def diffusion_loss_discrete(x: jax.Array, t: jax.Array, eps: jax.Array, *,
                            gamma_fn: GammaFn, eps_fn: EpsFn, timesteps: int) -> jax.Array:
    """½ T expm1(γ_t − γ_s) ‖ε − ε̂(z_t, γ_t)‖²: x, eps [N, ...], t [N] ~ U[0, 1) -> [N].

    t is mapped to the grid t' = (⌊tT⌋ + 1)/T, s = t' − 1/T. T expm1(γ_t − γ_s) ‖ε − ε̂‖² =
    T (SNR_s − SNR_t) ‖x − x̂‖² (x̂ = (z_t − σ_t ε̂)/α_t), so the average over t and ε is the
    T-step loss L_T = Σ_i E KL(q(z_s|z_t, x) ‖ p(z_s|z_t)).
    """
    s, t = discretize_times(t, timesteps=timesteps)
    g_s, g_t = gamma_fn(s), gamma_fn(t)
    z = diffuse(x, g_t, eps)
    err = eps - eps_fn(z, g_t)
    return 0.5 * timesteps * jnp.expm1(g_t - g_s) * _sum_event(err * err)


def _step(x_ref: jax.Array, z_t: jax.Array, g_s: jax.Array, g_t: jax.Array):
    """Mean and log-std of q(z_s | z_t, x = x_ref) (s < t), all broadcast against z_t.

    With c = σ²_{t|s}/σ_t² = −expm1(γ_s − γ_t):
    mean = α_s ((1 − c) z_t/α_t + c x), variance = c σ_s².
    """
    a2_s, s2_s = alpha_sigma_sq(g_s)
    a2_t, _ = alpha_sigma_sq(g_t)
    c = -jnp.expm1(g_s - g_t)
    mean = jnp.sqrt(a2_s) * (jnp.exp(g_s - g_t) * z_t / jnp.sqrt(a2_t) + c * x_ref)
    log_std = 0.5 * (jax.nn.log_sigmoid(g_s) + jnp.log(c))
    return mean, jnp.broadcast_to(log_std, mean.shape)


def posterior(x: jax.Array, z_t: jax.Array, gamma_s: jax.Array, gamma_t: jax.Array
              ) -> dist.DiagGaussian:
    """q(z_s | z_t, x) for γ_s < γ_t: x, z_t [N, ...], γ [N] or scalars; event = x.shape[1:].

    The model's step p(z_s | z_t) is the same with x replaced by x̂(z_t).
    """
    mean, log_std = _step(x, z_t, _per(gamma_s, z_t), _per(gamma_t, z_t))
    return dist.DiagGaussian(mean, log_std, event_ndim=z_t.ndim - 1)


def denoise(z_t: jax.Array, gamma_t: jax.Array, eps_hat: jax.Array) -> jax.Array:
    """x̂ = (z_t − σ_t ε̂)/α_t: [N, ...]."""
    a2, s2 = alpha_sigma_sq(_per(gamma_t, z_t))
    return (z_t - jnp.sqrt(s2) * eps_hat) / jnp.sqrt(a2)


def trajectory_terms(x: jax.Array, key: jax.Array, *, gamma_fn: GammaFn, eps_fn: EpsFn,
                     timesteps: int) -> dict[str, jax.Array]:
    """One trajectory z₁ → z_{(T−1)/T} → … → z₀ per example, drawn from q(· | x).

    x: [N, ...]. z₁ ~ q(z₁|x), then z_s ~ q(z_s | z_t, x) for t = i/T, i = T … 1 (one
    ``lax.scan``; step i draws with ``fold_in(key, i)``, z₁ with ``fold_in(key, 0)``).
    Returns::

      z0:        [N, ...] the trajectory's z₀
      diffusion: [N] Σ_i KL(q(z_s|z_t, x) ‖ p(z_s|z_t)) given the drawn z_t (closed form)
      log_p:     [N] log p(z₁) + Σ_i log p(z_s | z_t)
      log_q:     [N] log q(z₁|x) + Σ_i log q(z_s | z_t, x)

    log_p and log_q omit the same constants (½ log 2π per dimension and each step's
    log σ, equal in p and q), so log_p − log_q is exact and stays accurate in float32.
    """
    g1 = gamma_fn(jnp.float32(1.0))
    a2_1, s2_1 = alpha_sigma_sq(g1)
    eta = random.normal(jax.random.fold_in(key, 0), x.shape, x.dtype)
    z1 = jnp.sqrt(a2_1) * x + jnp.sqrt(s2_1) * eta
    log_p = _sum_event(-0.5 * z1 * z1)
    log_q = _sum_event(-0.5 * eta * eta - 0.5 * jax.nn.log_sigmoid(g1))

    def body(carry, i):
        z_t, kl, lp, lq = carry
        t, s = i / timesteps, (i - 1.0) / timesteps
        g_t, g_s = gamma_fn(t), gamma_fn(s)
        x_hat = denoise(z_t, g_t, eps_fn(z_t, jnp.broadcast_to(g_t, z_t.shape[:1])))
        mean_q, log_std = _step(x, z_t, g_s, g_t)
        # (mean_q − mean_p)/std = √(SNR_s c) (x − x̂), SNR_s c = SNR_s − SNR_t.
        delta = jnp.sqrt(jnp.exp(-g_s) * -jnp.expm1(g_s - g_t)) * (x - x_hat)
        eta = random.normal(jax.random.fold_in(key, i), z_t.shape, z_t.dtype)
        z_s = mean_q + jnp.exp(log_std) * eta
        kl = kl + 0.5 * _sum_event(delta * delta)
        lq = lq + _sum_event(-0.5 * eta * eta)
        lp = lp + _sum_event(-0.5 * (delta + eta) ** 2)
        return (z_s, kl, lp, lq), None

    zeros = jnp.zeros(x.shape[:1], x.dtype)
    steps = jnp.arange(timesteps, 0, -1)
    (z0, kl, lp, lq), _ = jax.lax.scan(body, (z1, zeros, log_p, log_q), steps)
    return {"z0": z0, "diffusion": kl, "log_p": lp, "log_q": lq}


def ancestral_sample(z1: jax.Array, key: jax.Array, *, gamma_fn: GammaFn, eps_fn: EpsFn,
                     steps: int) -> jax.Array:
    """z₀ from z₁ [N, ...] by ``steps`` draws z_s ~ p(z_s | z_t) (step i uses fold_in(key, i))."""
    def body(z_t, i):
        t, s = i / steps, (i - 1.0) / steps
        g_t, g_s = gamma_fn(t), gamma_fn(s)
        x_hat = denoise(z_t, g_t, eps_fn(z_t, jnp.broadcast_to(g_t, z_t.shape[:1])))
        mean, log_std = _step(x_hat, z_t, g_s, g_t)
        eta = random.normal(jax.random.fold_in(key, i), z_t.shape, z_t.dtype)
        return mean + jnp.exp(log_std) * eta, None

    return jax.lax.scan(body, z1, jnp.arange(steps, 0, -1))[0]


# ----------------------------------------------------------------------------- pixels

def num_values(likelihood: str) -> int:
    """V: 256 for "categorical256", 2 for "bernoulli"."""
    if likelihood not in LIKELIHOODS:
        raise ValueError(f"The VDM decoder is exact only for {LIKELIHOODS}; got likelihood="
                         f"{likelihood!r}. Set config.model.likelihood to one of them.")
    return dist.NUM_BINS if likelihood == "categorical256" else 2


def pixel_targets(x: jax.Array, *, likelihood: str) -> jax.Array:
    """Model inputs x [..] (uint8/255 or binary {0, 1}) -> bin centres x̃ = 2(k + ½)/V − 1."""
    v = num_values(likelihood)
    k = dist.pixel_index(x) if v == dist.NUM_BINS else jnp.clip(jnp.round(x), 0, 1)
    return 2.0 * (k.astype(jnp.float32) + 0.5) / v - 1.0


def pixel_likelihood(z0: jax.Array, gamma_0: jax.Array, *, likelihood: str):
    """p(x | z₀) for z₀ [N, H, W, C]: Categorical256 or Bernoulli, batch [N], event [H, W, C].

    Logits −½ SNR₀ (z₀/α₀ − x̃_j)² over the V centres; with V = 2 their difference, the
    Bernoulli logit, is SNR₀ · z₀/α₀.
    """
    v = num_values(likelihood)
    a2, _ = alpha_sigma_sq(gamma_0)
    u = z0 / jnp.sqrt(a2)
    snr0 = jnp.exp(-gamma_0)
    if v == 2:
        return dist.Bernoulli(snr0 * u, event_ndim=z0.ndim - 1)
    centres = 2.0 * (jnp.arange(v, dtype=z0.dtype) + 0.5) / v - 1.0
    logits = -0.5 * snr0 * (u[..., None] - centres) ** 2
    return dist.Categorical256(logits, event_ndim=z0.ndim - 1)


# ----------------------------------------------------------------------------- modules

class Diffusion(nn.Module):
    """The diffusion part of a VDM over data y ``[N, *event]`` (pixels' x̃ or a VAE's latent).

    Attributes:
      schedule: a ``NoiseSchedule``.
      score_net: (z ``[N, *event]``, γ [N]) -> ε̂ ``[N, *event]``.
      timesteps: 0 for continuous time; T > 0 for T discrete steps.
      trajectory: discrete time only: sum the T closed-form KLs along one drawn trajectory
        (exact log importance weights, T network calls per draw); False: the unbiased
        one-step estimate ½ T expm1(γ_t − γ_s) ‖ε − ε̂‖² (one call; no exact weights).
      antithetic: low-discrepancy times over the N·L draws (else i.i.d.).
      sample_steps: ancestral steps for continuous-time models (discrete: T).
    """

    schedule: nn.Module
    score_net: nn.Module
    timesteps: int = 0
    trajectory: bool = True
    antithetic: bool = True
    sample_steps: int = 200

    @property
    def exact_log_weights(self) -> bool:
        return self.timesteps > 0 and self.trajectory

    def endpoints(self) -> tuple[jax.Array, jax.Array]:
        return self.schedule.endpoints()

    def draws(self, y: jax.Array, key: jax.Array, num_samples: int) -> dict[str, jax.Array]:
        """L = num_samples draws of the diffusion terms for y [B, ...]; each [L, B] but z0.

        Returns prior (KL(q(z₁|y) ‖ N(0, I))), diffusion, z0 [L, B, ...] (a draw of
        q(z₀|y), or the trajectory's), and log_p, log_q: with ``exact_log_weights``
        log p(z_{0..1}) and log q(z_{0..1} | y) (up to a shared constant); otherwise
        log_p = −(prior + diffusion), log_q = 0.
        """
        L, B = num_samples, y.shape[0]
        yy = jnp.broadcast_to(y, (L, *y.shape)).reshape(L * B, *y.shape[1:])
        gamma_fn = self.schedule.gamma_fn()
        g0, g1 = self.endpoints()
        prior = prior_kl(yy, g1)
        unflat = lambda a: a.reshape(L, B, *a.shape[1:])  # noqa: E731
        if self.exact_log_weights:
            if self.is_initializing():  # create the net's parameters outside the scan
                self.score_net(yy, jnp.broadcast_to(g1, yy.shape[:1]))
            out = trajectory_terms(yy, key, gamma_fn=gamma_fn, eps_fn=self.score_net,
                                   timesteps=self.timesteps)
            return {"prior": unflat(prior), **{k: unflat(v) for k, v in out.items()}}
        k_t, k_eps, k_0 = jax.random.split(key, 3)
        t = sample_times(k_t, L * B, antithetic=self.antithetic)
        eps = random.normal(k_eps, yy.shape, yy.dtype)
        if self.timesteps > 0:
            diff = diffusion_loss_discrete(yy, t, eps, gamma_fn=gamma_fn, eps_fn=self.score_net,
                                           timesteps=self.timesteps)
        else:
            diff = diffusion_loss_continuous(yy, t, eps, gamma_fn=gamma_fn,
                                             eps_fn=self.score_net)
        z0 = diffuse(yy, g0, random.normal(k_0, yy.shape, yy.dtype))
        return {"prior": unflat(prior), "diffusion": unflat(diff), "z0": unflat(z0),
                "log_p": unflat(-(prior + diff)), "log_q": jnp.zeros((L, B), yy.dtype)}

    def sample(self, key: jax.Array, shape: Sequence[int], temperature: float = 1.0
               ) -> jax.Array:
        """z₀ ``[*shape]`` by ancestral sampling from z₁ ~ N(0, temperature² I)."""
        k_1, k_steps = jax.random.split(key)
        z1 = temperature * random.normal(k_1, tuple(shape), jnp.float32)
        steps = self.timesteps if self.timesteps > 0 else self.sample_steps
        if self.is_initializing():
            self.score_net(z1, jnp.zeros(z1.shape[:1]))
        return ancestral_sample(z1, k_steps, gamma_fn=self.schedule.gamma_fn(),
                                eps_fn=self.score_net, steps=steps)

    def __call__(self, y: jax.Array, key: jax.Array) -> dict[str, jax.Array]:
        return self.draws(y, key, 1)


class VDM(nn.Module):
    """A variational diffusion model of images x [B, H, W, C] (see the module docstring).

    Attributes:
      image_shape: (H, W, C).
      diffusion: a ``Diffusion`` over [H, W, C].
      likelihood: "categorical256" (8-bit x = pixel/255) or "bernoulli" (binary x).
    """

    image_shape: Sequence[int]
    diffusion: Diffusion
    likelihood: str = "categorical256"

    @property
    def exact_log_weights(self) -> bool:
        """True only for the discrete-time trajectory model: then log_px_z + log_pz − log_qz
        is a log importance weight and IWAE / ``evaluate.log_likelihood`` are valid bounds."""
        return self.diffusion.exact_log_weights

    def terms(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """Per-sample pieces of the bound; x: [B, H, W, C] float.

        Returns (L = num_samples draws of t, ε or trajectories)::

          log_px_z: [L, B]  log p(x | z₀)
          log_pz, log_qz: [L, B]  log p(z_{0..1}), log q(z_{0..1} | x) for the discrete-time
            trajectory model; otherwise −(prior + diffusion) and 0 (see the module docstring)
          kl: {"prior": [B], "diffusion": [B]}  (the diffusion term averaged over the L draws)
        """
        y = pixel_targets(x, likelihood=self.likelihood)
        d = self.diffusion.draws(y, key, num_samples)
        L, B = d["prior"].shape
        g0, _ = self.diffusion.endpoints()
        p = pixel_likelihood(d["z0"].reshape(L * B, *x.shape[1:]), g0, likelihood=self.likelihood)
        x_rep = jnp.broadcast_to(x, (L, *x.shape)).reshape(L * B, *x.shape[1:])
        return {
            "log_px_z": p.log_prob(x_rep).reshape(L, B),
            "log_pz": d["log_p"],
            "log_qz": d["log_q"],
            "kl": {"prior": d["prior"][0], "diffusion": jnp.mean(d["diffusion"], axis=0)},
        }

    def per_example(self, x: jax.Array, key: jax.Array, num_samples: int = 1
                    ) -> dict[str, jax.Array]:
        """{"recon", "prior", "diffusion", "total" (nats), "bpd"}, each [B]; total = −ELBO."""
        t = self.terms(x, key, num_samples)
        out = {"recon": -jnp.mean(t["log_px_z"], axis=0), **t["kl"]}
        out["total"] = out["recon"] + out["prior"] + out["diffusion"]
        out["bpd"] = dist.bits_per_dim(-out["total"], math.prod(x.shape[1:]))
        return out

    def sample_prior(self, key: jax.Array, num: int, temperature: float = 1.0):
        """Ancestral sampling (T steps; ``sample_steps`` in continuous time) from
        z₁ ~ N(0, temperature² I): returns p(x | z₀), batch [num]; ``.mean()`` images."""
        z0 = self.diffusion.sample(key, (num, *self.image_shape), temperature)
        return pixel_likelihood(z0, self.diffusion.endpoints()[0], likelihood=self.likelihood)

    def __call__(self, x: jax.Array, key: jax.Array) -> dict:
        """One draw of ``terms`` (touches every parameter, for ``init``)."""
        return self.terms(x, key, 1)


@register("vdm")
def vdm_model(*, image_shape: Sequence[int], likelihood: str = "categorical256",
              schedule: str = "fixed_linear", gamma_min: float = -13.3, gamma_max: float = 5.0,
              learn_endpoints: bool = False, schedule_hidden: int = 64, channels: int = 32,
              blocks: int = 2, levels: int = 0, fourier_exponents: Sequence[int] = (6, 7),
              embed_dim: int = 32, timesteps: int = 0, trajectory: bool = True,
              antithetic: bool = True, sample_steps: int = 200) -> VDM:
    """A VDM of images (the keyword arguments are ``config.model`` fields).

    likelihood: "categorical256" (8-bit) or "bernoulli" (binarized). schedule: see
    ``schedules.SCHEDULES``. channels / blocks / levels / fourier_exponents / embed_dim:
    the ``ScoreNet``. timesteps = 0: continuous time; T > 0: discrete (``trajectory``: the
    whole T-step trajectory per draw, exact log weights; else the one-step estimator).
    """
    num_values(likelihood)
    if timesteps < 0 or sample_steps <= 0:
        raise ValueError(f"config.model.timesteps={timesteps} must be >= 0 (0: continuous "
                         f"time) and sample_steps={sample_steps} positive.")
    if levels:
        base_grid(image_shape, levels, f"The score U-Net (levels={levels})",
                  "Set config.model.levels lower (0: no downsampling).")
    sched = NoiseSchedule(schedule, gamma_min, gamma_max, learn_endpoints, schedule_hidden)
    net = ScoreNet(channels, blocks, levels, tuple(fourier_exponents), embed_dim,
                   gamma_min, gamma_max)
    diffusion = Diffusion(sched, net, timesteps, trajectory, antithetic, sample_steps)
    return VDM(tuple(image_shape), diffusion, likelihood)
