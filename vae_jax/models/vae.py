"""The VAE: a Gaussian encoder q(z|x), a prior N(0, I) and a pixel likelihood p(x|z).

``terms`` is the one interface the losses and the evaluation use; a hierarchical model
provides the same method with one KL entry per layer, so nothing downstream changes.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist


class VAE(nn.Module):
    """encoder(x) -> (mean, log_std) [B, D]; decoder(z) -> likelihood outputs [B, H, W, C*n].

    Attributes:
      encoder: module mapping images [B, H, W, C] float to (mean, log_std), each [B, D].
      decoder: module mapping latents [N, D] to [N, H, W, C * n] (n = likelihood params).
      likelihood: name in ``distributions.LIKELIHOODS``.
      latent_dim: D.
    """

    encoder: nn.Module
    decoder: nn.Module
    latent_dim: int
    likelihood: str = "bernoulli"

    def encode(self, x: jax.Array) -> dist.DiagGaussian:
        """x: [B, H, W, C] float -> q(z|x) with batch shape [B], event [D]."""
        mean, log_std = self.encoder(x)
        return dist.DiagGaussian(mean, log_std)

    def decode(self, z: jax.Array):
        """z: [N, D] -> p(x|z), a likelihood with batch shape [N] and event [H, W, C]."""
        out = self.decoder(z)
        n = dist.likelihood_num_params(self.likelihood)
        out = out.reshape(*out.shape[:-1], out.shape[-1] // n, n)
        return dist.make_likelihood(self.likelihood, out)

    def prior(self, batch_shape: tuple[int, ...] = ()) -> dist.DiagGaussian:
        return dist.standard_normal((*batch_shape, self.latent_dim))

    def sample_prior(self, key: jax.Array, num: int, temperature: float = 1.0):
        """Decoded prior draws: returns p(x|z) for z ~ N(0, temperature² I), batch [num]."""
        z = temperature * jax.random.normal(key, (num, self.latent_dim))
        return self.decode(z)

    def terms(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """Per-sample pieces of the ELBO and of the importance weights.

        x: [B, H, W, C] float; draws z_l = μ(x) + σ(x) ε_l, l = 1..L (L = num_samples).
        Returns::

          log_px_z: [L, B]  log p(x | z_l)
          log_pz:   [L, B]  log p(z_l)
          log_qz:   [L, B]  log q(z_l | x)
          kl:       {"z": [B, D]}  KL(q(z|x) || p(z)) per latent dimension, closed form
        """
        q = self.encode(x)
        z = q.sample(key, num_samples)  # [L, B, D]
        L, B = z.shape[:2]
        p = self.decode(z.reshape(L * B, self.latent_dim))
        x_rep = jnp.broadcast_to(x, (L, *x.shape)).reshape(L * B, *x.shape[1:])
        log_px_z = p.log_prob(x_rep).reshape(L, B)
        prior = self.prior()
        return {
            "log_px_z": log_px_z,
            "log_pz": prior.log_prob(z),
            "log_qz": q.log_prob(z),
            "kl": {"z": dist.gaussian_kl_elementwise(q.mean, q.log_std)},
        }

    def __call__(self, x: jax.Array, key: jax.Array):
        """One reparameterized pass: returns (q(z|x), z [B, D], p(x|z))."""
        q = self.encode(x)
        z = q.sample(key)
        return q, z, self.decode(z)
