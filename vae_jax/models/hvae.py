"""Hierarchical VAEs: a Gaussian latent chain z_T → … → z_1 → x with one KL term per layer.

Generative model (both variants): p(z_T) = N(0, I), p(z_l | z_{l+1}) = N(μ_l(z_{l+1}),
σ_l(z_{l+1})²) for l < T, p(x | z_1) the pixel likelihood. Layer 1 is the bottom (next to
x), layer T the top. Two inference networks:

* ``inference="markov"`` — a bottom-up Markovian encoder q(z_1|x) q(z_2|z_1) … q(z_T|z_{T−1})
  (Burda et al. 2015's two-stochastic-layer model). The ELBO splits as
  E_q[log p(x|z_1)] − Σ_l kl_l with
  kl_T = E_q KL(q(z_T|z_{T−1}) || N(0, I))  (closed form given the sampled z_{T−1}), and
  kl_l = E_q[log q(z_l|z_{l−1}) − log p(z_l|z_{l+1})] for l < T, a Monte Carlo estimate: under
  q, z_{l+1} is drawn *after* z_l and depends on it, so no Gaussian-to-Gaussian closed form
  exists for these terms (the "consistency" terms of the road to diffusion models).
* ``inference="ladder"`` — top-down inference (Sønderby et al. 2016, as in NVAE / VDVAE): a
  deterministic bottom-up pass gives (μ̂_l, σ̂_l) per layer; z is then drawn top-down, and
  q(z_l | z_{l+1}, x) is the precision-weighted combination of N(μ̂_l, σ̂_l²) with the prior
  p(z_l | z_{l+1}). q and p factor in the same order, so every layer's KL
  KL(q(z_l|z_{l+1}, x) || p(z_l|z_{l+1})) is in closed form between two diagonal Gaussians
  (given the sampled z_{l+1}; the outer expectation over z_{l+1} is Monte Carlo).

What holds exactly, per example (``losses.elbo_terms``): elbo = log_px_z − Σ_l kl_l, and the
``kl_<l>`` entries sum to ``kl``. The ELBO estimate also equals mean_L(log_px_z + log_pz −
log_qz) exactly when every KL is a Monte Carlo estimate (``analytic_kl=False``); with closed
forms (the default) the two agree in expectation, the closed form having lower variance.

Noise: layer 1 draws with ``key`` itself and layer l > 1 with ``fold_in(key, l)``, so a
one-layer HVAE draws exactly the plain VAE's noise and reproduces its ELBO for the same
parameters (see ``vae_to_hvae_params``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions as dist
from vae_jax.models.common import activation as get_activation
from vae_jax.models.mlp import MLPDecoder, MLPEncoder
from vae_jax.models.registry import register

INFERENCE = ("markov", "ladder")


class BottomUp(nn.Module):
    """One ladder rung: h [N, ...] -> (features [N, F], mean [N, D], log_std [N, D]).

    Parameter names match ``MLPEncoder`` (``hidden_i``, ``out``), so a one-layer ladder uses
    the plain VAE's encoder parameters unchanged.
    """

    latent_dim: int
    hidden: Sequence[int] = ()
    activation: str = "tanh"

    @nn.compact
    def __call__(self, h: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        act = get_activation(self.activation)
        h = h.reshape(h.shape[0], -1)
        for i, width in enumerate(self.hidden):
            h = act(nn.Dense(width, name=f"hidden_{i}")(h))
        mean, log_std = jnp.split(nn.Dense(2 * self.latent_dim, name="out")(h), 2, axis=-1)
        return h, mean, log_std


def _apply_flat(net: nn.Module, z: jax.Array):
    """Run a [N, D] -> [N, ...] network on z [L, B, D], restoring the [L, B] leading axes."""
    lead = z.shape[:-1]
    out = net(z.reshape(-1, z.shape[-1]))
    return jax.tree.map(lambda a: a.reshape(*lead, *a.shape[1:]), out)


def precision_weighted(mean_a: jax.Array, log_std_a: jax.Array, mean_b: jax.Array,
                       log_std_b: jax.Array) -> dist.DiagGaussian:
    """The normalised product N(a)·N(b) of two diagonal Gaussians (Sønderby et al. 2016, eq. 17).

    σ² = 1/(σ_a⁻² + σ_b⁻²), μ = σ² (μ_a σ_a⁻² + μ_b σ_b⁻²); computed in log space.
    """
    log_prec_a, log_prec_b = -2.0 * log_std_a, -2.0 * log_std_b
    w_a = jax.nn.sigmoid(log_prec_a - log_prec_b)  # σ_a⁻² / (σ_a⁻² + σ_b⁻²)
    mean = w_a * mean_a + (1.0 - w_a) * mean_b
    log_std = -0.5 * jnp.logaddexp(log_prec_a, log_prec_b)
    return dist.DiagGaussian(mean, log_std)


def _kl_elementwise(q: dist.DiagGaussian, p: dist.DiagGaussian) -> jax.Array:
    """Per-dimension KL(q || p) between diagonal Gaussians: [..., D]."""
    var_ratio = jnp.exp(2.0 * (q.log_std - p.log_std))
    diff = (q.mean - p.mean) * jnp.exp(-p.log_std)
    return 0.5 * (var_ratio + diff * diff - 1.0) - (q.log_std - p.log_std)


def _layer_key(key: jax.Array, layer: int) -> jax.Array:
    return key if layer == 1 else jax.random.fold_in(key, layer)


class HVAE(nn.Module):
    """An L-layer hierarchical VAE with MLP conditionals.

    Attributes:
      image_shape: (H, W, C).
      latent_dims: (D_1, …, D_T), bottom (next to x) to top.
      hidden: per layer, the hidden widths of the inference net into layer l
        (x → z_1 for l = 1, z_{l−1} → z_l or the ladder rung above); the generative net out of
        layer l (z_l → z_{l−1}, or z_1 → x) mirrors them reversed, as in Burda et al.
      activation: name in ``common.ACTIVATIONS``.
      likelihood: name in ``distributions.LIKELIHOODS``.
      inference: "markov" (bottom-up chain) or "ladder" (top-down, precision weighted).
      analytic_kl: use the closed-form KLs where they exist (Markov: the top layer; ladder:
        every layer). False makes every kl_l the Monte Carlo log-ratio estimate.
    """

    image_shape: Sequence[int]
    latent_dims: Sequence[int]
    hidden: Sequence[Sequence[int]]
    activation: str = "tanh"
    likelihood: str = "bernoulli"
    inference: str = "markov"
    analytic_kl: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.latent_dims)

    @property
    def latent_dim(self) -> int:
        """Dimension of the top layer (the one ``encode``/``decode``/``sample_prior`` use)."""
        return self.latent_dims[-1]

    def setup(self):
        if self.inference not in INFERENCE:
            raise ValueError(f"Unknown inference {self.inference!r}; valid: {INFERENCE}. "
                             "Set config.model.inference.")
        if len(self.hidden) != len(self.latent_dims) or not self.latent_dims:
            raise ValueError(f"config.model.hidden has {len(self.hidden)} entries for "
                             f"{len(self.latent_dims)} latent layers (latent_dims="
                             f"{tuple(self.latent_dims)}); give one tuple of widths per layer.")
        T, act = self.num_layers, self.activation
        if self.inference == "markov":
            self.q_nets = [MLPEncoder(d, tuple(h), act, name=f"q_{l + 1}")
                           for l, (d, h) in enumerate(zip(self.latent_dims, self.hidden))]
        else:
            self.q_nets = [BottomUp(d, tuple(h), act, name=f"bu_{l + 1}")
                           for l, (d, h) in enumerate(zip(self.latent_dims, self.hidden))]
        # p(z_l | z_{l+1}) for l = 1..T-1: mirrors the inference net into layer l+1.
        self.p_nets = [MLPEncoder(self.latent_dims[l], tuple(self.hidden[l + 1])[::-1], act,
                                  name=f"p_{l + 1}") for l in range(T - 1)]
        self.p_x = MLPDecoder(tuple(self.image_shape), dist.likelihood_num_params(self.likelihood),
                              tuple(self.hidden[0])[::-1], act, name="p_x")

    # ------------------------------------------------------------------ generative path

    def _pixels(self, z1: jax.Array):
        """z1: [..., D_1] -> p(x | z_1) with batch shape [...]."""
        out = _apply_flat(self.p_x, z1)
        n = dist.likelihood_num_params(self.likelihood)
        out = out.reshape(*out.shape[:-1], out.shape[-1] // n, n)
        return dist.make_likelihood(self.likelihood, out)

    def _prior_layer(self, l: int, z_above: jax.Array) -> dist.DiagGaussian:
        """p(z_l | z_{l+1}) for 1 <= l < T; z_above: [..., D_{l+1}]."""
        return dist.DiagGaussian(*_apply_flat(self.p_nets[l - 1], z_above))

    def _generate(self, z_top: jax.Array, key: Optional[jax.Array], temperature: float):
        """Top-down from z_T [N, D_T]: draws z_l ~ p(z_l|z_{l+1}) (σ scaled by the
        temperature), or takes the conditional means when key is None. Returns p(x | z_1)."""
        z = z_top
        for l in range(self.num_layers - 1, 0, -1):
            p = self._prior_layer(l, z)
            if key is None:
                z = p.mean
            else:
                eps = jax.random.normal(_layer_key(key, l), p.mean.shape, p.mean.dtype)
                z = p.mean + temperature * p.std * eps
        return self._pixels(z)

    def decode(self, z: jax.Array):
        """z_T: [N, D_T] -> p(x | z_1), z_1 reached top-down through the conditional means."""
        return self._generate(z, None, 1.0)

    def prior(self, batch_shape: tuple[int, ...] = ()) -> dist.DiagGaussian:
        return dist.standard_normal((*batch_shape, self.latent_dim))

    def sample_prior(self, key: jax.Array, num: int, temperature: float = 1.0):
        """Ancestral samples from the top down: z_T ~ N(0, t² I), z_l ~ N(μ_l, t² σ_l²).

        Returns p(x | z_1), batch [num] (like ``VAE.sample_prior``).
        """
        k_top, k_rest = jax.random.split(key)
        z = temperature * jax.random.normal(k_top, (num, self.latent_dim))
        return self._generate(z, k_rest, temperature)

    # ------------------------------------------------------------------- inference path

    def _bottom_up(self, x: jax.Array):
        """Ladder: [(mean_l, log_std_l)] for l = 1..T from the deterministic pass over x."""
        h, out = x, []
        for net in self.q_nets:
            h, mean, log_std = net(h)
            out.append((mean, log_std))
        return out

    def encode(self, x: jax.Array) -> dist.DiagGaussian:
        """x: [B, H, W, C] -> the top layer's posterior, batch [B], event [D_T].

        Markov: q(z_T | z_{T−1}) with every lower z_l at its conditional mean; ladder:
        q(z_T | x) (exact). With ``decode`` (conditional means top-down) this gives the
        reconstructions ``sampling.reconstructions`` draws: they pass through every layer.
        """
        if self.inference == "markov":
            h = x
            for net in self.q_nets:
                mean, log_std = net(h)
                h = mean
            return dist.DiagGaussian(mean, log_std)
        mean, log_std = self._bottom_up(x)[-1]
        return dist.DiagGaussian(mean, log_std)

    def posterior_means(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """E_q[z_l | x] per layer: {"1": [B, D_1], …, "T": [B, D_T]}.

        Rao-Blackwellised: the average over ``num_samples`` draws of the layers the posterior
        of layer l is conditioned on, of the conditional mean of q at layer l (exact for the
        Markov z_1 and the ladder's z_T). Used for Burda et al.'s active-unit statistic.
        """
        t = self._infer(x, key, num_samples)
        return {str(l): jnp.mean(q.mean, axis=0) if q.mean.ndim == 3 else q.mean
                for l, q in t["q"].items()}

    def _infer(self, x: jax.Array, key: jax.Array, num_samples: int) -> dict:
        """Draw z_1..z_T from q. Returns {"z": {l: [L, B, D_l]}, "q": {l: q_l}, "p": {l: p_l}}
        where q_l / p_l are the conditionals of layer l (params [B, D] or [L, B, D]) and p_T
        is N(0, I)."""
        T, L = self.num_layers, num_samples
        zs, qs, ps = {}, {}, {}
        if self.inference == "markov":
            for l in range(1, T + 1):
                if l == 1:
                    q = dist.DiagGaussian(*self.q_nets[0](x))
                    zs[l] = q.sample(_layer_key(key, 1), L)
                else:
                    q = dist.DiagGaussian(*_apply_flat(self.q_nets[l - 1], zs[l - 1]))
                    zs[l] = q.sample(_layer_key(key, l))
                qs[l] = q
            for l in range(1, T):
                ps[l] = self._prior_layer(l, zs[l + 1])
        else:
            bu = self._bottom_up(x)
            for l in range(T, 0, -1):
                if l == T:
                    q = dist.DiagGaussian(*bu[T - 1])
                    zs[l] = q.sample(_layer_key(key, l), L)
                else:
                    ps[l] = self._prior_layer(l, zs[l + 1])
                    q = precision_weighted(*bu[l - 1], ps[l].mean, ps[l].log_std)
                    zs[l] = q.sample(_layer_key(key, l))
                qs[l] = q
        ps[T] = dist.standard_normal(zs[T].shape[-1:])
        return {"z": zs, "q": qs, "p": ps}

    def terms(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """Per-sample pieces of the ELBO and of the importance weights over all layers.

        x: [B, H, W, C] float; L = num_samples joint draws (z_1..z_T) ~ q.
        Returns::

          log_px_z: [L, B]  log p(x | z_1)
          log_pz:   [L, B]  log p(z_T) + Σ_{l<T} log p(z_l | z_{l+1})
          log_qz:   [L, B]  Σ_l log q(z_l | its parents)
          kl:       {"1": …, "T": …}; per-dimension closed forms [B, D_l] (averaged over the
                    L draws of the layers they condition on), or [B, 1] Monte Carlo
                    log-ratio estimates averaged over the L draws.
        """
        t = self._infer(x, key, num_samples)
        zs, qs, ps = t["z"], t["q"], t["p"]
        T = self.num_layers
        L, B = zs[1].shape[:2]
        log_q = {l: qs[l].log_prob(zs[l]) for l in zs}  # [L, B] (q_1 / q_T broadcast over L)
        log_p = {l: ps[l].log_prob(zs[l]) for l in zs}
        kl = {}
        for l in range(1, T + 1):
            closed = self.analytic_kl and (self.inference == "ladder" or l == T)
            if closed:
                q, p = qs[l], ps[l]
                if l == T:  # p(z_T) = N(0, I): the VAE's own formula, bit for bit
                    elem = dist.gaussian_kl_elementwise(q.mean, q.log_std)
                else:
                    elem = _kl_elementwise(q, p)
                full = jnp.broadcast_shapes(elem.shape, (B, zs[l].shape[-1]))
                elem = jnp.broadcast_to(elem, full)
                kl[str(l)] = jnp.mean(elem, axis=0) if elem.ndim == 3 else elem
            else:
                kl[str(l)] = jnp.mean(log_q[l] - log_p[l], axis=0)[:, None]
        x_rep = jnp.broadcast_to(x, (L, *x.shape))
        return {
            "log_px_z": self._pixels(zs[1]).log_prob(x_rep),
            "log_pz": sum(log_p.values()),
            "log_qz": sum(log_q.values()),
            "kl": kl,
        }

    def __call__(self, x: jax.Array, key: jax.Array):
        """Touches every parameter (for ``init``): returns ``terms(x, key, 1)``."""
        return self.terms(x, key, 1)


def vae_to_hvae_params(vae_params: dict, inference: str = "markov") -> dict:
    """Map a plain ``VAE``'s MLP parameters to a one-layer ``HVAE``'s (same architecture)."""
    p = vae_params["params"]
    enc = "q_1" if inference == "markov" else "bu_1"
    return {"params": {enc: p["encoder"], "p_x": p["decoder"]}}


@register("hvae")
def hierarchical_vae(*, image_shape: Sequence[int], latent_dims: Sequence[int] = (100, 50),
                     hidden: Sequence[Sequence[int]] = ((100, 100), (50, 50)),
                     activation: str = "tanh", likelihood: str = "bernoulli",
                     inference: str = "markov", analytic_kl: bool = True) -> HVAE:
    """Hierarchical VAE (``models/hvae.py``); defaults are Burda et al.'s two-layer model.

    ``latent_dims`` run bottom (next to x) to top; ``hidden`` holds one tuple of widths per
    layer (the inference net into that layer; the generative net mirrors it).
    """
    latent_dims = tuple(int(d) for d in latent_dims)
    if any(isinstance(h, int) for h in hidden):
        raise ValueError(f"config.model.hidden={hidden!r}: give one tuple of widths per latent "
                         "layer, e.g. ((100, 100), (50, 50)) for latent_dims=(100, 50).")
    hidden = tuple(tuple(int(w) for w in h) for h in hidden)
    return HVAE(image_shape=tuple(image_shape), latent_dims=latent_dims, hidden=hidden,
                activation=activation, likelihood=likelihood, inference=inference,
                analytic_kl=analytic_kl)
