"""Training: TrainState, the jit-compiled data-parallel train step, its ``lax.scan`` over
many steps, the ``Trainer`` that holds the compiled calls, and the call schedule.

Randomness: step s uses ``fold_in(train_key, s)`` and epoch e's order uses
``fold_in(order_key, e)`` (keys from ``root_keys(config.seed)``), so a resumed run repeats
exactly what an uninterrupted run does.

Speed: ``steps_per_call`` steps run inside one ``lax.scan`` per dispatch; the training set
lives on the device(s) and batches are gathered there, so the host only sees the metrics
once per call. The training set is split over the devices (``data.sharded``), 1/n on
each; the batch of every step is gathered from the shards on device. The host loop that
drives it is ``vae_jax.run.experiment``.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging
from flax import struct

from vae_jax import parallel
from vae_jax.data.batches import epoch_permutation, gather_batch, preprocess
from vae_jax.data.sharded import gather_sharded, put_sharded
from vae_jax.errors import NonFiniteLossError
from vae_jax.ops.compile import announced
from vae_jax.ops.initialize import initialize
from vae_jax.precision import at_precision


def root_keys(seed: int) -> dict[str, jax.Array]:
    """The base key of ``seed`` split once by purpose: init, train, order (data), eval."""
    init, train, order, evaluation = jax.random.split(jax.random.key(seed), 4)
    return {"init": init, "train": train, "order": order, "eval": evaluation}


@struct.dataclass
class TrainState:
    """step: int32 []; params: the model's variables; opt_state: optax state; ema_params:
    the parameters' exponential moving average, or None when the run keeps none
    (``config.train.ema_decay = 0``: no pass over the parameters is spent on it)."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any


def create_train_state(key: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation,
                       image_shape, *, ema: bool = True) -> TrainState:
    """Initialise parameters from ``key`` with a dummy batch ``[1, *image_shape]``; ``ema``:
    keep an EMA of the parameters (starting at them), else ``ema_params=None``.

    The parameters are ``model.init``'s, computed by ``ops.initialize`` (one vectorised
    draw per parameter shape: the same values, compiled in seconds rather than one Threefry
    program per parameter); the rest is one compiled program: run op by op, the
    optimizer's zeros compiled dozens of small programs that stayed resident in host
    memory (benchmarks/README.md).
    """
    x = jnp.zeros((1, *image_shape), jnp.float32)
    params = initialize(model.init, key, x, jax.random.fold_in(key, 1))

    def state(params):
        # every output of a jit gets its own buffer, so the EMA can be donated with params
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params), ema_params=params if ema else None)
    return jax.jit(state)(params)


# ------------------------------------------------------------------------------- the step

