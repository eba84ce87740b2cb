"""Training: TrainState, a jit-compiled data-parallel train step, and the host loop.

Randomness: ``config.seed`` gives one root key, split once by purpose (init, train, data
order, eval). Step s uses ``fold_in(train_key, s)`` and epoch e's order uses
``fold_in(order_key, e)``, so a resumed run repeats exactly what an uninterrupted run does.

Speed: ``config.train.steps_per_call`` steps run inside one ``lax.scan`` per dispatch; the
training set lives on the device(s) and batches are gathered there, so the host only sees
the averaged metrics once per call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import signal
import time
from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax import struct

from vae_jax import (active_units, checkpoint, data, distributions, evaluate, losses, models,
                     parallel, reliability, sampling)
from vae_jax.progress import Progress
from vae_jax import distributions as dist


@struct.dataclass
class TrainState:
    """step: int32 []; params / ema_params: the model's variables; opt_state: optax state."""

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf; the message names the step and the metric."""


# ------------------------------------------------------------------------------ building

def model_kwargs(config: ml_collections.ConfigDict) -> dict:
    kwargs = config.model.to_dict()
    kwargs.pop("name")
    return kwargs


def build_model(config: ml_collections.ConfigDict, image_shape) -> nn.Module:
    return models.get(config.model.name, image_shape=tuple(image_shape), **model_kwargs(config))


def burda_schedule(learning_rate: float, scale: float, steps_per_epoch: int,
                   num_stages: int = 8) -> optax.Schedule:
    """Burda et al. (2015)'s schedule: stage i = 0..7 runs 3^i · ``scale`` epochs at
    learning_rate · 10^(−i/7) (scale = 1: 3280 epochs in all), then stays at the last rate."""
    boundaries, total = [], 0.0
    for i in range(num_stages - 1):
        total += 3 ** i * scale
        boundaries.append(max(1, int(round(total * steps_per_epoch))))
    values = [learning_rate * 10 ** (-i / 7) for i in range(num_stages)]
    return lambda count: jnp.asarray(values)[jnp.searchsorted(
        jnp.asarray(boundaries), count, side="right")]


def make_optimizer(config: ml_collections.ConfigDict,
                   steps_per_epoch: Optional[int] = None) -> optax.GradientTransformation:
    """Adam (or AdamW) at ``config.optim.learning_rate``, optionally with global-norm clipping.

    ``config.optim.schedule``: "constant", "cosine" (over decay_steps) or "burda" (needs
    ``steps_per_epoch``; scaled by config.optim.burda_schedule_scale).
    """
    opt = config.optim
    lr = opt.learning_rate
    if opt.get("schedule", "constant") == "cosine":
        lr = optax.cosine_decay_schedule(opt.learning_rate, opt.decay_steps)
    elif opt.get("schedule", "constant") == "burda":
        # Restoring only needs the optimizer state's structure, which the boundaries do not
        # change; training always passes the real steps_per_epoch.
        lr = burda_schedule(opt.learning_rate, opt.get("burda_schedule_scale", 1.0),
                            steps_per_epoch or 1)
    if opt.name == "adam":
        tx = optax.adam(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps)
    elif opt.name == "adamw":
        tx = optax.adamw(lr, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
    else:
        raise ValueError(f"Unknown optimizer {opt.name!r}; valid: ['adam', 'adamw'].")
    if opt.get("grad_clip_norm", 0.0) > 0:
        tx = optax.chain(optax.clip_by_global_norm(opt.grad_clip_norm), tx)
    return tx


def create_train_state(key: jax.Array, model: nn.Module, optimizer: optax.GradientTransformation,
                       image_shape) -> TrainState:
    """Initialise parameters from ``key`` with a dummy batch [1, *image_shape].

    One compiled program: run op by op, Flax's initialisers and the optimizer's zeros
    compiled dozens of small programs that stayed resident (+116 MB of host memory for the
    default MLP's 12 MB state, benchmarks/README.md); the values are the same.
    """
    def init(key):
        x = jnp.zeros((1, *image_shape), jnp.float32)
        params = model.init(key, x, jax.random.fold_in(key, 1))
        # every output of a jit gets its own buffer, so the EMA can be donated with params
        return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=optimizer.init(params), ema_params=params)
    return jax.jit(init)(key)


# ------------------------------------------------------------------------------- the step

def train_step(state: TrainState, batch: jax.Array, train_key: jax.Array, *,
               loss_fn: Callable, optimizer: optax.GradientTransformation,
               binarization: str, beta_fn: Callable, ema_decay: float,
               skip_nonfinite: bool = False):
    """One update on a uint8 batch [B, H, W, C]. Returns (new state, metrics of scalars).

    ``loss_fn(params, x, key, beta=...) -> (loss, metrics)`` with the model already bound.
    ``skip_nonfinite``: when the loss or the gradient norm is NaN/Inf, keep the old params,
    optimizer and EMA state (the step counter still advances, so later steps use the same
    keys and batches as without the bad one); ``metrics["skipped"]`` is 1 for such a step.
    """
    key = jax.random.fold_in(train_key, state.step)
    k_data, k_z = jax.random.split(key)
    x = data.preprocess(batch, k_data, binarization=binarization)
    beta = beta_fn(state.step)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, metrics), grads = grad_fn(state.params, x, k_z, beta=beta)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p,
                       state.ema_params, params)
    grad_norm = global_norm(grads)
    metrics = dict(metrics, grad_norm=grad_norm, beta=beta)
    new = TrainState(state.step + 1, params, opt_state, ema)
    if skip_nonfinite:
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        new = jax.tree.map(lambda n, o: jnp.where(ok, n, o), new,
                           state.replace(step=state.step + 1))
        metrics["skipped"] = 1.0 - ok.astype(jnp.float32)
    return new, metrics


def global_norm(tree) -> jax.Array:
    """√(Σ x²) over every leaf: ``optax.global_norm``'s value.

    Written with |x|·|x| (the same floats) so that XLA does not merge these squares with
    Adam's g² (common-subexpression elimination): shared, the squares are written out and
    reduced in a separate pass; apart, the reduction fuses with its own square. On the CPU
    that is 6-10 % of the default step (benchmarks/step_breakdown.py).
    """
    return jnp.sqrt(sum(jnp.sum(jnp.abs(x) * jnp.abs(x)) for x in jax.tree.leaves(tree)))


def train_steps(state: TrainState, images: jax.Array, perm: jax.Array, train_key: jax.Array, *,
                step_fn: Callable, num_steps: int, batch_size: int, steps_per_epoch: int,
                batch_sharding) -> tuple[TrainState, dict]:
    """``num_steps`` steps of one epoch in a ``lax.scan``; metrics stacked [num_steps].

    images: uint8 [N, H, W, C] on device; perm: int32 [N], this epoch's order.
    """
    def body(state, _):
        index = state.step % steps_per_epoch
        batch = data.gather_batch(images, perm, index, batch_size)
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
        return step_fn(state, batch, train_key)

    return jax.lax.scan(body, state, None, length=num_steps)


class Trainer:
    """Holds the compiled functions for one config: build once, call many times."""

    def __init__(self, config: ml_collections.ConfigDict, model: nn.Module, mesh,
                 steps_per_epoch: int):
        self.config, self.model, self.mesh = config, model, mesh
        self.optimizer = make_optimizer(config, steps_per_epoch)
        loss_kwargs = {"num_samples": config.loss.num_samples}
        if config.loss.name == "elbo":
            loss_kwargs["free_bits"] = config.loss.free_bits
        loss_fn = functools.partial(losses.get(config.loss.name), model=model, **loss_kwargs)
        beta_fn = functools.partial(losses.beta_schedule, beta=config.loss.beta,
                                    warmup_steps=config.loss.warmup_steps)
        self.step_fn = evaluate.at_precision(functools.partial(
            train_step, loss_fn=loss_fn, optimizer=self.optimizer,
            binarization=config.data.binarization, beta_fn=beta_fn,
            ema_decay=config.train.ema_decay,
            skip_nonfinite=config.train.get("on_nonfinite", "raise") == "skip"),
            config.train.get("matmul_precision", None))
        self.steps_per_epoch = steps_per_epoch
        self.replicated = parallel.replicated(mesh)
        self.batch_sharding = parallel.batch_sharded(mesh)
        self._calls: dict[int, Callable] = {}
        self.permutation = jax.jit(data.epoch_permutation, static_argnums=2,
                                   out_shardings=self.replicated)

    def call(self, num_steps: int) -> Callable:
        """jit(state, images, perm, key) -> (state, metrics [num_steps]); state donated."""
        if num_steps not in self._calls:
            fn = functools.partial(
                train_steps, step_fn=self.step_fn, num_steps=num_steps,
                batch_size=self.config.train.batch_size, steps_per_epoch=self.steps_per_epoch,
                batch_sharding=self.batch_sharding)
            self._calls[num_steps] = jax.jit(fn, donate_argnums=0)
        return self._calls[num_steps]


# --------------------------------------------------------------------------- validation

def validate_config(config: ml_collections.ConfigDict) -> None:
    """Fail fast, before any data is loaded or compiled, naming the field and the fix."""
    def positive(path: str, value) -> None:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{path}={value!r} must be a positive number.")

    if config.model.name not in models.names():
        raise ValueError(f"Unknown model {config.model.name!r} (config.model.name); valid: "
                         f"{models.names()}.")
    if config.loss.name not in losses.names():
        raise ValueError(f"Unknown loss {config.loss.name!r} (config.loss.name); valid: "
                         f"{losses.names()}.")
    if config.data.binarization not in data.BINARIZATIONS:
        raise ValueError(f"Unknown binarization {config.data.binarization!r} "
                         f"(config.data.binarization); valid: {list(data.BINARIZATIONS)}.")
    for path in ("train.batch_size", "model.latent_dim", "optim.learning_rate",
                 "loss.num_samples", "train.steps_per_call", "eval.batch_size"):
        section, name = path.split(".")
        if path == "model.latent_dim" and name not in config.model:
            continue  # hierarchical models size their layers with model.latent_dims
        positive(f"config.{path}", config[section][name])
    if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
        raise ValueError("Set config.train.num_epochs or config.train.num_steps to a positive "
                         f"number (got {config.train.num_epochs} and {config.train.num_steps}).")
    if not 0.0 <= config.train.ema_decay < 1.0:
        raise ValueError(f"config.train.ema_decay={config.train.ema_decay} must be in [0, 1).")
    if (config.model.get("likelihood", "") in dist.DISCRETE_8BIT
            and config.data.binarization != "none"):
        raise ValueError(f"Likelihood {config.model.likelihood!r} models 8-bit pixels: set "
                         "config.data.binarization='none' (binarized pixels would use only "
                         "two of its 256 values).")
    if config.loss.name == "iwae" and (config.loss.beta != 1.0 or config.loss.warmup_steps
                                       or config.loss.free_bits):
        raise ValueError("The IWAE bound takes no beta, warm-up or free bits: set "
                         "config.loss.beta=1, warmup_steps=0, free_bits=0, or use loss 'elbo'.")
    _validate_reliability_fields(config)


NONFINITE_POLICIES = ("raise", "skip")
OPTIMIZERS = ("adam", "adamw")


def _validate_reliability_fields(config: ml_collections.ConfigDict) -> None:
    """The rest of validate_config: sizes, names and options, each error naming its field."""
    err = reliability.ConfigError
    if not isinstance(config.data.name, str) or not config.data.name:
        raise err(f"config.data.name={config.data.name!r}: give a data set name such as "
                  "'fashion_mnist', 'mnist', 'npz' or a prepared tfds name.")
    if config.optim.name not in OPTIMIZERS:
        raise err(f"Unknown optimizer {config.optim.name!r} (config.optim.name); valid: "
                  f"{list(OPTIMIZERS)}.")
    likelihood = config.model.get("likelihood", "bernoulli")
    if likelihood not in distributions.LIKELIHOODS:
        raise err(f"Unknown likelihood {likelihood!r} (config.model.likelihood); valid: "
                  f"{sorted(distributions.LIKELIHOODS)}.")
    def flat(value) -> tuple:  # hidden sizes may be nested, one tuple per layer (hvae)
        if isinstance(value, (tuple, list)):
            return tuple(v for item in value for v in (flat(item) or (None,)))
        return (value,)

    for name in ("latent_dim", "latent_dims", "hidden", "channels"):
        if name not in config.model:
            continue
        value = config.model[name]
        values = flat(value)
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v <= 0
                             for v in values):
            raise err(f"config.model.{name}={value!r}: sizes must be positive integers "
                      f"(e.g. --config.model.{name}={'(32,)' if name != 'latent_dim' else 4}).")
    for path in ("train.batch_size", "eval.batch_size", "train.steps_per_call",
                 "train.checkpoints_to_keep", "loss.num_samples"):
        section, name = path.split(".")
        value = config[section].get(name, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise err(f"config.{path}={value!r} must be a positive integer.")
    for path in ("optim.grad_clip_norm", "train.checkpoint_every_steps",
                 "train.eval_every_steps", "train.num_steps", "train.num_epochs",
                 "loss.warmup_steps", "loss.free_bits"):
        section, name = path.split(".")
        value = config[section].get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise err(f"config.{path}={value!r} must be >= 0 (0 turns it off / means the "
                      "default).")
    for path, default in (("train.matmul_precision", None),
                          ("eval.matmul_precision", evaluate.EVAL_PRECISION)):
        section, name = path.split(".")
        value = config[section].get(name, default)
        if value is not None and value not in evaluate.PRECISIONS:
            raise err(f"config.{path}={value!r}; valid: {list(evaluate.PRECISIONS)} "
                      "('highest' computes float32 products on every backend; 'default' "
                      "lets GPUs use TF32).")
    policy = config.train.get("on_nonfinite", "raise")
    if policy not in NONFINITE_POLICIES:
        raise err(f"config.train.on_nonfinite={policy!r}; valid: {list(NONFINITE_POLICIES)} "
                  "('raise' stops at the first NaN/Inf keeping the last good checkpoint, "
                  "'skip' discards such updates and counts them).")


# ------------------------------------------------------------------------------ the loop

def _eval_precision(config: ml_collections.ConfigDict) -> str:
    return config.eval.get("matmul_precision", evaluate.EVAL_PRECISION)


def _keys(seed: int) -> dict[str, jax.Array]:
    init, train, order, evaluation = jax.random.split(jax.random.key(seed), 4)
    return {"init": init, "train": train, "order": order, "eval": evaluation}


def _next_boundary(step: int, every: int) -> int:
    return (step // every + 1) * every


def next_stop(step: int, total_steps: int, steps_per_epoch: int, steps_per_call: int,
              checkpoint_every: int, eval_every: int) -> int:
    """Where the call starting at ``step`` ends: the next epoch end, checkpoint, evaluation
    or ``steps_per_call`` boundary. Calls count from the epoch's start, so every epoch is
    cut into the same lengths (steps_per_call and the remainder): each new length would
    compile, and keep, one more program (~2 s and ~25 MB on the CPU)."""
    epoch_start = step - step % steps_per_epoch
    return min(total_steps, epoch_start + steps_per_epoch,
               _next_boundary(step, checkpoint_every), _next_boundary(step, eval_every),
               epoch_start + _next_boundary(step - epoch_start, steps_per_call))


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def write_images(workdir: str, step: int, params, test_images: np.ndarray, key: jax.Array, *,
                 model: nn.Module, binarization: str, num: int = 64) -> dict[str, str]:
    """PNG grids of prior samples and of test reconstructions beside their originals."""
    samples, x, recons = _image_arrays(params, test_images[:32], key, model=model,
                                       binarization=binarization, num=num)
    folder = os.path.join(workdir, "images")
    return {
        "samples": sampling.save_png(os.path.join(folder, f"samples_{step:08d}.png"),
                                     sampling.image_grid(np.asarray(samples), ncols=8)),
        "reconstructions": sampling.save_png(
            os.path.join(folder, f"reconstructions_{step:08d}.png"),
            sampling.reconstruction_grid(np.asarray(x), np.asarray(recons), ncols=8)),
    }


@functools.partial(jax.jit, static_argnames=("model", "binarization", "num"))
def _image_arrays(params, images, key, *, model, binarization, num):
    """(prior samples [num, H, W, C], inputs x [B, H, W, C], their reconstructions), as one
    compiled program: op by op they compiled ~40 small programs that stayed resident."""
    k_sample, k_bin = jax.random.split(key)
    samples = sampling.prior_samples(params, k_sample, model=model, num=num)
    x = data.preprocess(images, k_bin, binarization=binarization)
    return samples, x, sampling.reconstructions(params, x, model=model)


def _setup(config: ml_collections.ConfigDict, workdir: str, *, check_workdir: bool = True):
    """Every check that can fail before anything is compiled or written to ``workdir``."""
    validate_config(config)
    if check_workdir:
        reliability.check_workdir(workdir)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    parallel.check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
    ds = data.load(config.data.name, data_dir=config.data.get("dir") or None,
                   download=config.data.get("download", False))
    if config.train.batch_size > len(ds.train_images):
        raise ValueError(f"config.train.batch_size={config.train.batch_size} exceeds the "
                         f"{len(ds.train_images)} training images of {ds.name!r}.")
    model = build_model(config, ds.image_shape)
    reliability.check_model_fits(model, ds.image_shape, config.model.name)
    return mesh, ds, model


def _active_units_summary(params, images, key, *, model, config, mesh) -> dict[str, float]:
    """{"test_au_<layer>": active units per layer} (Burda et al.'s A_u > 10⁻²)."""
    counts = active_units.active_units(params, images, model=model, key=key, mesh=mesh,
                                       binarization=config.data.binarization,
                                       batch_size=config.eval.batch_size)
    return {f"test_au_{layer}": float(n) for layer, n in counts.items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> TrainState:
    """Train ``config`` in ``workdir`` (resuming from its latest good checkpoint) and evaluate.

    Writes checkpoints (``workdir/checkpoints``), ``metrics.jsonl`` (each step once, even
    across kills), TensorBoard event files, PNG grids (``workdir/images``) and
    ``config.json``; multi-process, only process 0 writes (orbax coordinates checkpoints).
    Every check runs before anything is compiled or created in ``workdir``. Non-finite
    metrics raise NonFiniteLossError (the last good checkpoint is kept) unless
    ``config.train.on_nonfinite="skip"``. SIGTERM/SIGINT: finish the current call, save,
    raise TrainingInterrupted (a SystemExit, code 128 + signal). Returns the final TrainState.
    """
    from clu import metric_writers  # imports TensorFlow; keep it out of library imports

    mesh, ds, model = _setup(config, workdir)
    os.makedirs(workdir, exist_ok=True)
    keys = _keys(config.seed)
    steps_per_epoch = len(ds.train_images) // config.train.batch_size
    total_steps = (config.train.num_steps if config.train.num_steps > 0
                   else config.train.num_epochs * steps_per_epoch)
    trainer = Trainer(config, model, mesh, steps_per_epoch)
    is_main = jax.process_index() == 0
    skip_nonfinite = config.train.get("on_nonfinite", "raise") == "skip"

    state = create_train_state(keys["init"], model, trainer.optimizer, ds.image_shape)
    state = jax.device_put(state, trainer.replicated)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    mngr = checkpoint.manager(ckpt_dir, max_to_keep=config.train.checkpoints_to_keep)
    restored, restored_step, _ = checkpoint.restore_latest_good(
        mngr, state, quarantine=ckpt_dir + ".damaged")
    if restored is not None:
        state = restored
        logging.info("Resumed from step %d in %s", restored_step, workdir)
    metrics_log = reliability.MetricsLog(os.path.join(workdir, "metrics.jsonl"), is_main)
    dropped = metrics_log.truncate_after(int(state.step))  # records a killed run got ahead by
    if dropped:
        logging.info("Dropped %d metrics records after step %d (redone now).", dropped,
                     int(state.step))
    if is_main:
        _write_json(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))

    train_images = parallel.put_global(ds.train_images, mesh, trainer.replicated)
    num_train = len(ds.train_images)
    # The loop reads only the device copy; on the CPU backend that copy is host memory
    # too, so keeping the numpy one would hold the training set twice.
    ds = dataclasses.replace(ds, train_images=None)
    # placed once, replicated over the mesh: the transfer guard below forbids the implicit
    # device-to-device copy a single-device key would need on >1 device or process
    # (a jit, not device_put: multi-process, device_put refuses non-addressable shardings)
    train_key = jax.jit(lambda k: k, out_shardings=trainer.replicated)(keys["train"])
    elbo_fn = evaluate.make_elbo_fn(model, binarization=config.data.binarization,
                                    num_samples=config.eval.num_samples,
                                    precision=_eval_precision(config))
    writer = metric_writers.create_default_writer(workdir, just_logging=not is_main,
                                                  asynchronous=False)
    progress = Progress(total_steps)
    ckpt_every = config.train.checkpoint_every_steps or steps_per_epoch
    eval_every = config.train.eval_every_steps or steps_per_epoch
    step = int(state.step)
    saved_step = step if restored is not None else None
    perm, perm_epoch = None, -1
    # on any exit (done, NaN, signal, error) flush the metrics and close the manager
    with reliability.StopSignal() as stop, _closing(writer, mngr):
        while step < total_steps:
            epoch = step // steps_per_epoch
            if epoch != perm_epoch:
                perm = trainer.permutation(keys["order"], jax.device_put(np.int32(epoch)),
                                           num_train)
                perm_epoch = epoch
            stop_at = next_stop(step, total_steps, steps_per_epoch, config.train.steps_per_call,
                                ckpt_every, eval_every)
            t0 = time.perf_counter()
            with jax.transfer_guard("disallow"):  # data and batches never leave the device
                state, metrics = trainer.call(stop_at - step)(state, train_images, perm,
                                                              train_key)
            metrics = jax.device_get(metrics)  # [num_steps] each: the one host sync per call
            rate = (stop_at - step) / (time.perf_counter() - t0)
            metrics = _summarize_call(metrics, step, skip_nonfinite, mngr)
            step = stop_at
            writer.write_scalars(step, {f"train_{k}": v for k, v in metrics.items()}
                                 | {"steps_per_s": rate})
            metrics_log.write(step, "train", metrics)
            progress.update(step, step / steps_per_epoch, metrics["loss"], rate)
            if step % eval_every == 0 or step == total_steps:
                params = state.ema_params if config.eval.use_ema else state.params
                test = evaluate.per_example(elbo_fn, params, ds.test_images, keys["eval"],
                                            batch_size=config.eval.batch_size, mesh=mesh)
                summary = evaluate.summarize(test, prefix="test_")
                summary |= _active_units_summary(params, ds.test_images, keys["eval"],
                                                 model=model, config=config, mesh=mesh)
                writer.write_scalars(step, summary)
                metrics_log.write(step, "eval", summary)
                progress.newline()
                logging.info("step %d: %s", step,
                             " ".join(f"{k}={v:.3f}" for k, v in summary.items()))
                print(f"eval step {step}: " + " ".join(f"{k} {v:.3f}"
                                                       for k, v in summary.items()), flush=True)
                if is_main:  # on host copies: no computation over other processes' devices
                    write_images(workdir, step, jax.device_get(params), ds.test_images,
                                 keys["eval"], model=model,
                                 binarization=config.data.binarization)
            if step % ckpt_every == 0 or step == total_steps:
                checkpoint.save(mngr, step, state)
                saved_step = step
            if step < total_steps and stop.requested():
                if saved_step != step:
                    checkpoint.save(mngr, step, state)
                name = signal.Signals(stop.signum).name
                message = (f"Stopped by {name} at step {step}/{total_steps}; checkpoint saved "
                           f"in {mngr.directory}. Run the same command to resume.")
                print(message, flush=True)
                logging.warning(message)
                raise reliability.TrainingInterrupted(128 + stop.signum)
    return state


@contextlib.contextmanager
def _closing(writer, mngr):
    try:
        yield
    finally:
        writer.flush()
        writer.close()
        mngr.close()


def _summarize_call(metrics: dict, start: int, skip_nonfinite: bool, mngr) -> dict[str, float]:
    """Per-step metrics [n] of one call from ``start`` -> their means; NaN/Inf handling.

    "raise": NonFiniteLossError naming the first bad step and metric. The state of this
    call is never saved, so the last good checkpoint stays the latest. "skip": means over
    the steps that were applied, plus ``skipped`` (how many were discarded).
    """
    metrics = {k: np.asarray(v, np.float64) for k, v in metrics.items()}
    if skip_nonfinite:
        skipped = metrics.pop("skipped") > 0
        if skipped.any():
            logging.warning("Skipped %d non-finite updates at steps %s.", int(skipped.sum()),
                            (start + 1 + np.flatnonzero(skipped)).tolist())
        kept = ~skipped
        out = {k: float(np.mean(v[kept])) if kept.any() else float("nan")
               for k, v in metrics.items()}
        return out | {"skipped": float(skipped.sum())}
    bad = {k: ~np.isfinite(v) for k, v in metrics.items()}
    if any(b.any() for b in bad.values()):
        first = min(int(np.argmax(b)) for b in bad.values() if b.any())
        names = sorted(k for k, b in bad.items() if b[first])
        values = {k: float(metrics[k][first]) for k in names}
        latest = mngr.latest_step()
        kept = (f"The last good checkpoint, step {latest} in {mngr.directory}, is kept"
                if latest is not None else "No checkpoint had been written yet")
        raise NonFiniteLossError(
            f"Non-finite {names} = {values} at step {start + first + 1} (the update from step "
            f"{start + first}). {kept}; nothing after it was saved. Lower "
            "config.optim.learning_rate, set config.optim.grad_clip_norm, or set "
            "config.train.on_nonfinite='skip' to discard such updates.")
    return {k: float(np.mean(v)) for k, v in metrics.items()}


def restore_state(config: ml_collections.ConfigDict, workdir: str, model: nn.Module,
                  image_shape, step: Optional[int] = None,
                  steps_per_epoch: Optional[int] = None) -> TrainState:
    """The TrainState saved in ``workdir`` at ``step`` (default: the latest that verifies)."""
    keys = _keys(config.seed)
    state = create_train_state(keys["init"], model, make_optimizer(config, steps_per_epoch),
                               image_shape)
    mngr = checkpoint.manager(os.path.join(workdir, "checkpoints"),
                              max_to_keep=config.train.checkpoints_to_keep)
    try:
        if step is not None:
            return checkpoint.restore(mngr, state, step)
        restored, _, skipped = checkpoint.restore_latest_good(mngr, state)  # read-only
        if restored is None:
            raise checkpoint.CheckpointError(
                f"No restorable checkpoint in {mngr.directory}"
                + (f"; damaged: {[p for p, _ in skipped]}" if skipped else "") + ".")
        return restored
    finally:
        mngr.close()


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: Optional[int] = None) -> dict:
    """``--mode=eval``: test ELBO, IWAE-k and importance-sampled log p(x) of a checkpoint.

    k for log p(x) is ``config.eval.num_importance_samples`` (5000 in the literature) and
    for the IWAE bound ``config.eval.iwae_k`` (0 skips either); samples stream
    ``config.eval.chunk`` at a time over batches of ``config.eval.ll_batch_size`` images.
    Every figure uses the same binarization of the test set. Printed and written to
    workdir/eval.json with the step, k, data set and seed; bits/dim too for 8-bit
    likelihoods (distributions.DISCRETE_8BIT).
    """
    ll_batch = config.eval.get("ll_batch_size", config.eval.batch_size)
    # The ELBO's batch size fixes which binarization each image gets; a different batching
    # for log p(x) would binarize the test set differently.
    if config.data.binarization == "dynamic" and ll_batch != config.eval.batch_size:
        raise ValueError("With dynamic binarization config.eval.ll_batch_size must equal "
                         "config.eval.batch_size so every figure sees the same binarized "
                         "test set.")
    mesh, ds, model = _setup(config, workdir)
    steps_per_epoch = len(ds.train_images) // config.train.batch_size
    state = restore_state(config, workdir, model, ds.image_shape, step, steps_per_epoch)
    params = state.ema_params if config.eval.use_ema else state.params
    binarization = config.data.binarization
    elbo_fn = evaluate.make_elbo_fn(model, binarization=binarization,
                                    num_samples=config.eval.num_samples,
                                    precision=_eval_precision(config))
    keys = _keys(config.seed)
    # A quick look (or a slow machine) can evaluate the first n test images only.
    n_test = config.eval.get("num_test_images", 0) or len(ds.test_images)
    test_images = ds.test_images[:n_test]
    t0 = time.perf_counter()
    test = evaluate.per_example(elbo_fn, params, test_images, keys["eval"],
                                batch_size=config.eval.batch_size, mesh=mesh)
    result = evaluate.summarize(test, prefix="test_") | _active_units_summary(
        params, ds.test_images, keys["eval"], model=model, config=config, mesh=mesh) | {
        "step": int(state.step), "dataset": ds.name, "seed": config.seed,
        "num_test_images": len(test_images), "use_ema": bool(config.eval.use_ema),
        "binarization": binarization, "likelihood": config.model.get("likelihood", ""),
        "test_elbo_stderr": evaluate.mean_and_stderr(test["elbo"])[1],
        "elbo_seconds": time.perf_counter() - t0}
    parallel.check_batch_size(ll_batch, mesh, "config.eval.ll_batch_size")
    for name, k in (("iwae", config.eval.get("iwae_k", 0)),
                    ("log_px", config.eval.get("num_importance_samples", 0))):
        if k <= 0:
            continue
        t0 = time.perf_counter()
        ll = evaluate.log_likelihood(params, test_images, keys["eval"], model=model,
                                     num_samples=k, chunk=config.eval.get("chunk", 100),
                                     batch_size=ll_batch, binarization=binarization, mesh=mesh,
                                     precision=_eval_precision(config))
        result |= {f"test_{name}": ll["mean"], f"test_{name}_stderr": ll["stderr"],
                   f"{name}_k": k, f"{name}_chunk": config.eval.get("chunk", 100),
                   f"{name}_seconds": time.perf_counter() - t0}
        if config.model.get("likelihood", "") in dist.DISCRETE_8BIT:
            result |= {f"test_{name}_bpd": ll["bpd"], f"test_{name}_bpd_stderr": ll["bpd_stderr"]}
    if config.model.get("likelihood", "") in dist.DISCRETE_8BIT:
        result["test_elbo_bpd"] = float(dist.bits_per_dim(result["test_elbo"],
                                                          int(np.prod(ds.image_shape))))
    print(json.dumps(result, indent=2, sort_keys=True))
    if jax.process_index() == 0:
        _write_json(os.path.join(workdir, "eval.json"), result)
    return result
