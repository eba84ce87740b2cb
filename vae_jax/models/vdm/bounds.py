"""A diffusion model's bound as a function of its number of steps: L_T for several T, L_∞.

For the parameters of a ``vdm.VDM`` or ``latent_vdm.LatentVDM`` (trained in continuous or
discrete time), ``bounds_vs_timesteps`` gives the negative ELBO per example with the
diffusion term taken as the T-step loss L_T for each T > 0 and as the continuous-time L_∞
for T = 0, with the same schedule, ε-network, decoder and prior. L_T only needs γ on the
grid {0, 1/T, …, 1}, so a continuous-time model can be evaluated at any T (Kingma et al.
2021, Sec. 4: L_T decreases towards L_∞ as T grows, for a fixed model). L_T is estimated
by the unbiased one-step form ½ T expm1(γ_t − γ_s) ‖ε − ε̂‖² (``vdm.diffusion_loss_discrete``).

Every T sees the same draws of t and ε (one key, the same split as ``Diffusion.draws``:
common random numbers), so the differences between the T are estimated far more sharply
than each value. ``diffusion_bounds`` is the same on pure functions (for closed-form
checks with an analytic denoiser).
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax.models.vdm.model import (EpsFn, GammaFn, diffusion_loss_continuous,
                                      diffusion_loss_discrete)
from vae_jax.models.vdm.schedules import sample_times
from vae_jax.ops import random


def diffusion_bounds(y: jax.Array, key: jax.Array, *, gamma_fn: GammaFn, eps_fn: EpsFn,
                     timesteps: Sequence[int], num_draws: int = 1, antithetic: bool = True
                     ) -> dict[int, jax.Array]:
    """{T: [N]}: the diffusion loss of y [N, ...] per example (T = 0: L_∞; T > 0: L_T),
    each the average of ``num_draws`` draws of (t, ε), the same draws for every T."""
    n = y.shape[0]
    yy = jnp.broadcast_to(y, (num_draws, *y.shape)).reshape(num_draws * n, *y.shape[1:])
    k_t, k_eps = jax.random.split(key)
    t = sample_times(k_t, num_draws * n, antithetic=antithetic)
    eps = random.normal(k_eps, yy.shape, yy.dtype)
    out = {}
    for T in timesteps:
        if T == 0:
            d = diffusion_loss_continuous(yy, t, eps, gamma_fn=gamma_fn, eps_fn=eps_fn)
        else:
            d = diffusion_loss_discrete(yy, t, eps, gamma_fn=gamma_fn, eps_fn=eps_fn,
                                        timesteps=int(T))
        out[int(T)] = jnp.mean(d.reshape(num_draws, n), axis=0)
    return out


def with_timesteps(model: nn.Module, timesteps: int) -> nn.Module:
    """The same model (same parameters) whose diffusion term is L_T (T = ``timesteps`` > 0,
    one-step estimate) or L_∞ (0)."""
    if timesteps < 0:
        raise ValueError(f"timesteps={timesteps} must be >= 0 (0: continuous time).")
    diffusion = model.diffusion.clone(timesteps=int(timesteps), trajectory=False)
    return model.clone(diffusion=diffusion)


def bounds_vs_timesteps(model: nn.Module, params, x: jax.Array, key: jax.Array, *,
                        timesteps: Sequence[int] = (10, 100, 1000, 0), num_draws: int = 1
                        ) -> dict[int, dict[str, jax.Array]]:
    """Per-example negative ELBO of images x [B, H, W, C] (model inputs: uint8/255 or
    binary) with L_T for each T in ``timesteps`` (0: L_∞). ``key`` is shared by every T.

    Returns {T: {"recon", <each kl term: "prior", "diffusion", ("encoder")>, "total",
    "bpd"}}, each [B], in nats except bpd = total / (H W C ln 2) (bits/dim, meaningful for
    8-bit likelihoods). Only "diffusion" (and so "total", "bpd") depends on T.
    """
    out = {}
    dims = math.prod(x.shape[1:])
    for T in timesteps:
        terms = with_timesteps(model, T).apply(params, x, key, num_draws, method="terms")
        row = {"recon": -jnp.mean(terms["log_px_z"], axis=0), **terms["kl"]}
        row["total"] = row["recon"] + sum(terms["kl"].values())
        row["bpd"] = dist.bits_per_dim(-row["total"], dims)
        out[int(T)] = row
    return out
