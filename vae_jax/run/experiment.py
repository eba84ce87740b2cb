"""The modes of a run: ``train_and_evaluate``, ``evaluate_checkpoint``,
``sample_checkpoint`` and ``export_params``, sharing ``setup`` (config → data → model →
checks) and ``restore_state`` / ``restore_params`` (``params_file``). ``run`` is what the
``vae-jax`` command (``vae_jax.cli``) calls; a notebook calls the same functions.

Every check runs in ``setup``, before anything is compiled or created in the workdir, so a
run that fails them leaves the workdir as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from typing import Optional

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from vae_jax import config as config_lib
from vae_jax import data, errors, parallel, progress, train
from vae_jax.errors import ConfigError, TrainingInterrupted
from vae_jax.evaluate import sampling, suite
from vae_jax.progress import Progress
from vae_jax.run import build, checkpoint, jit_cache, logs, params_file, runtime
from vae_jax.run.params_file import is_params_file, restore_params
from vae_jax.run.params_file import restore_state  # noqa: F401 (public here too)
from vae_jax.train import optim
from vae_jax.train.inputs import DeviceInput, StreamInput

MODES = ("train", "eval", "sample", "export")
# Free bytes asked for before an evaluation or the pictures run (eval.json is a few KB; the
# PNG grids of --mode=sample well under a MB): a full disk is refused before the work, not
# after it. An export asks for its file's size.
ROOM_EVAL, ROOM_SAMPLES, ROOM_MARGIN = 64 << 10, 4 << 20, 64 << 10

@dataclasses.dataclass
class Setup:
    """What every mode starts from: the resolved config, the mesh, the data and the model."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    ds: data.Dataset
    model: nn.Module
    pipeline: str = "device"   # the training input: "device" or "stream" (data.pipeline)
    pipeline_reason: str = ""

    @property
    def steps_per_epoch(self) -> int:
        return len(self.ds.train_images) // self.config.train.batch_size


def setup(config: ml_collections.ConfigDict, workdir: str, *,
          check_workdir: bool = True, label: Optional[str] = None) -> Setup:
    """Resolve and validate ``config``, check ``workdir`` (named ``label`` in messages),
    load the data, build the model and check it fits the images. Creates nothing."""
    config = config_lib.resolve(config)
    if check_workdir:
        runtime.check_workdir(workdir, label)
    mesh = parallel.data_mesh()
    parallel.check_batch_size(config.train.batch_size, mesh)
    parallel.check_batch_size(config.eval.batch_size, mesh, "config.eval.batch_size")
    ds = data.load(config.data.name, data_dir=config.data.dir or None,
                   download=config.data.download, lazy_train=True)
    n_test = config.eval.num_test_images or len(ds.test_images)
    if min(n_test, len(ds.test_images)) < mesh.size:
        raise ConfigError(
            f"{len(ds.test_images)} test images of {ds.name!r}"
            + (f" (config.eval.num_test_images={n_test})" if config.eval.num_test_images else "")
            + f" are fewer than the {mesh.size} devices of the data mesh; each device needs "
            "at least one. Add test images, or run on fewer devices (CUDA_VISIBLE_DEVICES / "
            "--xla_force_host_platform_device_count).")
    if config.train.batch_size > len(ds.train_images):
        raise ConfigError(f"config.train.batch_size={config.train.batch_size} exceeds the "
                          f"{len(ds.train_images)} training images of {ds.name!r}.")
    pipeline, reason = data.pipeline.choose(
        config.data.pipeline, len(ds.train_images), int(np.prod(ds.image_shape)), mesh.size,
        config.data.device_budget_mb)
    if pipeline == "device":
        data.process_rows(len(ds.train_images), mesh)  # no process is left without rows
    else:
        data.stream.check_process_share(config.train.batch_size, mesh)
        data.require_grain()  # the stream reads through grain (an extra)
    model = build.build_model(config, ds.image_shape)
    build.check_model_fits(model, ds.image_shape, config.model.name)
    return Setup(config, mesh, ds, model, pipeline, reason)


