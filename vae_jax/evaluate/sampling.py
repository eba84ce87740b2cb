"""Prior samples, reconstructions, latent interpolations and traversals -> PNG image grids.

The array functions are pure: ``(params, inputs, *, model)`` -> images [N, H, W, C] in [0, 1].
The writers turn arrays into uint8 grids and PNG files: ``write_training_grids`` at every
evaluation of a training run, ``write_sample_images`` for ``--mode=sample``
(``vae_jax.experiment.sample_checkpoint`` restores the checkpoint and calls it). Only the
label-coloured scatter of 2-D encodings needs matplotlib, imported there.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Mapping, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from vae_jax.data.batches import preprocess
from vae_jax.errors import ConfigError
from vae_jax.ops.compile import announced


def image_grid(images: np.ndarray, ncols: Optional[int] = None, pad: int = 1) -> np.ndarray:
    """images [N, H, W, C] in [0, 1] (or uint8) -> one uint8 grid [rows*(H+pad)+pad, ..., C]."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = (np.clip(images, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    n, h, w, c = images.shape
    ncols = ncols or int(math.ceil(math.sqrt(n)))
    nrows = int(math.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for i in range(n):
        r, col = divmod(i, ncols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h,
             pad + col * (w + pad): pad + col * (w + pad) + w] = images[i]
    return grid


def save_png(path: str, grid: np.ndarray) -> str:
    """Write a uint8 grid [H, W, C] (C = 1 or 3) as PNG (a temporary file renamed);
    returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img = grid[..., 0] if grid.shape[-1] == 1 else grid
    tmp = f"{path}.tmp{os.getpid()}"  # whole or not at all (a full disk, a stop)
    try:
        # optimize=True: 2.7x the time for <0.1 % smaller files
        Image.fromarray(img).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def prior_samples(params, key: jax.Array, *, model: nn.Module, num: int,
                  temperature: float = 1.0) -> jax.Array:
    """Mean of p(x|z) for z ~ N(0, temperature² I): [num, H, W, C] in [0, 1]."""
    return model.apply(params, key, num, temperature, method="sample_prior").mean()


def can_reconstruct(model: nn.Module) -> bool:
    """Whether ``reconstructions`` applies: an encoder (``encode``/``decode``) or a model's
    own ``reconstruct(x, key)`` (a deep hierarchy); a diffusion model has neither."""
    return hasattr(model, "encode") or hasattr(model, "reconstruct")


def reconstructions(params, x: jax.Array, *, model: nn.Module,
                    key: Optional[jax.Array] = None) -> jax.Array:
    """Mean of p(x | z = μ(x)) for x [B, H, W, C] in [0, 1]: [B, H, W, C]. Models without an
    ``encode`` method use their ``reconstruct(x, key)`` (z drawn from q, ``key`` or key 0)."""
    if not hasattr(model, "encode"):
        key = jax.random.key(0) if key is None else key
        return model.apply(params, x, key, method="reconstruct").mean()

    def recon(mdl, x):
        return mdl.decode(mdl.encode(x).mean).mean()
    return model.apply(params, x, method=recon)


def reconstruction_grid(originals: np.ndarray, recons: np.ndarray, ncols: int = 8) -> np.ndarray:
    """Rows of originals with their reconstructions directly beneath: uint8 grid."""
    originals, recons = np.asarray(originals), np.asarray(recons)
    n = (len(originals) // ncols) * ncols or len(originals)
    ncols = min(ncols, n)
    rows = []
    for r in range(0, n, ncols):
        rows.append(originals[r:r + ncols])
        rows.append(recons[r:r + ncols])
    return image_grid(np.concatenate(rows), ncols=ncols)


# ------------------------------------------------------------------------- latent space

def encode_mean(params, x: jax.Array, *, model: nn.Module) -> jax.Array:
    """μ(x), the mean of q(z|x), for x [B, H, W, C] in [0, 1]: [B, D]."""
    return model.apply(params, x, method=lambda mdl, x: mdl.encode(x).mean)


def decode_mean(params, z: jax.Array, *, model: nn.Module) -> jax.Array:
    """Mean of p(x|z) for z [N, D]: [N, H, W, C] in [0, 1]."""
    return model.apply(params, z, method=lambda mdl, z: mdl.decode(z).mean())


def lerp(z0: jax.Array, z1: jax.Array, t: jax.Array) -> jax.Array:
    """Linear interpolation. z0, z1: [D]; t: [T] -> [T, D]."""
    t = jnp.asarray(t, jnp.float32)[:, None]
    return (1.0 - t) * z0[None] + t * z1[None]


def slerp(z0: jax.Array, z1: jax.Array, t: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Spherical interpolation (Shoemake 1985; White 2016 for generative models).

    z(t) = sin((1−t)Ω)/sin Ω · z0 + sin(tΩ)/sin Ω · z1, Ω the angle between z0 and z1.
    Under N(0, I) latents the norm stays near √D along the path, where linear interpolation
    passes through the low-norm centre the prior rarely samples. For (anti)parallel vectors
    (1 − ``|cos Ω|`` < eps) or a zero vector the formula is 0/0: it falls back to ``lerp``, and
    the unused branch is fed a safe angle so gradients stay finite too.
    z0, z1: [D]; t: [T] -> [T, D].
    """
    t = jnp.asarray(t, jnp.float32)[:, None]
    norms = jnp.linalg.norm(z0) * jnp.linalg.norm(z1)
    cos = jnp.dot(z0, z1) / jnp.where(norms > 0, norms, 1.0)
    degenerate = (1.0 - jnp.abs(cos) < eps) | (norms <= 0)
    omega = jnp.arccos(jnp.where(degenerate, 0.0, jnp.clip(cos, -1.0, 1.0)))
    sin = jnp.sin(omega)
    w0 = jnp.where(degenerate, 1.0 - t, jnp.sin((1.0 - t) * omega) / sin)
    w1 = jnp.where(degenerate, t, jnp.sin(t * omega) / sin)
    return w0 * z0[None] + w1 * z1[None]


INTERPOLATIONS = {"linear": lerp, "spherical": slerp}


def interpolate(params, x0: jax.Array, x1: jax.Array, *, model: nn.Module, num: int = 10,
                method: str = "linear") -> jax.Array:
    """Decode ``num`` latents on the path from μ(x0) to μ(x1) (both ends included).

    x0, x1: [H, W, C] in [0, 1]; method: 'linear' or 'spherical'. Returns [num, H, W, C].
    """
    if method not in INTERPOLATIONS:
        raise ValueError(f"Unknown interpolation {method!r}; valid: {sorted(INTERPOLATIONS)}.")
    z = encode_mean(params, jnp.stack([x0, x1]), model=model)
    path = INTERPOLATIONS[method](z[0], z[1], jnp.linspace(0.0, 1.0, num))
    return decode_mean(params, path, model=model)


def traversal_latents(z: jax.Array, dims, values: jax.Array) -> jax.Array:
    """Copies of z [D] with dimension d set to each of ``values`` [V]: [len(dims), V, D]."""
    values = jnp.asarray(values, jnp.float32)
    rows = [jnp.tile(z[None], (len(values), 1)).at[:, d].set(values) for d in dims]
    return jnp.stack(rows)


def latent_traversal(params, x: jax.Array, *, model: nn.Module, dims=None, num: int = 9,
                     extent: float = 3.0) -> jax.Array:
    """Vary one latent dimension of μ(x) over linspace(−extent, extent, num), others fixed.

    x: [H, W, C] in [0, 1]; dims: dimensions to vary (default: all). Values are in prior
    units (the prior is N(0, I)). Returns [len(dims), num, H, W, C], one row per dimension.
    """
    z = encode_mean(params, x[None], model=model)[0]
    dims = list(range(z.shape[0])) if dims is None else list(dims)
    zs = traversal_latents(z, dims, jnp.linspace(-extent, extent, num))
    out = decode_mean(params, zs.reshape(-1, z.shape[0]), model=model)
    return out.reshape(len(dims), num, *out.shape[1:])


def manifold_latents(num: int = 20, quantile: float = 0.95) -> jax.Array:
    """A num x num grid of 2-D latents at the prior's quantiles: [num * num, 2].

    Coordinates are Φ⁻¹ of an even grid in [1 − quantile, quantile] (Kingma & Welling 2014,
    fig. 4), so each cell covers equal prior mass. Row-major, top row = largest z₂, so the
    image grid reads like a plot with z₁ to the right and z₂ up.
    """
    if not 0.5 < quantile < 1.0:
        raise ValueError(f"quantile={quantile} must be in (0.5, 1).")
    u = jnp.linspace(1.0 - quantile, quantile, num)
    g = jax.scipy.special.ndtri(u)
    z1, z2 = jnp.meshgrid(g, g[::-1])
    return jnp.stack([z1.ravel(), z2.ravel()], axis=-1)


def manifold_grid(params, *, model: nn.Module, num: int = 20,
                  quantile: float = 0.95) -> jax.Array:
    """Decoded 2-D latent manifold: [num * num, H, W, C] (needs latent_dim == 2)."""
    if model.latent_dim != 2:
        raise ValueError(f"The manifold grid needs a 2-D latent space; this model has "
                         f"latent_dim={model.latent_dim}. Train with --config.model.latent_dim=2.")
    return decode_mean(params, manifold_latents(num, quantile), model=model)


def encode_dataset(params, x: np.ndarray, *, model: nn.Module,
                   batch_size: int = 1000) -> np.ndarray:
    """μ(x) for every image of x [N, H, W, C] in [0, 1], in batches: [N, D]."""
    fn = jax.jit(functools.partial(encode_mean, model=model))
    return np.concatenate([np.asarray(fn(params, jnp.asarray(x[i:i + batch_size])))
                           for i in range(0, len(x), batch_size)])


# ------------------------------------------------------------------------------- writers

def traversal_grid(traversal: np.ndarray) -> np.ndarray:
    """[rows, V, H, W, C] -> uint8 grid with one row per latent dimension."""
    traversal = np.asarray(traversal)
    return image_grid(traversal.reshape(-1, *traversal.shape[2:]), ncols=traversal.shape[1])


def save_latent_scatter(path: str, z: np.ndarray, labels: Optional[np.ndarray] = None,
                        class_names=None, title: str = "") -> str:
    """Scatter of 2-D encodings z [N, 2] coloured by label; needs matplotlib."""
    try:  # the object-oriented API: no pyplot, so a notebook's backend is left alone
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError("The latent scatter plot needs matplotlib: "
                          "`pip install matplotlib` (or 'vae_jax[notebooks]').") from e
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"The scatter needs 2-D encodings [N, 2]; got {z.shape}. "
                         "Train with --config.model.latent_dim=2.")
    fig = Figure(figsize=(5, 4.2), dpi=80)
    ax = fig.add_subplot()
    if labels is None:
        ax.scatter(z[:, 0], z[:, 1], s=2, alpha=0.5)
    else:
        sc = ax.scatter(z[:, 0], z[:, 1], c=labels, s=2, alpha=0.6, cmap="tab10",
                        vmin=-0.5, vmax=9.5)
        cbar = fig.colorbar(sc, ax=ax, ticks=range(10))
        if class_names is not None:
            cbar.ax.set_yticklabels(class_names, fontsize=7)
    ax.set_xlabel("z₁ (posterior mean)")
    ax.set_ylabel("z₂")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path


