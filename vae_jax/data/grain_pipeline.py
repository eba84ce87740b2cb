"""The streaming path's reader: one grain pipeline for the whole run that reads and decodes
this process's part of every batch on host threads (``GrainReader``), and its state, saved
with each checkpoint so that a run killed mid-epoch resumes from the same record.

The pipeline: ``grain.MapDataset.source(BatchRows)`` (element j, the batch of global step j:
the row indices perm_e[i*B + lo : i*B + hi] with (e, i) = divmod(j, steps_per_epoch), this
process's positions [lo, hi) of batch i) ``.map(ReadRows)`` (``source[idx]``: uint8
[hi - lo, H, W, C], memory-mapped or decoded on the host)
``.to_iter_dataset(ReadOptions(num_threads=config.data.num_workers))``. perm_e is the
on-device path's permutation, handed over by the ``Stream`` as it draws it (``provide``;
on the caller's thread, in step order, as multi-process runs need), so both paths see the
same batches in the same order. One iterator, not one an epoch: its read threads live as
long as the run (threads started afresh every epoch grew the heap by a malloc arena each).

The saved state (JSON): ``{"step", "epoch", "position", "batch_size", "source": the
training set's fingerprint, "grain": grain's own ``get_state()`` after ``step`` batches}``;
``resume`` checks it against the restored step and the data set, then sets grain's iterator
from it.

grain is an extra (``pip install -e '.[stream]'``), imported only when a stream is built.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable, Optional

import numpy as np

from vae_jax.data.rows import fingerprint
from vae_jax.errors import CheckpointError, DataError

KEEP_STATES = 64  # grain states kept, by the step they end at (checkpoints ask recent ones)


def require_grain():
    """The grain module, or a DataError saying how to install it."""
    try:
        import grain
    except ImportError:
        raise DataError(
            "The streaming input pipeline (config.data.pipeline='stream', or 'auto' for a "
            "training set over config.data.device_budget_mb) reads through grain, which is "
            "not installed. Install it with pip install -e '.[stream]' (or pip install "
            "grain), or use --config.data.pipeline=device when the training set fits on the "
            "devices.") from None
    return grain


class Orders:
    """Each epoch's permutation int [N], put by the stream's caller and waited for by
    grain's read threads (which may run ahead into an epoch not drawn yet)."""

    def __init__(self):
        self._perms: dict[int, np.ndarray] = {}
        self._cond = threading.Condition()
        self._closed = False

    def put(self, epoch: int, perm: np.ndarray) -> None:
        with self._cond:
            if epoch not in self._perms:
                self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 2}
                self._perms[epoch] = np.asarray(perm, np.int64)
                self._cond.notify_all()

    def get(self, epoch: int) -> np.ndarray:
        with self._cond:
            self._cond.wait_for(lambda: epoch in self._perms or self._closed)
            if epoch not in self._perms:
                raise RuntimeError(f"the stream closed before epoch {epoch}'s order was drawn")
            return self._perms[epoch]

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class BatchRows:
    """grain source: element j = the row indices int64 [hi - lo] of global step j's batch
    that this process reads (positions [lo, hi) of the batch of ``batch_size``)."""

    def __init__(self, orders: Orders, batch_size: int, lo: int, hi: int,
                 steps_per_epoch: int, total_steps: int):
        self.orders, self.batch_size, self.lo, self.hi = orders, batch_size, lo, hi
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, j: int) -> np.ndarray:
        epoch, i = divmod(int(j), self.steps_per_epoch)
        start = i * self.batch_size
        return self.orders.get(epoch)[start + self.lo:start + self.hi]


class ReadRows:
    """grain map: row indices [M] -> uint8 [M, H, W, C] read from ``source``."""

    def __init__(self, source):
        self.source = source

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.source[idx])