# ------------------------------------------------------------------------------ training

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> train.TrainState:
    """Train ``config`` in ``workdir`` (resuming from its latest good checkpoint) and evaluate.

    Writes checkpoints (``workdir/checkpoints``), ``metrics.jsonl`` (each step once, even
    across kills), TensorBoard event files, PNG grids (``workdir/images``) and
    ``config.json``; multi-process, only process 0 writes (orbax coordinates checkpoints).
    Every check runs before anything is compiled or created in ``workdir``. Non-finite
    metrics raise NonFiniteLossError (the last good checkpoint is kept) unless
    ``config.train.on_nonfinite="skip"``. SIGTERM/SIGINT: finish the current call (an
    evaluation: the current device call), save, raise TrainingInterrupted (a SystemExit,
    code 128 + signal). ``config.json`` holds the latest config and
    ``config_history.jsonl`` each start's; a resume on another data set is refused.
    Returns the final TrainState.
    """
    workdir = os.path.expanduser(workdir)  # ~/run as the shell would
    is_main = jax.process_index() == 0
    if is_main:
        runtime.check_not_busy(workdir)  # fail at once, before loading anything
    s = setup(config, workdir)
    # another model's or data set's checkpoint is refused before anything is written: the
    # data set's fields against config.json, the training set's contents (either pipeline)
    # against the fingerprint saved with the checkpoint (only then are the train state's
    # shapes traced: tracing a deep model is not free)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    if checkpoint.has_steps(ckpt_dir):
        _check_same_data_set(workdir, s.config)
        optimizer = optim.make_optimizer(s.config.optim, s.steps_per_epoch)
        checkpoint.check_latest_compatible(ckpt_dir, jax.eval_shape(
            lambda k: train.create_train_state(k, s.model, optimizer, s.ds.image_shape,
                                               ema=config_lib.keeps_ema(s.config)),
            build.root_keys(s.config.seed)["init"]), data_check=data.resume_check(
                s.ds.train_images, s.config.train.batch_size, s.steps_per_epoch))
    # One training run per workdir; creating it and its lock file is the first write.
    with runtime.WorkdirLock(workdir, enabled=is_main):
        return _train(s, workdir)


def _check_same_data_set(workdir: str, config: ml_collections.ConfigDict) -> None:
    """ConfigError when ``config`` names another data set (``logs.DATA_SET_FIELDS``) than
    the run whose checkpoints ``workdir`` holds (its ``config.json``)."""
    previous = logs.read_config(workdir)
    if previous is None:
        return
    changes = logs.config_changes(previous, json.loads(config.to_json_best_effort()))
    changed = [f for f in logs.DATA_SET_FIELDS
               if f in changes and changes[f][0] != logs.ABSENT]
    if changed:
        raise ConfigError(
            f"--workdir={workdir} holds the checkpoints of a run trained on another data set: "
            + "; ".join(f"config.{f}={changes[f][0]!r} there (its config.json), "
                        f"{changes[f][1]!r} here" for f in changed)
            + ". A run resumes on the data it was trained on. Give the run's own value (e.g. "
            + " ".join(f"--config.{f}={changes[f][0]}" for f in changed)
            + "), or a new --workdir for a run on the new data.")