def train_step(state: TrainState, batch: jax.Array, train_key: jax.Array, *,
               loss_fn: Callable, optimizer: optax.GradientTransformation,
               binarization: str, beta_fn: Callable, ema_decay: float,
               skip_nonfinite: bool = False, skip_grad_norm: float = 0.0):
    """One update on a uint8 batch [B, H, W, C]. Returns (new state, metrics of scalars).

    ``loss_fn(params, x, key, beta=...) -> (loss, metrics)`` with the model already bound.
    A skipped update keeps the old params, optimizer and EMA state; the step counter still
    advances, so later steps use the same keys and batches as without the bad one. Two
    reasons, each counted in its own metric (1 for a skipped step) when it is on:

    * ``skip_nonfinite``: the loss or the gradient norm is NaN/Inf -> ``skipped_nonfinite``;
    * ``skip_grad_norm`` > 0: the global gradient norm (before any clipping) exceeds it
      (VDVAE's skip threshold) -> ``skipped_grad_norm``.

    With either on, ``metrics["skipped"]`` is 1 for a step skipped for any reason.
    """
    key = jax.random.fold_in(train_key, state.step)
    k_data, k_z = jax.random.split(key)
    x = preprocess(batch, k_data, binarization=binarization)
    beta = beta_fn(state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, x, k_z, beta=beta)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = None if state.ema_params is None else jax.tree.map(
        lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
    grad_norm = global_norm(grads)
    metrics = dict(metrics, grad_norm=grad_norm, beta=beta)
    new = TrainState(state.step + 1, params, opt_state, ema)
    reasons = {}
    if skip_nonfinite:
        reasons["nonfinite"] = ~(jnp.isfinite(loss) & jnp.isfinite(grad_norm))
    if skip_grad_norm > 0:  # a NaN norm is not > the threshold: that is the NaN policy's
        reasons["grad_norm"] = grad_norm > skip_grad_norm
    if reasons:
        skip = functools.reduce(jnp.logical_or, reasons.values())
        new = jax.tree.map(lambda n, o: jnp.where(skip, o, n), new,
                           state.replace(step=state.step + 1))
        metrics |= {f"skipped_{r}": s.astype(jnp.float32) for r, s in reasons.items()}
        metrics["skipped"] = skip.astype(jnp.float32)
    return new, metrics


def global_norm(tree) -> jax.Array:
    """√(Σ x²) over every leaf: ``optax.global_norm``'s value.

    Written with ``|x|·|x|`` (the same floats) so that XLA does not merge these squares with
    Adam's g² (common-subexpression elimination): shared, the squares are written out and
    reduced in a separate pass; apart, the reduction fuses with its own square
    (benchmarks/step_breakdown.py measures the difference).
    """
    return jnp.sqrt(sum(jnp.sum(jnp.abs(x) * jnp.abs(x)) for x in jax.tree.leaves(tree)))


def train_steps(state: TrainState, images: jax.Array, perm: jax.Array, train_key: jax.Array, *,
                step_fn: Callable, num_steps: int, batch_size: int, steps_per_epoch: int,
                batch_sharding, row_mesh=None) -> tuple[TrainState, dict]:
    """``num_steps`` steps of one epoch in a ``lax.scan``; metrics stacked [num_steps].

    images: uint8 [N', H, W, C] on device, split over ``row_mesh``'s data axis
    (``data.put_sharded``, N' >= N rows) or, with ``row_mesh=None``, whole on every device;
    perm: int32 [N], this epoch's order. Either way step s sees ``images[perm[i*B:(i+1)*B]]``.
    """
    def body(state, _):
        index = state.step % steps_per_epoch
        if row_mesh is None:
            batch = gather_batch(images, perm, index, batch_size)
        else:
            batch = gather_sharded(images, perm, index, batch_size, row_mesh)
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return step_fn(state, batch, train_key)

    return jax.lax.scan(body, state, None, length=num_steps)


def train_steps_streamed(state: TrainState, batches: jax.Array, train_key: jax.Array, *,
                         step_fn: Callable, batch_sharding) -> tuple[TrainState, dict]:
    """One step per batch of ``batches`` (uint8 [num_steps, B, H, W, C], read on the host:
    ``data.Stream``) in a ``lax.scan``; metrics stacked [num_steps]."""
    def body(state, batch):
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return step_fn(state, batch, train_key)

    return jax.lax.scan(body, state, batches)


class Trainer:
    """The compiled train calls for one model and objective: build once, call many times.

    ``loss_fn(params, x, key, *, beta) -> (loss, metrics)`` has the model bound
    (``run.build.build_loss``); ``beta_fn(step) -> β``. ``run.build.build_trainer`` builds one
    from a config.
    """

    def __init__(self, model: nn.Module, mesh, *, loss_fn: Callable,
                 optimizer: optax.GradientTransformation, beta_fn: Callable,
                 binarization: str, ema_decay: float, batch_size: int, steps_per_epoch: int,
                 skip_nonfinite: bool = False, skip_grad_norm: float = 0.0,
                 matmul_precision: Optional[str] = None, shard_data: bool = True):
        self.model, self.mesh, self.optimizer = model, mesh, optimizer
        # True: the training set is split over the devices (1/n each, put_train_images)
        self.shard_data = shard_data
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.step_fn = at_precision(functools.partial(
            train_step, loss_fn=loss_fn, optimizer=optimizer, binarization=binarization,
            beta_fn=beta_fn, ema_decay=ema_decay, skip_nonfinite=skip_nonfinite,
            skip_grad_norm=skip_grad_norm),
            matmul_precision)
        self.replicated = parallel.replicated(mesh)
        self.batch_sharding = parallel.batch_sharded(mesh)
        self._calls: dict[int | str, Callable] = {}
        self.permutation = jax.jit(epoch_permutation, static_argnums=2,
                                   out_shardings=self.replicated)

    def put_train_images(self, images: np.ndarray, *, num_rows: Optional[int] = None,
                         row_offset: int = 0) -> jax.Array:
        """The training set on the devices as ``call`` expects it: split over the data axis
        (``data.put_sharded``; ``images`` may be only this process's rows, from
        ``row_offset`` of ``num_rows``) or, with ``shard_data=False``, whole on each."""
        if self.shard_data:
            return put_sharded(images, self.mesh, num_rows=num_rows,
                                    row_offset=row_offset)
        return parallel.put_global(images, self.mesh, self.replicated)

    def call(self, num_steps: int) -> Callable:
        """jit(state, images, perm, key) -> (state, metrics [num_steps]); state donated. A
        compilation says so ("compiling the train step ... 12.3 s", ``ops.compile.announced``)."""
        if num_steps not in self._calls:
            fn = functools.partial(
                train_steps, step_fn=self.step_fn, num_steps=num_steps,
                batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch,
                batch_sharding=self.batch_sharding,
                row_mesh=self.mesh if self.shard_data else None)
            self._calls[num_steps] = announced(jax.jit(fn, donate_argnums=0),
                                               "the train step")
        return self._calls[num_steps]

    def call_streamed(self) -> Callable:
        """jit(state, batches [n, B, ...], key) -> (state, metrics [n]); state donated."""
        if "streamed" not in self._calls:
            self._calls["streamed"] = announced(jax.jit(functools.partial(
                train_steps_streamed, step_fn=self.step_fn,
                batch_sharding=self.batch_sharding), donate_argnums=0), "the train step")
        return self._calls["streamed"]


# ---------------------------------------------------------------------- the call schedule

def _next_boundary(step: int, every: int) -> int:
    return (step // every + 1) * every


def call_length(steps_per_epoch: int, steps_per_call: int) -> int:
    """The steps of a full call: the divisor of ``steps_per_epoch`` nearest to
    ``steps_per_call`` within [steps_per_call / 2, 2 · steps_per_call] (so an epoch is one
    program's calls, not also a remainder's: 468 steps at 100 a call -> 4 × 117), else
    ``steps_per_call`` itself (then the epoch ends with a shorter call)."""
    near = [d for d in range(max(1, -(-steps_per_call // 2)), 2 * steps_per_call + 1)
            if steps_per_epoch % d == 0]
    return min(near, key=lambda d: (abs(d - steps_per_call), -d)) if near else steps_per_call


def next_stop(step: int, total_steps: int, steps_per_epoch: int, steps_per_call: int,
              checkpoint_every: int, eval_every: int) -> int:
    """Where the call starting at ``step`` ends: the next epoch end, checkpoint, evaluation
    or call boundary (``call_length``). Calls count from the epoch's start, so every epoch
    is cut into the same lengths (one, or a full call and the remainder): each new length
    would compile, and keep, one more program (benchmarks/README.md)."""
    steps_per_call = call_length(steps_per_epoch, steps_per_call)
    epoch_start = step - step % steps_per_epoch
    return min(total_steps, epoch_start + steps_per_epoch,
               _next_boundary(step, checkpoint_every), _next_boundary(step, eval_every),
               epoch_start + _next_boundary(step - epoch_start, steps_per_call))



def summarize_call(metrics: dict, start: int, *, skip_nonfinite: bool,
                   last_checkpoint: Callable[[], str],
                   skip_grad_norm: float = 0.0) -> dict[str, float]:
    """Per-step metrics [n] of one call from ``start`` -> their means; skipped updates and
    NaN/Inf handling.

    Skipped updates (``train_step``'s ``skipped`` / ``skipped_<reason>``) are left out of
    the means and counted: ``skipped`` (all) and ``skipped_<reason>`` per call; each
    reason's steps are logged, and when more than half of the call's updates were skipped a
    warning (logged and printed) names the threshold and the fix.
    "raise" (``skip_nonfinite`` False): NonFiniteLossError naming the first bad step and
    metric. The state of this call is never saved, so the last good checkpoint stays the
    latest; ``last_checkpoint()`` says which it is, for the message. "skip": non-finite
    updates were discarded (reason ``nonfinite``).
    """
    metrics = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
    reasons = {k: metrics.pop(k) > 0 for k in sorted(metrics) if k.startswith("skipped_")}
    skipped = metrics.pop("skipped", np.zeros(0)) > 0
    if not skip_nonfinite:
        _raise_on_nonfinite(metrics, start, last_checkpoint)
    if not reasons:
        return {k: float(np.mean(v)) for k, v in metrics.items()}
    for name, bad in reasons.items():
        if bad.any():
            logging.warning("Skipped %d updates (%s) at steps %s.", int(bad.sum()),
                            _REASONS.get(name, name),
                            (start + 1 + np.flatnonzero(bad)).tolist())
    if skipped.sum() * 2 > len(skipped):
        message = (f"Most updates were skipped: {int(skipped.sum())} of {len(skipped)} in "
                   f"steps {start + 1}-{start + len(skipped)} ("
                   + ", ".join(f"{int(b.sum())} {_REASONS.get(n, n)}" for n, b in reasons.items())
                   + "). Training is not progressing.")
        if "skipped_grad_norm" in reasons and reasons["skipped_grad_norm"].any():
            message += (f" The gradient norm exceeded config.optim.skip_grad_norm="
                        f"{skip_grad_norm:g}: raise it above the typical norm (train_grad_norm), "
                        "or lower config.optim.learning_rate.")
        if "skipped_nonfinite" in reasons and reasons["skipped_nonfinite"].any():
            message += (" Non-finite losses or gradients: lower config.optim.learning_rate "
                        "or set config.optim.grad_clip_norm.")
        logging.warning(message)
        print("WARNING: " + message, flush=True)
    kept = ~skipped
    out = {k: float(np.mean(v[kept])) if kept.any() else float("nan")
           for k, v in metrics.items()}
    return out | {k: float(b.sum()) for k, b in reasons.items()} | {
        "skipped": float(skipped.sum())}


_REASONS = {"skipped_nonfinite": "non-finite loss or gradients",
            "skipped_grad_norm": "gradient norm above config.optim.skip_grad_norm"}


def _raise_on_nonfinite(metrics: dict, start: int, last_checkpoint: Callable[[], str]) -> None:
    bad = {k: ~np.isfinite(v) for k, v in metrics.items()}
    if any(b.any() for b in bad.values()):
        first = min(int(np.argmax(b)) for b in bad.values() if b.any())
        names = sorted(k for k, b in bad.items() if b[first])
        values = {k: float(metrics[k][first]) for k in names}
        raise NonFiniteLossError(
            f"Non-finite {names} = {values} at step {start + first + 1} (the update from step "
            f"{start + first}). {last_checkpoint()}; nothing after it was saved. Lower "
            "config.optim.learning_rate, set config.optim.grad_clip_norm, or set "
            "config.train.on_nonfinite='skip' to discard such updates.")