class GrainReader:
    """``read(epoch, first, k)``: uint8 [k, hi - lo, H, W, C], batches first..first+k-1 of
    ``epoch`` (this process's positions [lo, hi) of each), through one grain iterator over
    the run's ``total_steps`` batches; a read that does not continue the last one seeks it.

    ``provide(epoch, perm)`` before reading an epoch; ``read`` from one thread (the
    ``Stream``'s); ``state`` from another, for a step whose call has been read."""

    def __init__(self, source, *, batch_size: int, lo: int, hi: int, steps_per_epoch: int,
                 total_steps: int, num_workers: int = 0):
        grain = require_grain()
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.fingerprint = fingerprint(source)
        self.orders = Orders()
        ds = grain.MapDataset.source(BatchRows(self.orders, batch_size, lo, hi, steps_per_epoch,
                                               total_steps)).map(ReadRows(source))
        self._it = iter(ds.to_iter_dataset(grain.ReadOptions(
            num_threads=num_workers, prefetch_buffer_size=max(1, 2 * num_workers))))
        self._next = 0  # the global step the iterator reads next
        self._states: dict[int, dict] = {}  # stop step -> grain state after it

    def provide(self, epoch: int, perm: np.ndarray) -> None:
        self.orders.put(epoch, perm)

    def read(self, epoch: int, first: int, k: int) -> np.ndarray:
        start = epoch * self.steps_per_epoch + first
        if start != self._next:  # a resumed or re-cut schedule
            self._it.set_state({"next_index": start})
        out = np.stack([next(self._it) for _ in range(k)])
        self._next = start + k
        self._states[self._next] = self._it.get_state()
        if len(self._states) > KEEP_STATES:
            self._states.pop(min(self._states))
        return out

    def state(self, step: int) -> dict:
        """The JSON state of the stream at ``step`` (a call boundary already read)."""
        epoch, position = divmod(int(step), self.steps_per_epoch)
        return {"step": int(step), "epoch": epoch, "position": position,
                "batch_size": self.batch_size, "source": self.fingerprint,
                "grain": self._states.get(int(step))}

    def resume(self, saved: Optional[dict], step: int, where: str = "the checkpoint") -> None:
        """Continue from ``saved`` (``state`` of ``step``, read back from ``where``); None
        (a checkpoint without it): from the step alone. A mismatch is an error naming both."""
        check_resume(saved, step, where, fingerprint=self.fingerprint,
                     batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch)
        grain_state = None if saved is None else saved.get("grain")
        self._it.set_state(grain_state or {"next_index": int(step)})  # grain's own state
        if self._it.get_state().get("next_index") != int(step):
            raise CheckpointError(f"{where}: grain's saved state {grain_state} does not "
                                  f"resume at step {step} (it reports {self._it.get_state()}).")
        self._next = int(step)

    def close(self) -> None:
        self.orders.close()  # read threads waiting for an order give up
        self._it.close()


def check_resume(saved: Optional[dict], step: int, where: str, *, fingerprint: str,
                 batch_size: int, steps_per_epoch: int) -> None:
    """A stream state ``saved`` at ``where`` (or None: nothing to check) fits a run
    resuming at ``step`` over a training set of ``fingerprint``: CheckpointError when it is
    for another step, DataError naming both values when the data set or batch changed."""
    if saved is None:
        return
    if saved.get("step") != int(step):
        raise CheckpointError(f"{where}: the data iterator's state is for step "
                              f"{saved.get('step')} but the train state for step {step}; the "
                              "checkpoint is inconsistent. Move that step's folder aside to "
                              "resume from the one before.")
    for key, mine in (("source", fingerprint), ("batch_size", batch_size)):
        if saved.get(key) != mine:
            raise DataError(
                f"{where} was written streaming a training set with {key}={saved.get(key)!r}, "
                f"but this run has {key}={mine!r}: the data set (or the batch size) changed, "
                "so the run cannot resume where it stopped. Use the data and config the run "
                "was started with (its workdir's config.json), or a new --workdir.")
    epoch, position = divmod(int(step), steps_per_epoch)
    if (saved.get("epoch"), saved.get("position")) != (epoch, position):
        raise CheckpointError(f"{where}: the data iterator's state is at epoch "
                              f"{saved.get('epoch')} batch {saved.get('position')}, but step "
                              f"{step} is epoch {epoch} batch {position} ({steps_per_epoch} "
                              "batches an epoch).")


def resume_check(source, batch_size: int, steps_per_epoch: int
                 ) -> Callable[[Optional[dict], int, str], None]:
    """``check_resume`` for a stream over ``source``, as ``(saved, step, where) -> None``:
    run on the latest checkpoint before anything is written to the workdir."""
    return functools.partial(check_resume, fingerprint=fingerprint(source),
                             batch_size=batch_size, steps_per_epoch=steps_per_epoch)
