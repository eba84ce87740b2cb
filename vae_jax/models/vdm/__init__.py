"""Variational diffusion models (Kingma et al. 2021) and the latent VDM.

* ``model``: ``VDM`` and its loss terms as pure functions (``"vdm"`` builder);
* ``schedules``: the noise schedules γ(t) (fixed, learned linear, learned monotone net);
* ``nets``: the ε-prediction networks (``ScoreNet`` for images, ``MLPScoreNet`` for
  vectors);
* ``bounds``: the T-step bounds of one trained model for several T;
* ``latent``: ``LatentVDM``, a VAE whose prior is a VDM over its latent (``"latent_vdm"``).
"""

from vae_jax.models.vdm.latent import LatentVDM, latent_vdm_model
from vae_jax.models.vdm.model import (VDM, Diffusion, ancestral_sample, denoise, diffuse,
                                      diffusion_loss_continuous, diffusion_loss_discrete,
                                      posterior, prior_kl, trajectory_terms, vdm_model)
from vae_jax.models.vdm.nets import MLPScoreNet, ScoreNet
from vae_jax.models.vdm.schedules import NoiseSchedule

__all__ = ["VDM", "LatentVDM", "Diffusion", "NoiseSchedule", "ScoreNet", "MLPScoreNet",
           "vdm_model", "latent_vdm_model", "diffuse", "prior_kl", "posterior", "denoise",
           "diffusion_loss_continuous", "diffusion_loss_discrete", "trajectory_terms",
           "ancestral_sample"]