# ----------------------------------------------------------------------- --mode=sample

def display_inputs(images: np.ndarray, binarization: str) -> jax.Array:
    """uint8 [N, H, W, C] -> the float images encoded for pictures: [N, H, W, C].

    Grey levels (the mean of the dynamic binarization's Bernoulli pixels) rather than one
    random binarization, so pictures do not change with a key; a statically binarized model
    sees its static binarization.
    """
    x = jnp.asarray(images, jnp.float32) / 255.0
    return (x > 0.5).astype(jnp.float32) if binarization == "static" else x


def active_dims(params, x: jax.Array, *, model: nn.Module, top: int) -> list[int]:
    """The ``top`` latent dimensions with the largest mean KL(q(z_d|x) || N(0,1)) over x.

    Dimensions with ~0 KL are unused (the posterior equals the prior there) and traverse to
    identical images, so pictures show the used ones first.
    """
    from vae_jax.distributions import gaussian_kl_elementwise
    q = model.apply(params, x, method=lambda mdl, x: mdl.encode(x))
    kl = np.asarray(jnp.mean(gaussian_kl_elementwise(q.mean, q.log_std), axis=0))
    return [int(d) for d in np.argsort(-kl)[:top]]


def write_sample_images(outdir: str, params, test_images: np.ndarray, key: jax.Array, *,
                        model: nn.Module, binarization: str = "dynamic",
                        settings: Mapping[str, Any], test_labels: Optional[np.ndarray] = None,
                        class_names=None) -> dict[str, str]:
    """Write every picture of ``--mode=sample`` into ``outdir``; returns {name: path}.

    test_images: uint8 [N, H, W, C]; ``settings``: the ``config.sample`` fields (defaults
    in ``vae_jax.config.defaults``). 2-D latent models also get ``manifold.png`` and (with
    matplotlib) ``latent_scatter.png``.
    """
    s = dict(settings)
    if not hasattr(model, "encode"):  # no single latent space: samples (and reconstructions)
        return _write_samples_only(outdir, params, test_images, key, model=model,
                                   binarization=binarization, settings=s)
    x = display_inputs(test_images[: max(s["num"], 1000)], binarization)
    paths = {}

    def write(name: str, grid: np.ndarray) -> None:
        paths[name] = save_png(os.path.join(outdir, f"{name}.png"), grid)

    temperature = float(s["temperature"])
    samples = prior_samples(params, key, model=model, num=s["num"], temperature=temperature)
    write(samples_name(temperature), image_grid(np.asarray(samples), ncols=8))
    originals = x[: min(s["num"], 32)]
    write("reconstructions", reconstruction_grid(
        np.asarray(originals), np.asarray(reconstructions(params, originals, model=model))))
    i, j = s["pair"]
    for method in ("linear", "spherical"):
        path = interpolate(params, x[i], x[j], model=model, num=s["num_interpolation"],
                           method=method)
        write(f"interpolation_{method}", image_grid(np.asarray(path), ncols=len(path)))
    dims = active_dims(params, x, model=model, top=min(s["traversal_dims"], model.latent_dim))
    trav = latent_traversal(params, x[i], model=model, dims=dims, num=s["traversal_steps"],
                            extent=s["traversal_extent"])
    write("traversal", traversal_grid(np.asarray(trav)))
    if model.latent_dim == 2:
        grid = manifold_grid(params, model=model, num=s["manifold_size"])
        write("manifold", image_grid(np.asarray(grid), ncols=s["manifold_size"]))
        n = min(s["scatter_points"], len(test_images))
        z = encode_dataset(params, np.asarray(display_inputs(test_images[:n], binarization)),
                           model=model)
        labels = None if test_labels is None else np.asarray(test_labels[:n])
        try:
            paths["latent_scatter"] = save_latent_scatter(
                os.path.join(outdir, "latent_scatter.png"), z, labels, class_names,
                title=f"{n} test images, coloured by label")
        except ImportError as e:  # the other pictures are still useful without matplotlib
            print(f"Skipping latent_scatter.png: {e}")
    return paths


