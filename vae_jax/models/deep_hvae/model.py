"""A deep top-down hierarchical VAE with ResNet blocks (VDVAE, Child 2021; NVAE's line).

Bottom-up, a ResNet encoder keeps one activation a_r per resolution r. Top-down, the
decoder starts from a learned constant at the lowest resolution and runs residual blocks,
lowest resolution first (nearest upsampling between resolutions); a stochastic block i has
a prior p(z_i | z_<i) from the top-down state alone and a posterior q(z_i | x, z_<i) from the
state and a_r, draws z_i [B, h, w, c_z] and merges it back into the stream. A 1×1 conv turns
the final state into the pixel likelihood's parameters.

``patch_size`` p > 1 runs both passes on p×p patches (space-to-depth, Glow's squeeze): the
encoder sees [B, H/p, W/p, p²C], and the final 1×1 conv gives each feature-map position the
likelihood parameters of its p² pixels, put back in place (depth-to-space). The likelihood
is still one factor per pixel of the [B, H, W, C] image; only the networks work at H/p, where
the convolutions are wider per FLOP (on a CPU several times faster than narrow ones at H).

q and p factor in the same top-down order, so every layer's KL(q(z_i|x, z_<i) || p(z_i|z_<i))
is in closed form between diagonal Gaussians given the sampled z_<i, and for each joint draw
log p(x|z) + Σ_i log p(z_i|z_<i) − Σ_i log q(z_i|x, z_<i) is a true log importance weight:
``losses.elbo_terms``, ``losses.iwae_bound`` and ``evaluate.log_likelihood`` work unchanged.

Layers are named "00", "01", … in top-down order (only the stochastic blocks); layer i draws
its noise with ``fold_in(key, i)``. Per-resolution settings follow ``resolutions`` (highest
first); the ``stochastic`` flags follow the blocks in the order they run (top-down).

Consecutive top-down blocks with the same settings (a run: one resolution, one
``stochastic`` flag) are traced once: a program that does not differentiate the model
(evaluation, sampling) applies each run as one ``jax.lax.scan`` over the blocks, and
compiles one block per run instead of one per block. The derivatives are the unrolled
blocks' (a scan's reverse pass stacks every intermediate and parameter gradient of the
block, glue that XLA:CPU compiles for longer than the identical unrolled blocks, whose
kernels it compiles once), so the train step's program is the unrolled network's. There
each block goes through one ``jax.jit`` per block settings: equal blocks share one trace
and one derivative, and XLA inlines the calls. The parameters stay one entry per block
(``td_r14_0``, ``td_r14_1``, …; created unrolled at init), and the values are the unrolled
network's: the same draws, the same arithmetic.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import distributions as dist
from vae_jax.ops import random
from vae_jax.models import layers
from vae_jax.models.common import ACTIVATIONS
from vae_jax.models.registry import register
from vae_jax.models.deep_hvae.blocks import (BottomUp, TopDownBlock, kernel_size,
                                             middle_width, upsample)

RESIDUAL_INITS = ("scaled", "zero", "default")
DTYPES = ("float32", "bfloat16")


# ------------------------------------------------------------------------ configuration

def _per_resolution(name: str, value, res: tuple, example: str) -> tuple[int, ...]:
    """An int (every resolution) or one int per resolution -> a tuple of len(res) ints."""
    n = len(res)
    values = (value,) * n if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != n or not all(isinstance(v, (int, np.integer)) for v in values):
        raise ValueError(f"config.model.{name}={value!r}: give one int (used at every "
                         f"resolution) or one per resolution ({n} values for resolutions="
                         f"{res}), e.g. {example}.")
    return tuple(int(v) for v in values)


def space_to_depth(x: jax.Array, p: int) -> jax.Array:
    """[B, H, W, C] -> [B, H/p, W/p, p·p·C]: each p×p patch's pixels as channels, in (row,
    column, channel) order; the identity for p = 1."""
    if p == 1:
        return x
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h // p, w // p, p * p * c)


def depth_to_space(y: jax.Array, p: int, channels: int) -> jax.Array:
    """[B, h, w, p·p·C·n] -> [B, h·p, w·p, C, n], the inverse of ``space_to_depth`` on the
    first axes (n: parameters per pixel)."""
    b, h, w, d = y.shape
    n = d // (p * p * channels)
    y = y.reshape(b, h, w, p, p, channels, n).transpose(0, 1, 3, 2, 4, 5, 6)
    return y.reshape(b, h * p, w * p, channels, n)


def _checked(*, image_shape, resolutions, encoder_blocks, decoder_blocks, widths, bottleneck,
             latent_channels, stochastic, likelihood, activation, log_std_bound,
             residual_init, dtype, patch_size) -> dict:
    """Normalised settings (tuples of ints per resolution), or a ValueError naming the field,
    the value and the fix."""
    image_shape = tuple(int(s) for s in image_shape)
    if len(image_shape) != 3 or min(image_shape) <= 0:
        raise ValueError(f"image_shape={image_shape!r}: need (H, W, C) with positive sides.")
    if not (isinstance(patch_size, (int, np.integer)) and patch_size >= 1
            and image_shape[0] % patch_size == 0 and image_shape[1] % patch_size == 0):
        raise ValueError(
            f"config.model.patch_size={patch_size!r} does not fit {image_shape[0]}x"
            f"{image_shape[1]} images: give a positive int dividing both sides (1: no patches; "
            "2: 2x2 patches, the networks at half the side length).")
    patch_size = int(patch_size)
    height, width_px = image_shape[0] // patch_size, image_shape[1] // patch_size
    res = tuple(resolutions) if not isinstance(resolutions, int) else (resolutions,)
    ok = (len(res) > 0 and all(isinstance(r, (int, np.integer)) and r > 0 for r in res)
          and res[0] == height
          and all(a > b and a % b == 0 for a, b in zip(res, res[1:]))
          and all(width_px % (height // r) == 0 for r in res))
    if not ok:
        raise ValueError(
            f"config.model.resolutions={resolutions!r} does not fit {height}x{width_px} "
            f"{'images' if patch_size == 1 else f'maps of {patch_size}x{patch_size} patches'}: "
            f"give side lengths (heights) from {height} down, each "
            f"dividing the one before, and with the image width divisible by each downsampling "
            f"factor, e.g. {_example_resolutions(height)}.")
    res = tuple(int(r) for r in res)
    n = len(res)
    enc = _per_resolution("encoder_blocks", encoder_blocks, res, f"2 or {(2,) * n}")
    dec = _per_resolution("decoder_blocks", decoder_blocks, res, f"{(2,) * n}")
    wid = _per_resolution("widths", widths, res, f"64 or {(64,) * n}")
    cz = _per_resolution("latent_channels", latent_channels, res, f"8 or {(8,) * n}")
    for name, vals, low in (("encoder_blocks", enc, 0), ("decoder_blocks", dec, 0),
                            ("widths", wid, 1), ("latent_channels", cz, 1)):
        if min(vals) < low:
            raise ValueError(f"config.model.{name}={vals!r}: every entry must be >= {low}.")
    num_blocks = sum(dec)
    if stochastic is None:
        flags = (True,) * num_blocks
    else:
        flags = tuple(bool(s) for s in stochastic)
        if len(flags) != num_blocks:
            raise ValueError(f"config.model.stochastic has {len(flags)} flags for {num_blocks} "
                             f"top-down blocks (decoder_blocks={dec}): give one bool per block "
                             "in top-down order (lowest resolution first), or None for all.")
    if not any(flags):
        raise ValueError(f"config.model.stochastic={stochastic!r} with decoder_blocks={dec}: "
                         "the model needs at least one stochastic top-down block.")
    if not bottleneck > 0:
        raise ValueError(f"config.model.bottleneck={bottleneck!r}: the inner width ratio must "
                         "be positive, e.g. 0.25.")
    if likelihood not in dist.LIKELIHOODS:
        raise ValueError(f"config.model.likelihood={likelihood!r}; valid: "
                         f"{sorted(dist.LIKELIHOODS)}.")
    if activation not in ACTIVATIONS:
        raise ValueError(f"config.model.activation={activation!r}; valid: {sorted(ACTIVATIONS)}.")
    if log_std_bound is not None and not log_std_bound > 0:
        raise ValueError(f"config.model.log_std_bound={log_std_bound!r}: give a positive bound "
                         "(e.g. 5.0) or None for unbounded log-stds.")
    if residual_init not in RESIDUAL_INITS:
        raise ValueError(f"config.model.residual_init={residual_init!r}; valid: "
                         f"{RESIDUAL_INITS}.")
    dtype = jnp.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if dtype not in DTYPES:
        raise ValueError(f"config.model.dtype={dtype!r}; valid: {DTYPES} (compute dtype; "
                         "parameters and losses stay float32).")
    return dict(image_shape=image_shape, resolutions=res, encoder_blocks=enc,
                decoder_blocks=dec, widths=wid, bottleneck=float(bottleneck),
                latent_channels=cz, stochastic=flags, likelihood=likelihood,
                activation=activation,
                log_std_bound=None if log_std_bound is None else float(log_std_bound),
                residual_init=residual_init, dtype=dtype, patch_size=patch_size)


def _example_resolutions(height: int) -> tuple[int, ...]:
    out = [height]
    while out[-1] % 2 == 0 and out[-1] > 4:
        out.append(out[-1] // 2)
    return tuple(out)


def _residual_scales(residual_init: str, num_blocks: int) -> tuple[float, float]:
    """(last-conv scale of residual branches, of the prior net) for a network of
    ``num_blocks`` residual blocks: VDVAE's 1/√N and 0, all zeros, or Flax's defaults."""
    if residual_init == "zero":
        return 0.0, 0.0
    if residual_init == "scaled":
        return 1.0 / math.sqrt(max(num_blocks, 1)), 0.0
    return 1.0, 1.0


def _settings(block: TopDownBlock) -> dict:
    """A block's attributes but its place (parent, name): equal settings, equal functions of
    (parameters, inputs)."""
    return {f.name: getattr(block, f.name) for f in dataclasses.fields(block)
            if f.name not in ("parent", "name")}


def _runs(blocks: Sequence[TopDownBlock]) -> list[list[TopDownBlock]]:
    """``blocks`` in order, cut into runs of consecutive blocks with equal ``_settings``."""
    runs: list[list[TopDownBlock]] = []
    for block in blocks:
        if runs and _settings(runs[-1][0]) == _settings(block):
            runs[-1].append(block)
        else:
            runs.append([block])
    return runs


def _block(apply: Callable, template: TopDownBlock, h: jax.Array, a: Optional[jax.Array],
           key: jax.Array, layer, t) -> tuple:
    """One block with ``template``'s settings, ``apply`` (bound, or ``template.apply`` with
    its parameters), on h [N, r, w, width]: a stochastic one is layer ``layer`` and draws
    its noise with ``fold_in(key, layer)``; a: the bottom-up activation [N, r, w, C] (None:
    sampling at temperature t; None: 1). Returns (h', its {"q", "p", "z"} or nothing)."""
    if not template.stochastic:
        return apply(h)
    eps = random.normal(jax.random.fold_in(key, layer), (*h.shape[:3], template.latent_channels))
    return apply(h, a, eps, 1.0 if t is None else t)


def _traced_once(block: TopDownBlock) -> Callable:
    """jit(params, *args): the apply of a TopDownBlock with ``block``'s settings. Called
    inside a traced program, every block with these settings shares one trace, one
    derivative and one lowering; XLA inlines the calls, so the compiled program and its
    values are those of the blocks applied one by one."""
    return _jitted_apply(tuple(sorted(_settings(block).items())))


@functools.cache
def _jitted_apply(settings: tuple) -> Callable:
    block = TopDownBlock(**dict(settings), parent=None)

    def top_down_block(params, *args):
        return block.apply({"params": params}, *args)
    return jax.jit(top_down_block)


def _unrolled(template: TopDownBlock, blocks: Sequence, h: jax.Array,
              a: Optional[jax.Array], key: jax.Array, layer: int,
              temps: Optional[jax.Array]):
    """``blocks`` (n bound TopDownBlocks, or callables like them, all with ``template``'s
    settings) one after the other on h [N, r, w, width]; a: the bottom-up activation
    [N, r, w, C] (None: sampling at temps [n]). Stochastic block j is layer ``layer`` + j.

    Returns (h' [N, r, w, width], [{"q", "p", "z"} per stochastic block])."""
    stats = []
    for j, block in enumerate(blocks):
        h, s = _block(block, template, h, a, key, layer + j, None if temps is None else temps[j])
        if template.stochastic:
            stats.append(s)
    return h, stats


def _scanned(template: TopDownBlock, layer: int) -> Callable:
    """f(params, h, a, key, temps): ``_unrolled`` for the blocks ``template`` applied with
    each of ``params`` (a tuple of n parameter trees), computed by one ``lax.scan``; the
    same values. Derivatives (``jax.custom_jvp``) are those of the unrolled blocks
    (``_traced_once``, as in the train step).

    Step j of the scan picks block j's parameters with ``lax.switch``: stacking them would
    copy every parameter of every block, one more kernel each to compile.
    """
    def unrolled(params, h, a, key, temps):
        apply = _traced_once(template)
        return _unrolled(template, [functools.partial(apply, p) for p in params], h, a, key,
                         layer, temps)

    @jax.custom_jvp
    def run(params, h, a, key, temps):
        n = len(params)
        branches = [lambda j=j: params[j] for j in range(n)]

        def step(h, xs):
            j, t = xs
            apply = functools.partial(template.apply, {"params": jax.lax.switch(j, branches)})
            return _block(apply, template, h, a, key, layer + j, t)

        h, stats = jax.lax.scan(step, h, (jnp.arange(n), temps))
        if not template.stochastic:
            return h, []
        return h, [jax.tree.map(lambda v: v[j], stats) for j in range(n)]

    @run.defjvp
    def _(primals, tangents):
        params, h, a, key, temps = primals
        d_params, d_h, d_a, _, d_temps = tangents
        return jax.jvp(lambda p, h, a, t: unrolled(p, h, a, key, t),
                       (params, h, a, temps), (d_params, d_h, d_a, d_temps))

    return run


# ------------------------------------------------------------------------------- model

class DeepHVAE(nn.Module):
    """Top-down ResNet HVAE; build it with ``deep_hvae_model`` (which checks the settings).

    Attributes (normalised: one entry per resolution, highest first)::

      image_shape: (H, W, C).
      resolutions: feature-map heights, resolutions[0] = H.
      encoder_blocks, decoder_blocks: residual blocks per resolution (bottom-up, top-down).
      widths: channels per resolution; bottleneck: inner-width ratio of every block.
      latent_channels: c_z of the stochastic layers at each resolution.
      stochastic: one flag per top-down block, in top-down order.
      likelihood: name in ``distributions.LIKELIHOODS``; activation: in ``ACTIVATIONS``.
      log_std_bound: soft clamp b·tanh(s/b) of every latent log-std (None: off).
      residual_init: "scaled" (VDVAE: last convs of residual branches and z projections
        × 1/√N, prior nets zero), "zero" (all of those zero: every block the identity at
        init) or "default" (Flax's init everywhere).
      dtype: "float32" or "bfloat16" compute; parameters, log-probs and KLs stay float32.
      patch_size: p; the networks run on p×p patches (resolutions[0] = H / p).
      scan_blocks: trace each run of top-down blocks with equal settings once, as one
        ``lax.scan`` where the model is not differentiated (False: one block after the
        other everywhere; the same values). Not a config field: ``model.clone``.
      jit_blocks: inside a traced program, apply blocks one after the other
        (``scan_blocks`` False, or a run of one) through one ``jax.jit`` per block
        settings, so that equal blocks share their trace and derivative
        (benchmarks/README.md); the same program and values. Flax method interceptors
        (``nn.intercept_methods``) do not see inside such a block: False applies the bound
        blocks. Not a config field: ``model.clone``.
    """

    image_shape: Sequence[int]
    resolutions: Sequence[int]
    encoder_blocks: Sequence[int]
    decoder_blocks: Sequence[int]
    widths: Sequence[int]
    bottleneck: float
    latent_channels: Sequence[int]
    stochastic: Sequence[bool]
    likelihood: str = "bernoulli"
    activation: str = "gelu"
    log_std_bound: Optional[float] = None
    residual_init: str = "scaled"
    dtype: str = "float32"
    patch_size: int = 1
    scan_blocks: bool = True
    jit_blocks: bool = True

    @property
    def num_layers(self) -> int:
        """Number of stochastic layers."""
        return sum(bool(s) for s in self.stochastic)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """"00", "01", … in top-down order (they sort in that order)."""
        digits = max(2, len(str(self.num_layers - 1)))
        return tuple(f"{i:0{digits}d}" for i in range(self.num_layers))

    def setup(self):
        cfg = _checked(**{f: getattr(self, f) for f in (
            "image_shape", "resolutions", "encoder_blocks", "decoder_blocks", "widths",
            "bottleneck", "latent_channels", "stochastic", "likelihood", "activation",
            "log_std_bound", "residual_init", "dtype", "patch_size")})
        dt = jnp.dtype(cfg["dtype"])
        res, wid = cfg["resolutions"], cfg["widths"]
        enc_scale, _ = _residual_scales(cfg["residual_init"], sum(cfg["encoder_blocks"]))
        dec_scale, prior_scale = _residual_scales(cfg["residual_init"],
                                                  sum(cfg["decoder_blocks"]))
        self.bottom_up = BottomUp(res, cfg["encoder_blocks"], wid, cfg["bottleneck"],
                                  enc_scale, cfg["activation"], dt, name="bottom_up")
        biases, projs, blocks, flags = [], {}, [], iter(cfg["stochastic"])
        for i in reversed(range(len(res))):
            r, w = res[i], wid[i]
            side = (r, self.image_shape[1] * r // self.image_shape[0])
            biases.append(self.param(f"td_bias_r{r}", nn.initializers.zeros, (*side, w),
                                     jnp.float32))
            if i + 1 < len(res) and wid[i + 1] != w:
                projs[str(i)] = layers.Conv(w, (1, 1), dtype=dt, name=f"td_proj_r{r}")
            for j in range(cfg["decoder_blocks"][i]):
                blocks.append(TopDownBlock(
                    w, middle_width(w, cfg["bottleneck"]), kernel_size(r),
                    cfg["latent_channels"][i], next(flags), dec_scale, prior_scale,
                    cfg["log_std_bound"], cfg["activation"], dt, name=f"td_r{r}_{j}"))
        self.td_bias, self.td_proj, self.td_blocks = biases, projs, blocks
        # The likelihood's parameters are computed in float32 whatever the compute dtype:
        # log p(x|z) sums thousands of pixels, each a function of them.
        n = dist.likelihood_num_params(cfg["likelihood"])
        self.out = layers.Conv(self.image_shape[-1] * cfg["patch_size"] ** 2 * n, (1, 1),
                               dtype=jnp.float32, name="out")
        self._cfg = cfg

    # ------------------------------------------------------------------ the two passes

    def _top_down(self, num: int, acts: Optional[tuple], key: jax.Array,
                  temperatures: Optional[jax.Array] = None):
        """The decoder on a batch of ``num``: inference when ``acts`` (bottom-up activations,
        each [num, r, w, C]) are given, else ancestral sampling at ``temperatures`` [T].

        Returns (pixel likelihood with batch [num], [{"q", "p", "z"} per layer, top-down]).
        """
        cfg = self._cfg
        res = cfg["resolutions"]
        dt = jnp.dtype(cfg["dtype"])
        h, stats, first = None, [], 0
        for k, i in enumerate(reversed(range(len(res)))):
            base = jnp.broadcast_to(self.td_bias[k].astype(dt), (num, *self.td_bias[k].shape))
            if h is not None:
                h = upsample(h, factor=res[i] // res[i + 1])
                h = base + (self.td_proj[str(i)](h) if str(i) in self.td_proj else h)
            else:
                h = base
            n = cfg["decoder_blocks"][i]
            for run in _runs(self.td_blocks[first:first + n]):
                h, s = self._run(run, h, None if acts is None else acts[i], key, len(stats),
                                 temperatures)
                stats += s
            first += n
        out = depth_to_space(self.out(h.astype(jnp.float32)), cfg["patch_size"],
                             self.image_shape[-1])
        return dist.make_likelihood(cfg["likelihood"], out), stats

    def _run(self, run: list[TopDownBlock], h: jax.Array, a: Optional[jax.Array],
             key: jax.Array, layer: int, temperatures: Optional[jax.Array]):
        """A run of blocks with equal settings (``_runs``) on h [N, r, w, width]; a: the
        bottom-up activation [N, r, w, C] (None: sampling at ``temperatures`` [T]). Its
        stochastic blocks are layers ``layer``, ``layer`` + 1, …

        Returns (h' [N, r, w, width], [{"q", "p", "z"} per stochastic block]).
        """
        temps = (None if a is not None or not run[0].stochastic
                 else temperatures[layer:layer + len(run)])
        if self.is_initializing() or not isinstance(h, jax.core.Tracer):
            # The bound blocks (at init: this creates their parameters). Called eagerly,
            # op by op, each op's program is cached; a scan would compile anew each call.
            return _unrolled(run[0], run, h, a, key, layer, temps)
        params = tuple(self.variables["params"][b.name] for b in run)
        if len(run) > 1 and self.scan_blocks:
            template = TopDownBlock(**_settings(run[0]), parent=None)
            return _scanned(template, layer)(params, h, a, key, temps)
        if not self.jit_blocks:
            return _unrolled(run[0], run, h, a, key, layer, temps)
        apply = _traced_once(run[0])
        return _unrolled(run[0], [functools.partial(apply, p) for p in params], h, a, key,
                         layer, temps)

    def _infer(self, x: jax.Array, key: jax.Array, num_samples: int):
        """L = num_samples joint draws z ~ q(z|x) for x [B, H, W, C]: the top-down pass on
        L·B rows (row l·B + b is draw l of image b). Returns (likelihood, stats)."""
        acts = self.bottom_up(space_to_depth(x, self._cfg["patch_size"]))
        L, B = num_samples, x.shape[0]
        acts = tuple(jnp.broadcast_to(a, (L, *a.shape)).reshape(L * B, *a.shape[1:])
                     for a in acts)
        return self._top_down(L * B, acts, key)

    # ---------------------------------------------------------------- public interface

    def terms(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """Per-sample pieces of the ELBO and of the importance weights over all layers.

        x: [B, H, W, C] float (binary, or pixel / 255); L = num_samples joint draws ~ q.
        Returns (all float32)::

          log_px_z: [L, B]  log p(x | z)
          log_pz:   [L, B]  Σ_i log p(z_i | z_<i)
          log_qz:   [L, B]  Σ_i log q(z_i | x, z_<i)
          kl:       {"00": [B, h, w, c_z], …}  KL(q(z_i|x, z_<i) || p(z_i|z_<i)) per latent
                    element in closed form, averaged over the L draws of z_<i.
        """
        L, B = num_samples, x.shape[0]
        px, stats = self._infer(x, key, L)
        x_rep = jnp.broadcast_to(x, (L, *x.shape)).reshape(L * B, *x.shape[1:])
        log_pz = log_qz = jnp.zeros((L, B), jnp.float32)
        kl = {}
        for name, s in zip(self.layer_names, stats):
            q, p, z = s["q"], s["p"], s["z"]
            log_pz = log_pz + p.log_prob(z).reshape(L, B)
            log_qz = log_qz + q.log_prob(z).reshape(L, B)
            elem = dist.DiagGaussian(q.mean, q.log_std, event_ndim=0).kl(
                dist.DiagGaussian(p.mean, p.log_std, event_ndim=0))
            kl[name] = jnp.mean(elem.reshape(L, B, *elem.shape[1:]), axis=0)
        return {"log_px_z": px.log_prob(x_rep).reshape(L, B), "log_pz": log_pz,
                "log_qz": log_qz, "kl": kl}

    def layer_distributions(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """{layer: {"q": q, "p": p, "z": z}} for L joint draws from q: DiagGaussians with
        float32 parameters [L, B, h, w, c_z] (event: the last 3 axes), z [L, B, h, w, c_z]."""
        L, B = num_samples, x.shape[0]
        _, stats = self._infer(x, key, L)
        split = lambda a: a.reshape(L, B, *a.shape[1:])  # noqa: E731
        return {name: jax.tree.map(split, s) for name, s in zip(self.layer_names, stats)}

    def posterior_means(self, x: jax.Array, key: jax.Array, num_samples: int = 1) -> dict:
        """E_q[z_i | x] per layer, flattened: {layer: [B, h·w·c_z]}, the conditional means of
        q averaged over ``num_samples`` draws of the layers above (for active units)."""
        B = x.shape[0]
        return {name: jnp.mean(d["q"].mean, axis=0).reshape(B, -1)
                for name, d in self.layer_distributions(x, key, num_samples).items()}

    def reconstruct(self, x: jax.Array, key: jax.Array):
        """p(x | z) for one draw z ~ q(z | x), x: [B, H, W, C] -> likelihood, batch [B]."""
        return self._infer(x, key, 1)[0]

    def sample_prior(self, key: jax.Array, num: int,
                     temperature: float | Sequence[float] | jax.Array = 1.0):
        """Ancestral samples, top-down: z_i = μ_p + t_i σ_p ε_i. ``temperature``: one value
        or one per layer (top-down order); 0 takes every prior mean. Returns p(x | z),
        batch [num] (``.mean()`` is [num, H, W, C])."""
        t = jnp.asarray(temperature, jnp.float32)
        if t.ndim == 0:
            t = jnp.broadcast_to(t, (self.num_layers,))
        elif t.shape != (self.num_layers,):
            raise ValueError(f"temperature has shape {t.shape}; give one value or one per "
                             f"stochastic layer ({self.num_layers}, top-down order).")
        return self._top_down(num, None, key, t)[0]

    def __call__(self, x: jax.Array, key: jax.Array) -> dict:
        """Touches every parameter (for ``init``): returns ``terms(x, key, 1)``."""
        return self.terms(x, key, 1)


@register("deep_hvae")
def deep_hvae_model(*, image_shape: Sequence[int],
                    resolutions: Sequence[int] = (28, 14, 7),
                    encoder_blocks: int | Sequence[int] = 2,
                    decoder_blocks: int | Sequence[int] = (2, 4, 4),
                    widths: int | Sequence[int] = 64,
                    bottleneck: float = 0.25,
                    latent_channels: int | Sequence[int] = 8,
                    stochastic: Optional[Sequence[bool]] = None,
                    likelihood: str = "bernoulli",
                    activation: str = "gelu",
                    log_std_bound: Optional[float] = None,
                    residual_init: str = "scaled",
                    dtype: str = "float32",
                    patch_size: int = 1) -> DeepHVAE:
    """The deep top-down ResNet HVAE from ``config.model`` (see ``DeepHVAE``).

    Per-resolution settings (``encoder_blocks``, ``decoder_blocks``, ``widths``,
    ``latent_channels``) are one int or one per resolution, highest first (resolutions[0] is
    the image height over ``patch_size``); ``stochastic`` is
    None (every top-down block) or one bool per top-down block in top-down order. Raises a
    ValueError naming the field for settings that do not fit together or the images.
    """
    return DeepHVAE(**_checked(
        image_shape=image_shape, resolutions=resolutions, encoder_blocks=encoder_blocks,
        decoder_blocks=decoder_blocks, widths=widths, bottleneck=bottleneck,
        latent_channels=latent_channels, stochastic=stochastic, likelihood=likelihood,
        activation=activation, log_std_bound=log_std_bound, residual_init=residual_init,
        dtype=dtype, patch_size=patch_size))
