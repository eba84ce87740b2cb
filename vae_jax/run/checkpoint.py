"""Checkpoints with orbax: atomic saves every N steps, the last K kept, restore the latest;
and ``TrainingSaves``, the saves of one training run.

Only arrays and JSON are written (orbax's PyTree/array format); nothing is pickled.

Each step directory holds two items (three on the streaming path), finalised together by
orbax's atomic rename:

* ``state``: the TrainState arrays;
* ``checksum``: JSON ``{"sha256": {leaf path: digest}}`` of those arrays as saved;
* ``data`` (streaming runs only): JSON, the input iterator's state at that step
  (``data.GrainReader.state``), read back with ``read_data_state``.

Orbax reads a truncated or emptied array file as an error, but bytes flipped on disk restore
silently as wrong numbers; the checksum catches both. ``restore_latest_good`` walks back
from the newest step, skipping (and reporting, never deleting) any it cannot verify.
``check_compatible`` compares a checkpoint's shapes with the target's from orbax's
metadata, without restoring, so a config with another model shape fails naming the
parameter instead of deep inside Flax or tensorstore.

Training saves in the background by default (``config.train.async_checkpoint``, orbax's
asynchronous checkpointing; ``TrainingSaves``): ``save`` returns once the arrays are copied
to host memory and their checksum taken, and orbax writes and finalises the step while the
loop trains on. At most one save is in flight: the next save, and every exit of the run,
first waits for it (``TrainingSaves.finish``). A write that fails is therefore reported one
save late, as a WriteError naming *that* step's path and the step before it as the last
good checkpoint; metrics.jsonl is then cut back to that step. The state the loop donates
to its next call is not the one being written: orbax's host copy is taken before ``save``
returns (on the CPU backend it is a view that keeps the buffer, so XLA does not reuse it).
With ``async_checkpoint=False`` each ``save`` returns once its step is finalised.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import logging as logging_lib
import os
import shutil
import sys
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import logging

from vae_jax.errors import CheckpointError, CheckpointMismatchError, WriteError


def _handler_registry() -> ocp.handlers.DefaultCheckpointHandlerRegistry:
    """The items and their handlers, for saving and restoring (orbax's current API; its
    ``item_handlers`` argument is deprecated)."""
    registry = ocp.handlers.DefaultCheckpointHandlerRegistry()
    for item, handler, save_args, restore_args in (
            ("state", ocp.StandardCheckpointHandler(), ocp.args.StandardSave,
             ocp.args.StandardRestore),
            ("checksum", ocp.JsonCheckpointHandler(), ocp.args.JsonSave, ocp.args.JsonRestore),
            ("data", ocp.JsonCheckpointHandler(), ocp.args.JsonSave, ocp.args.JsonRestore)):
        registry.add(item, save_args, handler)
        registry.add(item, restore_args, handler)
    return registry


def manager(directory: str, *, max_to_keep: int = 3, async_save: bool = False,
            read_only: bool = False) -> ocp.CheckpointManager:
    """A CheckpointManager on ``directory``; saves are atomic (orbax finalises a tmp dir).

    ``read_only`` (``--mode=eval`` / ``sample``, which only restore): creates nothing, and
    raises CheckpointError when ``directory`` does not exist."""
    if read_only and not os.path.isdir(directory):
        raise CheckpointError(f"No checkpoint in {os.path.abspath(directory)}: the folder does "
                              "not exist. Train first (--mode=train with this --workdir), or "
                              "give the --workdir of a trained run.")
    # (create=False rather than orbax's read_only, which warns on every open; the newest
    # max_to_keep steps kept through a preservation policy, orbax's max_to_keep being
    # deprecated)
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(n=max_to_keep),
        create=not read_only, enable_async_checkpointing=async_save)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                                 handler_registry=_handler_registry())


def step_path(mngr: ocp.CheckpointManager, step: int) -> str:
    return os.path.join(str(mngr.directory), str(int(step)))


def _path_name(path) -> str:
    """'params/encoder/hidden_0/kernel' from a jax key path (attribute, dict or index keys)."""
    parts = []
    for k in path:
        for attr in ("name", "key", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return "/".join(parts)


def fingerprint(state: Any) -> dict[str, str]:
    """{leaf path: sha256 of dtype, shape and bytes} for every array leaf of ``state``.

    Replicated global arrays are readable on every process, so this works multi-host too.
    """
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        a = np.asarray(leaf)
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).tobytes())
        out[_path_name(path)] = h.hexdigest()
    return out


def save(mngr: ocp.CheckpointManager, step: int, state: Any, *, force: bool = True,
         data_state: Optional[dict] = None) -> None:
    """Save ``state`` at ``step`` with its checksum (sha256 of the arrays as passed) and
    ``data_state``, the input iterator's JSON state, as item ``data`` when given.

    With a synchronous manager (``manager(async_save=False)``, the default) it returns once
    the step is finalised; with an asynchronous one, once orbax has copied the arrays to
    host memory: the write goes on in the background and ``finish`` reports its outcome.
    A save that fails (a full disk, ...) re-raises after removing its own unfinished
    ``<step>.orbax-checkpoint-tmp*`` folder, which frees the space it took; the steps
    before it are untouched and stay the latest."""
    _QuietFailedSave.install()
    try:
        items = dict(state=ocp.args.StandardSave(state),
                     checksum=ocp.args.JsonSave({"sha256": fingerprint(state)}))
        if data_state is not None:
            items["data"] = ocp.args.JsonSave(data_state)
        mngr.save(int(step), args=ocp.args.Composite(**items), force=force)
    except Exception:
        _clean_failed(mngr, step)
        raise


def finish(mngr: ocp.CheckpointManager, step: int) -> None:
    """Wait until the save in flight (``step``'s) is finalised; re-raise its failure after
    removing its unfinished folder. A no-op when nothing is in flight."""
    _QuietFailedSave.install()
    try:
        mngr.wait_until_finished()
    except Exception:
        _clean_failed(mngr, step)
        raise


def _clean_failed(mngr: ocp.CheckpointManager, step: int) -> None:
    with contextlib.suppress(Exception):  # orbax's other threads of this save end first
        mngr.wait_until_finished()
    if jax.process_index() == 0:
        for tmp in glob.glob(os.path.join(str(mngr.directory),
                                          f"{int(step)}.orbax-checkpoint-tmp*")):
            shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(Exception):
        mngr.reload()


class _QuietFailedSave(logging_lib.Filter):
    """Drop orbax's ERROR log records of a failed save (each with the traceback of the same
    error, once per thread; an asynchronous save's background thread logs its failure when
    it happens, before ``finish`` re-raises it): the caller re-raises that error, and the
    launcher prints it as one paragraph (with its traceback on request). Installed once,
    for the process, by the first ``save`` or ``finish``."""

    FAILED_SAVE = ("raised an exception", "Failed to run", "Save Finalize thread",
                   "Checkpointer failed")

    def filter(self, record) -> bool:
        return not (record.levelno >= logging_lib.ERROR and "orbax" in record.pathname
                    and any(m in record.getMessage() for m in self.FAILED_SAVE))

    @classmethod
    def install(cls) -> None:
        """Add the filter to absl's logger (once per process) and quiet the event loop's
        echoes of the same failure (``silence_event_loop_noise``)."""
        logger = logging.get_absl_logger()
        if not any(isinstance(f, cls) for f in logger.filters):
            logger.addFilter(cls())
        cls.silence_event_loop_noise()

    @staticmethod
    def silence_event_loop_noise() -> None:
        """After a failed write, tensorstore's callbacks of the other writes report 'Event
        loop is closed' to ``sys.unraisablehook`` (orbax closed the save's loop on the first
        error), even after the save has returned, and asyncio logs their tasks' errors as
        never retrieved: drop exactly those (the save raised that error), keep the rest."""
        previous = sys.unraisablehook
        if getattr(previous, "vae_jax_quiet", False):
            return

        def hook(unraisable):
            exc = unraisable.exc_value
            if not (isinstance(exc, RuntimeError) and "Event loop is closed" in str(exc)):
                previous(unraisable)

        hook.vae_jax_quiet = True
        sys.unraisablehook = hook
        # ... and at exit asyncio reports each failed write's task as never retrieved
        logging_lib.getLogger("asyncio").addFilter(
            lambda r: not ("Task exception was never retrieved" in r.getMessage()
                           and "os_error_code" in r.getMessage()))


def latest_step(mngr: ocp.CheckpointManager) -> Optional[int]:
    return mngr.latest_step()


def check_compatible(mngr: ocp.CheckpointManager, step: int, target: Any) -> None:
    """Raise CheckpointMismatchError naming each parameter whose shape/dtype/name differs.

    Reads only orbax's metadata (no arrays). Raises CheckpointError when even the metadata
    cannot be read (a damaged checkpoint).
    """
    path = step_path(mngr, step)
    try:
        meta = mngr.item_metadata(step)["state"]
        meta = getattr(meta, "tree", meta)
    except Exception as e:
        raise CheckpointError(f"Checkpoint {path} has unreadable metadata "
                              f"({type(e).__name__}: {e}).") from e
    if meta is None:
        raise CheckpointError(f"Checkpoint {path} has no 'state' metadata.")
    saved = {_path_name(p): m for p, m in jax.tree_util.tree_flatten_with_path(
        meta, is_leaf=lambda x: hasattr(x, "shape"))[0] if hasattr(m, "shape")}
    wanted = {_path_name(p): leaf for p, leaf in
              jax.tree_util.tree_flatten_with_path(target)[0]}
    problems = []
    # the model's own parameters first; their EMA / optimizer copies repeat the same story
    for name in sorted(set(saved) | set(wanted), key=lambda n: (not n.startswith("params/"), n)):
        if name not in saved:
            problems.append(f"{name}: in the config's model, absent from the checkpoint")
        elif name not in wanted:
            problems.append(f"{name}: in the checkpoint, absent from the config's model")
        elif tuple(saved[name].shape) != tuple(np.shape(wanted[name])):
            problems.append(f"{name}: checkpoint shape {tuple(saved[name].shape)}, config "
                            f"shape {tuple(np.shape(wanted[name]))}")
    ema = {n for n in set(saved) ^ set(wanted) if n.startswith("ema_params/")}
    if problems and len(ema) == len(problems):  # the same model; only the EMA differs
        kept = "keeps" if any(n in saved for n in ema) else "keeps no"
        raise CheckpointMismatchError(
            f"Checkpoint {path} {kept} an EMA of the parameters and this config "
            f"{'does not' if kept == 'keeps' else 'does'} (config.train.ema_decay="
            "0 keeps none, the default). Resume with the run's own setting, e.g. "
            f"--config.train.ema_decay={'0.999' if kept == 'keeps' else '0'} (its workdir's "
            "config.json has it), or use a new --workdir.")
    if problems:
        shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more"
                                           if len(problems) > 6 else "")
        raise CheckpointMismatchError(
            f"Checkpoint {path} was written by a different model than this config builds: "
            f"{shown}. Use the config the checkpoint was trained with (its workdir's "
            "config.json), or a new --workdir for the new model.")


def has_steps(directory: str) -> bool:
    """Whether ``directory`` holds a finalised checkpoint step (a folder named by a number);
    reads the listing only."""
    try:
        return any(name.isdigit() for name in os.listdir(directory))
    except OSError:
        return False


def check_latest_compatible(directory: str, target: Any, data_check: Optional[
        Callable[[Optional[dict], int, str], None]] = None) -> None:
    """CheckpointMismatchError if the newest checkpoint in ``directory`` whose metadata
    reads holds another model than ``target`` (arrays or ShapeDtypeStructs); then
    ``data_check(its data item or None, step, path)`` (a streaming run refuses another data
    set). Reads only metadata and JSON and creates nothing, so training runs it before
    taking the workdir."""
    if not os.path.isdir(directory):
        return
    mngr = manager(directory, read_only=True)
    try:
        for step in sorted(mngr.all_steps(), reverse=True):
            try:
                check_compatible(mngr, step, target)
                if data_check is not None:
                    data_check(read_data_state(mngr, step), step, step_path(mngr, step))
                return
            except CheckpointError:  # damaged: restore_latest_good reports and skips it
                continue
    finally:
        mngr.close()


def restore(mngr: ocp.CheckpointManager, target: Any, step: Optional[int] = None) -> Any:
    """Restore ``step`` (default: the latest) into the structure/sharding of ``target``.

    ``target`` is a pytree of arrays (or ``jax.ShapeDtypeStruct`` with shardings). Raises
    CheckpointMismatchError for another model's checkpoint and CheckpointError (naming the
    path) for one that is damaged: unreadable, truncated, or failing its checksum.
    """
    step = mngr.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"No checkpoint in {mngr.directory}.")
    steps = sorted(mngr.all_steps())
    if int(step) not in steps:
        raise CheckpointError(
            f"No checkpoint at step {step} in {mngr.directory}; "
            + (f"the steps there are {steps}. Give one of them with --step, or leave --step "
               "out for the latest." if steps else "it holds none. Train first."))
    path = step_path(mngr, step)
    check_compatible(mngr, step, target)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    try:
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), checksum=ocp.args.JsonRestore()))
    except Exception as e:
        raise CheckpointError(f"Cannot restore checkpoint {path}: {type(e).__name__}: "
                              f"{str(e)[:500]}") from e
    expected = (out["checksum"] or {}).get("sha256")
    if expected is None:
        raise CheckpointError(f"Checkpoint {path} has no checksum item.")
    actual = fingerprint(out["state"])
    bad = sorted(k for k in set(expected) | set(actual) if expected.get(k) != actual.get(k))
    if bad:
        raise CheckpointError(f"Checkpoint {path} fails its checksum for {bad[:5]}: the "
                              "files were corrupted on disk after saving.")
    return out["state"]


def read_data_state(mngr: ocp.CheckpointManager, step: int) -> Optional[dict]:
    """The ``data`` item of ``step`` (the input iterator's state), or None when the
    checkpoint has none (the on-device path, or written before the item existed)."""
    path = step_path(mngr, step)
    if not os.path.isdir(os.path.join(path, "data")):
        return None
    try:
        return mngr.restore(int(step), args=ocp.args.Composite(
            data=ocp.args.JsonRestore()))["data"]
    except Exception as e:
        raise CheckpointError(f"Cannot read the data iterator's state in {path}: "
                              f"{type(e).__name__}: {str(e)[:300]}") from e


def restore_latest_good(mngr: ocp.CheckpointManager, target: Any, *,
                        quarantine: Optional[str] = None) -> tuple[Any, Optional[int], list]:
    """Restore the newest checkpoint that verifies, walking back past damaged ones.

    Returns (state or None, its step or None, [(path, reason) of each skipped step]).
    Damaged steps are never deleted; with ``quarantine`` (a folder) the ones newer than the
    step restored are moved there, so that training can write those steps again and
    orbax's max_to_keep clean-up never touches them. When none restores nothing is moved
    (the caller decides: training refuses to start over). A CheckpointMismatchError
    (another model) is raised, not skipped.
    """
    skipped = []
    for step in sorted(mngr.all_steps(), reverse=True):
        try:
            state = restore(mngr, target, step)
        except CheckpointError as e:
            path = step_path(mngr, step)
            logging.warning("Skipping damaged checkpoint %s: %s", path, e)
            print(f"WARNING: skipping damaged checkpoint {path}: {e}", flush=True)
            skipped.append((path, str(e)))
            continue
        if quarantine:
            for path, _ in skipped:
                _move_aside(mngr, path, quarantine)
        return state, step, skipped
    return None, None, skipped


def none_restored(directory: str, skipped: list, metrics: str) -> CheckpointError:
    """The error of a training run whose every checkpoint in ``directory`` failed to
    restore (``skipped``: ``restore_latest_good``'s): starting again from step 0 would
    rewrite ``metrics`` and, later, the checkpoints, so a read error that passes (a network
    filesystem, a disk not yet back) must not end a run's history."""
    paths = [p for p, _ in skipped]
    return CheckpointError(
        f"No checkpoint in {directory} restores: {len(paths)} failed "
        f"({', '.join(paths[:4])}{' ...' if len(paths) > 4 else ''}; the newest: "
        f"{' '.join(skipped[0][1].split())[:300]}). Nothing was changed. If the files may "
        "be readable again (a filesystem that was down), rerun the same command then: it "
        "resumes. To start this run afresh on purpose, move the workdir aside (or delete "
        f"{directory} and {metrics}) and rerun.")


def _move_aside(mngr: ocp.CheckpointManager, path: str, quarantine: str) -> None:
    from jax.experimental import multihost_utils

    multi = jax.process_count() > 1
    if multi:  # every process has finished reading it before process 0 moves it
        multihost_utils.sync_global_devices(f"vae_jax_quarantine_{path}_before")
    if jax.process_index() == 0:
        os.makedirs(quarantine, exist_ok=True)
        dest = os.path.join(quarantine, f"{os.path.basename(path)}.{int(time.time())}")
        shutil.move(path, dest)
        print(f"WARNING: moved damaged checkpoint {path} to {dest} (kept for inspection).",
              flush=True)
    if multi:
        multihost_utils.sync_global_devices(f"vae_jax_quarantine_{path}_after")
    mngr.reload()


# ------------------------------------------------------------- one training run's saves

class TrainingSaves:
    """The saves of one training run, each under ``guard`` (a ``runtime.WriteGuard``), so a
    failed write is a WriteError naming its step's path.

    With an asynchronous manager at most one save is in flight (``pending``); the next
    ``save`` and ``finish`` wait for it first, so its failure is raised there, naming the
    pending step. ``finished`` is the newest step known to be complete on disk (the
    restored one at first); ``latest`` the newest saved or being saved."""

    def __init__(self, mngr: ocp.CheckpointManager, guard, finished: Optional[int] = None):
        self.mngr, self.guard = mngr, guard
        self.finished, self.pending = finished, None

    @property
    def latest(self) -> Optional[int]:
        return self.pending if self.pending is not None else self.finished

    def save(self, step: int, state: Any, data_state: Optional[dict] = None) -> None:
        self.finish()
        with self.guard(step_path(self.mngr, step)):
            save(self.mngr, step, state, data_state=data_state)
        self.pending = int(step)

    def finish(self) -> None:
        """Block until the save in flight is finalised (its failure: a WriteError)."""
        step, self.pending = self.pending, None
        if step is not None:
            with self.guard(step_path(self.mngr, step)):
                finish(self.mngr, step)
            self.finished = step

    def last_complete(self) -> Optional[int]:
        """The newest step complete on disk, for an error message being built: waits for
        the save in flight first; if that write failed, the step before it (the failure
        itself is what the caller is reporting, or follows it)."""
        with contextlib.suppress(Exception):
            self.finish()
        return self.finished

    @contextlib.contextmanager
    def closing(self, writer, metrics_log, workdir: str):
        """Around the training loop: on every exit finish the save in flight, flush and
        close ``writer`` (a ``logs.ScalarWriter``) and close the manager. After a failed
        write, cut ``metrics_log`` (``logs.MetricsLog``) back to the last finished checkpoint
        in place (it needs no free space) and keep the WriteError: errors while closing on a
        broken disk are only logged."""
        try:
            yield
            self.finish()  # the last save: a finished run's latest checkpoint is complete
        except WriteError:
            self._close_quietly(writer, "a failed write")
            with contextlib.suppress(OSError):
                metrics_log.cut_after(0 if self.finished is None else self.finished)
            raise
        except BaseException:
            writer.flush()
            writer.close()
            self._close_quietly(None, "an error")  # that error is the one to report
            raise
        else:
            with self.guard(workdir):
                writer.flush()
                writer.close()
                self.mngr.close()

    def _close_quietly(self, writer, after: str) -> None:
        closers = (self.finish, self.mngr.close) + ((writer.flush, writer.close) if writer
                                                    else ())
        for close in closers:
            try:
                close()
            except Exception as e:  # the disk is still full: the error raised says so
                logging.warning("While closing after %s: %s: %s", after, type(e).__name__, e)
