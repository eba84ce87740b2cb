"""The streaming path's reader: a grain pipeline per epoch that reads and decodes this
process's part of every batch on host threads (``GrainReader``), and its state, saved with
each checkpoint so that a run killed mid-epoch resumes from the same record.

Epoch e's pipeline: ``grain.MapDataset.source(BatchRows)`` (element i: the row indices
perm_e[i*B + lo : i*B + hi], this process's positions [lo, hi) of batch i) ``.map(ReadRows)``
(``source[idx]``: uint8 [hi - lo, H, W, C], memory-mapped or decoded on the host)
``.to_iter_dataset(ReadOptions(num_threads=config.data.num_workers))``. perm_e is the
on-device path's permutation, so both paths see the same batches in the same order.

The saved state (JSON): ``{"step", "epoch", "position", "batch_size", "source": the
training set's fingerprint, "grain": grain's own ``get_state()`` after ``position`` batches of
``epoch``}``; ``resume`` checks it against the restored step and the data set, then sets
grain's iterator from it.

grain is an extra (``pip install -e '.[stream]'``), imported only when a stream is built.
"""

from __future__ import annotations

import functools
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


class BatchRows:
    """grain source: element i = the row indices int64 [hi - lo] of batch i that this
    process reads (positions [lo, hi) of each batch of ``batch_size`` in ``perm``)."""

    def __init__(self, perm: np.ndarray, batch_size: int, lo: int, hi: int, steps: int):
        self.perm, self.batch_size, self.lo, self.hi, self.steps = (
            np.asarray(perm, np.int64), batch_size, lo, hi, steps)

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(i) * self.batch_size
        return self.perm[start + self.lo:start + self.hi]


class ReadRows:
    """grain map: row indices [M] -> uint8 [M, H, W, C] read from ``source``."""

    def __init__(self, source):
        self.source = source

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.source[idx])


class GrainReader:
    """``read(epoch, perm, first, k)``: uint8 [k, hi - lo, H, W, C], batches first..first+k-1
    of ``epoch`` (this process's positions [lo, hi) of each), through one grain iterator per
    epoch; reads of consecutive calls continue the iterator, any other start re-opens it.

    Called from one thread (the ``Stream``'s); ``state`` from another, for a step whose call
    has been read."""

    def __init__(self, source, *, batch_size: int, lo: int, hi: int, steps_per_epoch: int,
                 num_workers: int = 0):
        self.grain = require_grain()
        self.source, self.batch_size, self.lo, self.hi = source, batch_size, lo, hi
        self.steps_per_epoch, self.num_workers = steps_per_epoch, num_workers
        self.fingerprint = fingerprint(source)
        self._it, self._at = None, None  # the open iterator, (epoch, next batch) it reads
        self._states: dict[int, dict] = {}  # stop step -> grain state after it
        self._resume: Optional[tuple[int, int, dict]] = None

    def _open(self, epoch: int, perm: np.ndarray, first: int) -> None:
        self.close()
        grain = self.grain
        ds = grain.MapDataset.source(BatchRows(perm, self.batch_size, self.lo, self.hi,
                                               self.steps_per_epoch)).map(ReadRows(self.source))
        it = iter(ds.to_iter_dataset(grain.ReadOptions(
            num_threads=self.num_workers, prefetch_buffer_size=max(1, 2 * self.num_workers))))
        if self._resume is not None and self._resume[:2] == (epoch, first):
            saved = self._resume[2]
            it.set_state(saved)  # grain's own state, from the checkpoint
            if it.get_state() != saved:
                raise CheckpointError(f"grain did not resume from the checkpointed state "
                                      f"{saved} (it reports {it.get_state()}).")
        elif first:
            it.set_state({"next_index": first})  # a start inside the epoch, no saved state
        self._resume = None
        self._it, self._at = it, (epoch, first)

    def read(self, epoch: int, perm: np.ndarray, first: int, k: int) -> np.ndarray:
        if self._at != (epoch, first):
            self._open(epoch, perm, first)
        out = np.stack([next(self._it) for _ in range(k)])
        self._at = (epoch, first + k)
        stop = epoch * self.steps_per_epoch + first + k
        self._states[stop] = self._it.get_state()
        if len(self._states) > KEEP_STATES:
            self._states.pop(min(self._states))
        return out

    def state(self, step: int) -> dict:
        """The JSON state of the stream at ``step`` (a call boundary already read)."""
        epoch, position = divmod(int(step), self.steps_per_epoch)
        grain_state = self._states.get(int(step)) if position else None  # None: epoch start
        return {"step": int(step), "epoch": epoch, "position": position,
                "batch_size": self.batch_size, "source": self.fingerprint, "grain": grain_state}

    def resume(self, saved: Optional[dict], step: int, where: str = "the checkpoint") -> None:
        """Continue from ``saved`` (``state`` of ``step``, read back from ``where``); None
        (a checkpoint without it): from the step alone. A mismatch is an error naming both."""
        check_resume(saved, step, where, fingerprint=self.fingerprint,
                     batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch)
        if saved is not None and saved.get("grain") is not None:
            self._resume = (saved["epoch"], saved["position"], saved["grain"])

    def close(self) -> None:
        if self._it is not None:
            self._it.close()  # grain's read threads stop
            self._it = self._at = None


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