def check_temperature(temperature, model: nn.Module) -> None:
    """A per-layer ``config.sample.temperature`` needs a model with that many layers."""
    if not isinstance(temperature, (tuple, list)):
        return
    layers = getattr(model, "num_layers", None)
    if layers is None or len(temperature) != layers:
        have = ("has no stochastic layers to take one each" if layers is None
                else f"has {layers} stochastic layers (top-down)")
        raise ConfigError(
            f"config.sample.temperature={tuple(temperature)!r} gives {len(temperature)} "
            f"per-layer values but model {type(model).__name__} {have}: give one number, or "
            + ("one per layer." if layers is not None else "use a model with layers."))


def samples_name(temperature) -> str:
    """The prior samples' picture name: ``samples_t0.8``, or per layer (top-down)
    ``samples_t1-0.8-0.6``."""
    values = np.atleast_1d(np.asarray(temperature, np.float64))
    return "samples_t" + "-".join(f"{v:g}" for v in values)


def _write_samples_only(outdir: str, params, test_images: np.ndarray, key: jax.Array, *,
                        model: nn.Module, binarization: str, settings: dict) -> dict[str, str]:
    """``--mode=sample`` for models without one latent space (deep hierarchies, diffusion):
    prior samples at the temperature, and reconstructions where the model has them."""
    temperature = settings["temperature"]
    samples = prior_samples(params, key, model=model, num=settings["num"],
                            temperature=temperature)
    name = samples_name(temperature)
    paths = {name: save_png(os.path.join(outdir, f"{name}.png"),
                            image_grid(np.asarray(samples), ncols=8))}
    if can_reconstruct(model):
        x = display_inputs(test_images[: min(settings["num"], 32)], binarization)
        recons = reconstructions(params, x, model=model, key=key)
        paths["reconstructions"] = save_png(os.path.join(outdir, "reconstructions.png"),
                                            reconstruction_grid(np.asarray(x),
                                                                np.asarray(recons)))
    return paths


