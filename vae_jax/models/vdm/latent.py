"""A latent diffusion model: a VAE whose prior p(z) is a VDM over the latent z.

The VAE's encoder and decoder are a backbone chosen by name (``BACKBONES``): the MLP of
``models.mlp`` or the ResNet-style conv net of ``models.resnet`` (the ``resnet`` VAE's).

The bound, per example (z ~ q(z|x) = N(μ, s²), D latent dimensions):

    log p(x) ≥ E_q[log p(x|z)] + E_q[log p_VDM(z)] − E_q[log q(z|x)]
    log p_VDM(z) ≥ E[log p(z|z₀)] − KL(q(z₁|z) ‖ N(0, I)) − L_diffusion(z)

with the VDM's forward process q(z_t|z) = N(α_t z, σ_t²) on the latent and a Gaussian
latent decoder p(z|z₀) = N(z₀/α₀, 1/SNR₀). Both inequalities hold for any encoder and any
VDM, so the sum is a lower bound on log p(x). Because z₀/α₀ − z = η/√SNR₀ with η ~ N(0, I)
under q(z₀|z), E[log p(z|z₀)] = D(−½ − ½ log 2π − ½ γ₀) exactly, and with the entropy
E_q[−log q(z|x)] = Σ_d (½ + ½ log 2π + log s_d) the two collapse to one closed form:

    kl["encoder"] = E_q[log q(z|x) − log p(z|z₀)] = Σ_d (½ γ₀ − log s_d)        [B]

so ``terms``' kl = {"prior", "diffusion", "encoder"} and losses.elbo_terms' elbo =
log_px_z − Σ kl is the bound above (the prior and diffusion terms are averaged over the L
draws of z). "encoder" alone may be negative (it is the entropy part of KL(q(z|x) ‖ p(z)));
the three together bound KL(q(z|x) ‖ p_VDM(z)) from above, which is ≥ 0.

With the discrete-time trajectory VDM, log_pz / log_qz hold log p(z, z_{0..1}) and
log q(z, z_{0..1} | x) (up to one shared constant), so IWAE over (z, trajectory) draws is a
valid bound (``exact_log_weights``); otherwise −Σ kl per draw and 0, as in ``models.vdm``.
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax.models.mlp import MLPDecoder, MLPEncoder
from vae_jax.models.resnet import ResNetDecoder, ResNetEncoder
from vae_jax.models.registry import register
from vae_jax.models.vdm.model import Diffusion
from vae_jax.models.vdm.nets import MLPScoreNet
from vae_jax.models.vdm.schedules import NoiseSchedule, alpha_sigma_sq


class LatentVDM(nn.Module):
    """encoder(x) -> (mean, log_std) [B, D]; decoder(z) -> likelihood outputs; a VDM prior.

    Attributes:
      encoder, decoder: as ``models.vae.VAE``'s (``_backbone_nets``).
      diffusion: a ``vdm.Diffusion`` over [D] latents.
      latent_dim: D.
      likelihood: name in ``distributions.LIKELIHOODS``.
    """

    encoder: nn.Module
    decoder: nn.Module
    diffusion: Diffusion
    latent_dim: int
    likelihood: str = "bernoulli"

    @property
    def exact_log_weights(self) -> bool:
        """True only with a discrete-time trajectory prior (see the module docstring)."""
        return self.diffusion.exact_log_weights

    def encode(self, x: jax.Array) -> dist.DiagGaussian:
        """x: [B, H, W, C] float -> q(z|x), batch [B], event [D]."""
        return dist.DiagGaussian(*self.encoder(x))

    def decode(self, z: jax.Array):
        """z: [N, D] -> p(x|z), batch [N], event [H, W, C]."""
        out = self.decoder(z)
        n = dist.likelihood_num_params(self.likelihood)
        return dist.make_likelihood(self.likelihood,
                                    out.reshape(*out.shape[:-1], out.shape[-1] // n, n))

    def terms(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """x: [B, H, W, C] float; z_l ~ q(z|x), l = 1..L, one VDM draw per z_l. Returns:
          log_px_z: [L, B]  log p(x | z_l)
          log_pz, log_qz: [L, B]  see the module docstring
          kl: {"prior": [B], "diffusion": [B], "encoder": [B]}
        """
        k_z, k_d = jax.random.split(key)
        q = self.encode(x)
        z = q.sample(k_z, num_samples)                            # [L, B, D]
        L, B, D = z.shape
        p = self.decode(z.reshape(L * B, D))
        x_rep = jnp.broadcast_to(x, (L, *x.shape)).reshape(L * B, *x.shape[1:])
        log_px_z = p.log_prob(x_rep).reshape(L, B)
        d = self.diffusion.draws(z.reshape(L * B, D), k_d, 1)
        d = {k: v.reshape(L, B, *v.shape[2:]) for k, v in d.items()}
        g0, _ = self.diffusion.endpoints()
        encoder = jnp.sum(0.5 * g0 - q.log_std, axis=-1)
        kl = {"prior": jnp.mean(d["prior"], 0), "diffusion": jnp.mean(d["diffusion"], 0),
              "encoder": encoder}
        if self.exact_log_weights:
            # log p(z | z₀) and log q(z | x), both without the ½ log 2π per dimension.
            a2_0, _ = alpha_sigma_sq(g0)
            r = (z - d["z0"] / jnp.sqrt(a2_0)) * jnp.exp(-0.5 * g0)
            log_p_z = jnp.sum(-0.5 * r * r - 0.5 * g0, axis=-1)
            e = (z - q.mean) * jnp.exp(-q.log_std)
            log_q_z = jnp.sum(-0.5 * e * e - q.log_std, axis=-1)
            log_pz, log_qz = log_p_z + d["log_p"], log_q_z + d["log_q"]
        else:
            log_pz = -(d["prior"] + d["diffusion"] + encoder)
            log_qz = jnp.zeros_like(log_pz)
        return {"log_px_z": log_px_z, "log_pz": log_pz, "log_qz": log_qz, "kl": kl}

    def sample_prior(self, key: jax.Array, num: int, temperature: float = 1.0):
        """z₀ by ancestral sampling (z₁ ~ N(0, temperature² I)), z = z₀/α₀ (the mean of
        p(z|z₀)): returns p(x|z), batch [num]."""
        z0 = self.diffusion.sample(key, (num, self.latent_dim), temperature)
        a2_0, _ = alpha_sigma_sq(self.diffusion.endpoints()[0])
        return self.decode(z0 / jnp.sqrt(a2_0))

    def __call__(self, x: jax.Array, key: jax.Array) -> dict:
        """One draw of ``terms`` (touches every parameter, for ``init``)."""
        return self.terms(x, key, 1)


# The encoder / decoder of the VAE whose prior is the VDM: each backbone's own config.model
# fields and their defaults (``activation`` is both's, with a default of each's own: the
# ``mlp`` and ``resnet`` VAEs'). The one place these defaults live.
BACKBONES = {
    "mlp": {"hidden": (256,), "activation": "relu"},
    "resnet": {"channels": (32, 64), "blocks": 1, "activation": "swish"},
}


def _backbone_nets(backbone: str, image_shape: Sequence[int], latent_dim: int,
                  num_params: int, **fields) -> tuple[nn.Module, nn.Module]:
    """(encoder, decoder) of ``backbone`` for images [H, W, C] of ``image_shape``; a decoder
    output [N, H, W, C * num_params]. ``fields``: hidden, channels, blocks, activation, None
    where not set; a field set that ``backbone`` does not read is a ValueError."""
    if backbone not in BACKBONES:
        raise ValueError(f"config.model.backbone={backbone!r}; valid: {sorted(BACKBONES)} "
                         "(the latent VDM's encoder and decoder: 'mlp' reads "
                         "config.model.hidden, 'resnet' config.model.channels and blocks).")
    own = BACKBONES[backbone]
    stray = sorted(k for k, v in fields.items() if v is not None and k not in own)
    if stray:
        raise ValueError(f"config.model.{stray[0]}={fields[stray[0]]!r} is not read by "
                         f"config.model.backbone={backbone!r}, whose fields are "
                         f"{sorted(own)}: remove it, or choose the backbone that reads it.")
    kw = {k: (own[k] if fields.get(k) is None else fields[k]) for k in own}
    if backbone == "mlp":
        hidden = tuple(kw["hidden"])
        return (MLPEncoder(latent_dim, hidden, kw["activation"]),
                MLPDecoder(tuple(image_shape), num_params, hidden[::-1], kw["activation"]))
    channels = tuple(kw["channels"])
    return (ResNetEncoder(latent_dim, channels, kw["blocks"], kw["activation"]),
            ResNetDecoder(tuple(image_shape), num_params, channels, kw["blocks"],
                          kw["activation"]))


@register("latent_vdm")
def latent_vdm_model(*, image_shape: Sequence[int], latent_dim: int = 16,
                     backbone: str = "mlp", hidden: Optional[Sequence[int]] = None,
                     channels: Optional[Sequence[int]] = None, blocks: Optional[int] = None,
                     activation: Optional[str] = None,
                     likelihood: str = "bernoulli", schedule: str = "learned_linear",
                     gamma_min: float = -13.3, gamma_max: float = 5.0,
                     learn_endpoints: bool = False, schedule_hidden: int = 64,
                     score_hidden: Sequence[int] = (128, 128), embed_dim: int = 32,
                     timesteps: int = 0, trajectory: bool = True, antithetic: bool = True,
                     sample_steps: int = 100) -> LatentVDM:
    """A latent diffusion model (the keyword arguments are ``config.model`` fields).

    * backbone: the VAE's encoder and decoder, a key of ``BACKBONES``: "mlp" (``MLPEncoder``
      / ``MLPDecoder``, decoder widths mirroring ``hidden``) or "resnet" (the ``resnet``
      VAE's ``ResNetEncoder`` / ``ResNetDecoder`` with ``channels`` and ``blocks``).
    * hidden / channels, blocks / activation: the backbone's fields. Each backbone reads only
      its own (``BACKBONES``); None (the default) takes its default there, and a field set
      for the other backbone is a ValueError, not silently ignored.
    * likelihood: the pixel likelihood (``distributions.LIKELIHOODS``).
    * schedule, gamma_min, gamma_max, learn_endpoints, schedule_hidden: the noise schedule.
    * score_hidden, embed_dim: the ``MLPScoreNet``.
    * timesteps, trajectory, antithetic, sample_steps: as ``vdm.vdm_model``.
    """
    if timesteps < 0 or sample_steps <= 0:
        raise ValueError(f"config.model.timesteps={timesteps} must be >= 0 (0: continuous "
                         f"time) and sample_steps={sample_steps} positive.")
    n = dist.likelihood_num_params(likelihood)
    encoder, decoder = _backbone_nets(backbone, image_shape, latent_dim, n, hidden=hidden,
                                     channels=channels, blocks=blocks, activation=activation)
    sched = NoiseSchedule(schedule, gamma_min, gamma_max, learn_endpoints, schedule_hidden)
    net = MLPScoreNet(tuple(score_hidden), embed_dim, gamma_min, gamma_max)
    return LatentVDM(
        encoder=encoder, decoder=decoder,
        diffusion=Diffusion(sched, net, timesteps, trajectory, antithetic, sample_steps),
        latent_dim=latent_dim, likelihood=likelihood)