def _record_config(workdir: str, config: ml_collections.ConfigDict, step: int,
                   resumed: bool, guard: runtime.WriteGuard) -> None:
    """Write ``config.json`` (the config of this start) and append this start to
    ``config_history.jsonl`` (the step it takes effect at and the fields that changed since
    the previous start), printing the changes."""
    current = json.loads(config.to_json_best_effort())
    previous = logs.read_config(workdir)
    changes = {} if previous is None else logs.config_changes(previous, current)
    if changes:
        print(f"{'Resuming at' if resumed else 'Starting from'} step {step} with a config that "
              f"differs from the previous start's (config.json): "
              f"{logs.describe_changes(changes)}. Recorded in {logs.CONFIG_HISTORY}.",
              flush=True)
    with guard(os.path.join(workdir, logs.CONFIG)):
        runtime.write_json(os.path.join(workdir, logs.CONFIG), current)
    with guard(os.path.join(workdir, logs.CONFIG_HISTORY)):
        logs.append_config_history(workdir, {
            "step": step, "resumed": resumed, "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "changed": changes, "config": current})


def _train(s: Setup, workdir: str) -> train.TrainState:
    config, mesh, ds, model = s.config, s.mesh, s.ds, s.model
    keys = build.root_keys(config.seed)
    steps_per_epoch = s.steps_per_epoch
    total_steps = (config.train.num_steps if config.train.num_steps > 0
                   else config.train.num_epochs * steps_per_epoch)
    trainer = build.build_trainer(config, model, mesh, steps_per_epoch)
    is_main = jax.process_index() == 0
    skip_nonfinite = config.train.on_nonfinite == "skip"

    state = train.create_train_state(keys["init"], model, trainer.optimizer, ds.image_shape,
                                     ema=config_lib.keeps_ema(config))
    state = jax.device_put(state, trainer.replicated)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    mngr = saves = None

    def last_checkpoint() -> str:
        latest = saves.last_complete() if saves else mngr and mngr.latest_step()
        return (f"The last good checkpoint, step {latest} in {ckpt_dir}, is kept"
                if latest is not None else "No checkpoint had been written yet")

    # a failed write (full disk, permissions, vanished folder) -> one WriteError paragraph
    guard = runtime.WriteGuard(lambda: last_checkpoint() + ".")
    with guard(ckpt_dir):
        mngr = checkpoint.manager(ckpt_dir, max_to_keep=config.train.checkpoints_to_keep,
                                  async_save=config.train.async_checkpoint)
        restored, restored_step, skipped = checkpoint.restore_latest_good(
            mngr, state, quarantine=ckpt_dir + ".damaged")
    if restored is None and skipped:  # none restores: never start over silently
        mngr.close()
        raise checkpoint.none_restored(ckpt_dir, skipped, os.path.join(workdir, "metrics.jsonl"))
    if restored is not None:
        state = restored
        logging.info("Resumed from step %d in %s", restored_step, workdir)
    metrics_log = logs.MetricsLog(os.path.join(workdir, "metrics.jsonl"), is_main)
    with guard(metrics_log.path):
        dropped = metrics_log.truncate_after(int(state.step))  # a killed run got ahead by
    if dropped:
        logging.info("Dropped %d metrics records after step %d (redone now).", dropped,
                     int(state.step))
    if is_main:
        _record_config(workdir, config, int(state.step), restored is not None, guard)

    ckpt_every = config.train.checkpoint_every_steps or steps_per_epoch
    eval_every = config.train.eval_every_steps or steps_per_epoch

    def schedule(step: int) -> int:
        return train.next_stop(step, total_steps, steps_per_epoch, config.train.steps_per_call,
                               ckpt_every, eval_every)

    inputs = _train_input(s, trainer, keys["order"], schedule, total_steps)
    if restored is not None:  # the input's own state, saved with the checkpoint (checked)
        inputs.resume(checkpoint.read_data_state(mngr, restored_step), restored_step,
                      checkpoint.step_path(mngr, restored_step))
    # The loop reads only the input's copy; on the CPU backend the device copy is host
    # memory too, so keeping the numpy one would hold the training set twice.
    ds = s.ds = dataclasses.replace(ds, train_images=None)  # the caller's reference too
    # placed once, replicated over the mesh: the transfer guard below forbids the implicit
    # device-to-device copy a single-device key would need on >1 device or process
    # (a jit, not device_put: multi-process, device_put refuses non-addressable shardings)
    train_key = jax.jit(lambda k: k, out_shardings=trainer.replicated)(keys["train"])
    evaluation = suite.from_config(config, model, mesh)
    # config.eval.num_test_images > 0: the evaluations during training look at the first n
    # test images only (ELBO, KL and active units alike), as --mode=eval does
    eval_images = ds.test_images[:config.eval.num_test_images or None]
    with guard(workdir):
        writer = logs.ScalarWriter(workdir, enabled=is_main)
    bar = Progress(total_steps)
    step = int(state.step)
    saves = checkpoint.TrainingSaves(mngr, guard, step if restored is not None else None)

    def evaluate_step(step: int) -> None:
        params = state.ema_params if config.eval.use_ema else state.params
        summary = suite.run_suite(evaluation, params, eval_images, keys["eval"])
        with guard(workdir):
            writer.write_scalars(step, summary)
        with guard(metrics_log.path):
            metrics_log.write(step, "eval", summary)
        bar.newline()
        logging.info("step %d: %s", step,
                     " ".join(f"{k}={v:.3f}" for k, v in summary.items()))
        print(f"eval step {step}: " + " ".join(f"{k} {v:.3f}"
                                               for k, v in summary.items()), flush=True)
        if is_main:  # on host copies: no computation over other processes' devices
            with guard(os.path.join(workdir, "images")):
                sampling.write_training_grids(
                    workdir, step, jax.device_get(params), ds.test_images,
                    keys["eval"], model=model, binarization=config.data.binarization)

    def stop_now(step: int, during: str = "") -> None:
        """Save ``step`` (unless saved), wait for the write, say so and exit 128 + signal."""
        if saves.latest != step:
            saves.save(step, state, inputs.state(step))
        saves.finish()
        name = signal.Signals(stop.signum).name
        message = (f"Stopped by {name} at step {step}/{total_steps}{during}; checkpoint saved "
                   f"in {mngr.directory}. Run the same command to resume.")
        print(message, flush=True)
        logging.warning(message)
        raise TrainingInterrupted(128 + stop.signum)

    def evaluate_or_stop(step: int) -> None:
        """``evaluate_step``, which a signal stops between two device calls (the step is
        saved without its evaluation; the rerun makes the evaluation first)."""
        try:
            evaluate_step(step)
        except errors.Interrupted:
            stop_now(step, " during its evaluation (the rerun makes it first)")

    # on any exit (done, NaN, signal, error) flush the metrics and close the manager; a
    # signal stops an evaluation between two of its device calls
    with runtime.StopSignal() as stop, saves.closing(writer, metrics_log, workdir), inputs, \
            parallel.check_between_calls(stop.check):
        # A step is saved before it is evaluated: a run killed in between resumes at that
        # step with its evaluation (for a finished run, the last one) owed. Make it first.
        if restored is not None and (step % eval_every == 0 or step == total_steps) and \
                not metrics_log.has(step, "eval"):
            evaluate_or_stop(step)
        if step < total_steps:  # the line starts before the first call (and its compiling)
            bar.update(step, step / steps_per_epoch, force=True)
        while step < total_steps:
            t0 = time.perf_counter()
            stop_at, run_call = inputs.next(step)
            try:
                with jax.transfer_guard("disallow"):  # no implicit transfer inside a call
                    state, metrics = run_call(state, train_key)
            except errors.Interrupted:  # raised while compiling, before the call: state kept
                stop_now(step, " while compiling the train step")
            metrics = jax.device_get(metrics)  # [num_steps] each: the one host sync per call
            rate = (stop_at - step) / (time.perf_counter() - t0)
            metrics = train.summarize_call(metrics, step, skip_nonfinite=skip_nonfinite,
                                           last_checkpoint=last_checkpoint,
                                           skip_grad_norm=config.optim.skip_grad_norm)
            step = stop_at
            with guard(workdir):
                writer.write_scalars(step, {f"train_{k}": v for k, v in metrics.items()}
                                     | {"steps_per_s": rate})
            with guard(metrics_log.path):
                metrics_log.write(step, "train", metrics)
            bar.update(step, step / steps_per_epoch, metrics["loss"], rate)
            # Save before evaluating: a run killed during its (long) last evaluation keeps
            # its trained state. The save runs in the background, beside the evaluation.
            if step % ckpt_every == 0 or step == total_steps:
                saves.save(step, state, inputs.state(step))
            if step % eval_every == 0 or step == total_steps:
                evaluate_or_stop(step)
            if step < total_steps and stop.requested():
                stop_now(step)
    return state  # (saves.closing finished the last save: its checkpoint is complete)


def _train_input(s: Setup, trainer: train.Trainer, order_key: jax.Array, schedule,
                 total_steps: int) -> DeviceInput | StreamInput:
    """The loop's input: the training set on the devices (each device holds 1/n of the rows;
    a process reads and places its own devices' rows) or streamed from the host."""
    num_train = len(s.ds.train_images)
    print(f"Input pipeline {s.pipeline!r}: {s.pipeline_reason}.", flush=True)
    if s.pipeline == "device":
        first, last = data.process_rows(num_train, s.mesh)
        return DeviceInput(trainer, s.ds.train_images[first:last], num_rows=num_train,
                           row_offset=first, order_key=order_key, schedule=schedule,
                           fingerprint=data.fingerprint(s.ds.train_images))
    return StreamInput(trainer, s.ds.train_images, total_steps=total_steps,
                       order_key=order_key, schedule=schedule, prefetch=s.config.data.prefetch,
                       num_workers=s.config.data.num_workers)


# ------------------------------------------------------------------- evaluation, samples

def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                        step: Optional[int] = None) -> dict:
    """``--mode=eval``: test ELBO, IWAE-k and importance-sampled log p(x) of a checkpoint
    (``workdir``'s latest, or ``step``) or of a parameter file (``workdir`` a ``.npz``).

    k for log p(x) is ``config.eval.num_importance_samples`` (5000 in the literature) and
    for the IWAE bound ``config.eval.iwae_k`` (0 skips either); samples stream
    ``config.eval.chunk`` at a time over batches of ``config.eval.ll_batch_size`` images.
    Every figure uses the same binarization of the test set. Printed and written to
    ``outputs_dir(workdir)``/eval.json with the step, k, data set and seed; bits/dim too
    for 8-bit likelihoods (distributions.DISCRETE_8BIT).
    """
    workdir = os.path.expanduser(workdir)  # ~/run as the shell would
    outputs = outputs_dir(workdir)
    s = setup(config, outputs, label=None if outputs == workdir else
              f"{outputs} (where --mode=eval writes eval.json for {workdir})")
    result_path = os.path.join(outputs, "eval.json")
    runtime.check_room(result_path, ROOM_EVAL, "Nothing was evaluated")
    config, ds, model = s.config, s.ds, s.model
    params, at = restore_params(config, workdir, model, ds.image_shape, step,
                                s.steps_per_epoch)
    keys = build.root_keys(config.seed)
    # A quick look (or a slow machine) can evaluate the first n test images only.
    n_test = config.eval.num_test_images or len(ds.test_images)
    test_images = ds.test_images[:n_test]
    evaluation = suite.from_config(config, model, s.mesh)
    result = suite.run_suite(evaluation, params, test_images, keys["eval"], likelihood=True,
                             active_units_images=ds.test_images)
    result |= {"step": at, "dataset": ds.name, "seed": config.seed,
               "num_test_images": len(test_images), "use_ema": bool(config.eval.use_ema),
               "binarization": config.data.binarization,
               "likelihood": config_lib.likelihood(config)}
    print(json.dumps(result, indent=2, sort_keys=True))
    if jax.process_index() == 0:
        with runtime.WriteGuard(again=" (the figures printed above are computed anew)")(
                result_path):
            os.makedirs(outputs, exist_ok=True)
            runtime.write_json(result_path, result)
    return result


def outputs_dir(workdir: str) -> str:
    """Where ``--mode=eval`` (eval.json) and ``--mode=sample`` (samples/) write: the workdir,
    or for a parameter file a folder beside it named after it
    (``runs/x/params_20.npz`` -> ``runs/x/params_20``), created when written to."""
    return os.path.splitext(workdir)[0] if is_params_file(workdir) else workdir


def sample_checkpoint(config: ml_collections.ConfigDict, workdir: str,
                      step: Optional[int] = None,
                      outdir: Optional[str] = None) -> dict[str, str]:
    """``--mode=sample``: restore ``workdir``'s checkpoint (latest, or ``step``), or a
    parameter file (``workdir`` a ``.npz``), and write prior samples, reconstructions,
    interpolations, traversals (and for 2-D latents the manifold and the label scatter) as
    PNGs in ``outdir`` (default ``outputs_dir(workdir)``/samples).

    Settings come from ``config.sample`` (defaults in ``vae_jax.config.defaults``);
    returns {name: path}.
    """
    workdir = os.path.expanduser(workdir)  # ~/run as the shell would
    s = setup(config, workdir, check_workdir=False)
    config, ds, model = s.config, s.ds, s.model
    settings = config.sample.to_dict()
    i, j = settings["pair"]
    if not (0 <= i < len(ds.test_images) and 0 <= j < len(ds.test_images)):
        raise ConfigError(f"config.sample.pair={settings['pair']} must index the "
                          f"{len(ds.test_images)} test images.")
    sampling.check_temperature(settings["temperature"], model)
    outdir = outdir or os.path.join(outputs_dir(workdir), "samples")
    runtime.check_workdir(outdir, f"{outdir} (where --mode=sample writes its pictures)")
    runtime.check_room(outdir, ROOM_SAMPLES, "No picture was drawn")
    params, at = restore_params(config, workdir, model, ds.image_shape, step)
    key = jax.random.fold_in(jax.random.key(config.seed), at)
    with runtime.WriteGuard(again=" (the pictures are drawn anew)")(outdir):
        paths = sampling.write_sample_images(
            outdir, params, ds.test_images, key, model=model,
            binarization=config.data.binarization, settings=settings,
            test_labels=ds.test_labels, class_names=data.CLASS_NAMES.get(ds.name))
    print(f"Wrote {len(paths)} images of step {at} to {outdir}:")
    for name, path in paths.items():
        print(f"  {name}: {path}")
    return paths


def export_params(config: ml_collections.ConfigDict, workdir: str,
                  step: Optional[int] = None) -> str:
    """``--mode=export``: ``restore_params`` of ``workdir`` as one checksummed .npz without
    pickle (``params_file``), ``workdir/params_<step>.npz``; returns its path."""
    workdir = os.path.expanduser(workdir)  # ~/run as the shell would
    if is_params_file(workdir):
        raise ConfigError(f"--mode=export --workdir={workdir}: that is already a parameter "
                          "file; export reads a training run's workdir (its checkpoint). "
                          "Give the workdir it was exported from, or use the file as it is "
                          "(--mode=eval or --mode=sample read it as --workdir).")
    s = setup(config, workdir, label=f"--workdir={workdir} (where --mode=export writes "
                                     "params_<step>.npz)")
    params, at = restore_params(s.config, workdir, s.model, s.ds.image_shape, step,
                                s.steps_per_epoch)
    path = os.path.join(workdir, f"params_{at}.npz")
    runtime.check_room(path, ROOM_MARGIN + sum(np.asarray(a).nbytes
                                               for a in jax.tree.leaves(params)),
                       "Nothing was written")
    if jax.process_index() == 0:
        with runtime.WriteGuard(again="")(path):
            sha = params_file.save(path, params, meta={
                "step": at, "use_ema": bool(s.config.eval.use_ema), "dataset": s.ds.name,
                "model": s.config.model.to_dict(), "image_shape": list(s.ds.image_shape)})
        print(f"Wrote the parameters of step {at} to {path} (sha256 {sha}).")
    return path


# ---------------------------------------------------------------------------- launcher

def run(config: ml_collections.ConfigDict, workdir: str, *, mode: str = "train",
        step: Optional[int] = None, show_progress: bool = True,
        coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
        process_id: Optional[int] = None, auto_distributed: bool = False,
        distributed_timeout: int = 300, compilation_cache: Optional[str] = None):
    """What ``vae-jax`` (``python -m experiments.main``) does: turn on the persistent compilation cache
    (``jit_cache``; "" turns it off), join a multi-process run if asked, then train
    (``mode="train"``), evaluate (``"eval"``), write pictures (``"sample"``) or write the
    evaluation parameters to one file (``"export"``)."""
    if mode not in MODES:
        raise ConfigError(f"--mode={mode!r}; valid: {list(MODES)}.")
    # SIGTERM / SIGINT stop any phase within seconds: outside the training loop (which
    # installs its own handler, to save first) the run ends where it is, with one line
    with runtime.StopSignal(at_once=True, message=None) as stop, \
            parallel.check_between_calls(stop.check):
        try:
            jit_cache.enable(compilation_cache)
            parallel.initialize_distributed(coordinator_address, num_processes, process_id,
                                            auto=auto_distributed,
                                            timeout_s=distributed_timeout)
            if not show_progress:
                progress.set_enabled(False)
            if mode == "train":
                return train_and_evaluate(config, workdir)
            if mode == "sample":
                return sample_checkpoint(config, workdir, step)
            if mode == "export":
                return export_params(config, workdir, step)
            return evaluate_checkpoint(config, workdir, step)
        except errors.Interrupted as e:
            if isinstance(e, TrainingInterrupted) or stop.signum is None:
                raise  # the training loop saved and said so
            name = signal.Signals(stop.signum).name
            print(f"Stopped by {name} during --mode={mode}: {_STOPPED[mode]}", flush=True)
            raise


# what a stop outside the training loop leaves (eval.json and params_<step>.npz are written
# whole or not at all; each picture is written whole)
_STOPPED = {
    "train": "the run stopped where it was (its checkpoints are as the last complete save "
             "left them); the same command resumes from the newest.",
    "eval": "nothing was written (eval.json is written once every figure is computed); the "
            "same command evaluates again.",
    "sample": "the pictures written so far are kept; the same command draws them all again.",
    "export": "nothing was written; the same command exports again.",
}