# ------------------------------------------------------------------ training-time grids

def write_training_grids(workdir: str, step: int, params, test_images: np.ndarray,
                         key: jax.Array, *, model: nn.Module, binarization: str,
                         num: int = 64) -> dict[str, str]:
    """PNG grids of prior samples and of test reconstructions beside their originals, in
    ``workdir/images`` (``samples_<step>.png``, ``reconstructions_<step>.png``)."""
    samples, x, recons = _grid_arrays(params, test_images[:32], key, model=model,
                                      binarization=binarization, num=num)
    folder = os.path.join(workdir, "images")
    paths = {"samples": save_png(os.path.join(folder, f"samples_{step:08d}.png"),
                                 image_grid(np.asarray(samples), ncols=8))}
    if recons is not None:
        paths["reconstructions"] = save_png(
            os.path.join(folder, f"reconstructions_{step:08d}.png"),
            reconstruction_grid(np.asarray(x), np.asarray(recons), ncols=8))
    return paths


def _grid_arrays_fn(params, images, key, *, model, binarization, num):
    """(prior samples [num, H, W, C], inputs x [B, H, W, C], their reconstructions), as one
    compiled program: op by op they compiled dozens of small programs that stayed resident."""
    k_sample, k_bin = jax.random.split(key)
    samples = prior_samples(params, k_sample, model=model, num=num)
    x = preprocess(images, k_bin, binarization=binarization)
    recons = (reconstructions(params, x, model=model, key=k_sample)
              if can_reconstruct(model) else None)
    return samples, x, recons


_grid_arrays = announced(jax.jit(_grid_arrays_fn, static_argnames=("model", "binarization",
                                                                   "num")),
                         "the sample grids")
