"""The streaming path's reader: one grain pipeline that reads and decodes this process's
part of every batch (``GrainReader``), and its state, saved with each checkpoint so that a
run killed mid-epoch resumes from the same record.

The pipeline: ``grain.MapDataset.source(BatchRows)`` (element j, the batch of global step j:
``(j, rows)``, rows the indices perm_e[i*B + lo : i*B + hi] with (e, i) =
divmod(j, steps_per_epoch), this process's positions [lo, hi) of batch i)
``.map(ReadRows)`` (``(j, source[rows])``: uint8 [hi - lo, H, W, C], memory-mapped or
decoded on the host), sliced from the step the reader starts at (``ds[start:]``: grain's
public way to begin mid-way) and read through ``to_iter_dataset(ReadOptions(num_threads=
read_threads(config.data.num_workers)))``. perm_e is the on-device path's permutation,
handed over by the ``Stream`` as it draws it (``provide``; on the caller's thread, in step
order, as multi-process runs need), so both paths see the same batches in the same order.
One iterator for the run unless a read does not continue the last one (a resume, a re-cut
schedule): its read threads live as long as the run (threads started afresh every epoch
grew the heap by a malloc arena each). Every element carries its step, and a read that
gets another step than it asked for is an error, so a restored grain state that does not
resume where it should fails loudly instead of feeding other batches.

The saved state (JSON): ``{"step", "epoch", "position", "batch_size", "source": the
training set's fingerprint (``rows.fingerprint``), "base": the step the iterator began
at, "grain": grain's own ``get_state()`` after ``step - base`` batches}``; ``resume``
checks it against the restored step and the data set, then restores grain's iterator from
it (``set_state``, grain's checkpointing API).

grain is an extra (``pip install -e '.[stream]'``), imported only when a stream is built.
"""

from __future__ import annotations

import functools
import threading
from typing import Callable, Optional

import jax
import numpy as np

from vae_jax.data.rows import fingerprint
from vae_jax.errors import CheckpointError, DataError

KEEP_STATES = 64  # grain states kept, by the step they end at (checkpoints ask recent ones)
AUTO = -1  # config.data.num_workers: the backend's default (read_threads)
ACCELERATOR_READ_THREADS = 4


def read_threads(num_workers: int = AUTO, platform: Optional[str] = None) -> int:
    """grain's read threads for ``num_workers`` (``AUTO``: the backend's default). On the
    CPU backend the default is 0, the reads on the stream's own thread: XLA's step already
    keeps every core busy there, so read threads add only their hand-offs (grain's 4
    threads took 5.7x the CPU time per npz batch of none, benchmarks/README.md); an accelerator
    leaves the host's cores to the reads, so it gets ``ACCELERATOR_READ_THREADS``."""
    if num_workers != AUTO:
        return num_workers
    platform = jax.default_backend() if platform is None else platform
    return 0 if platform == "cpu" else ACCELERATOR_READ_THREADS


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

    def __contains__(self, epoch: int) -> bool:
        with self._cond:
            return epoch in self._perms

    def put(self, epoch: int, perm: np.ndarray) -> None:
        with self._cond:
            if epoch not in self._perms:
                self._perms = {e: p for e, p in self._perms.items() if e >= epoch - 2}
                self._perms[epoch] = np.asarray(perm, np.int64)
                self._cond.notify_all()

    def get(self, epoch: int) -> Optional[np.ndarray]:
        """The order of ``epoch``, waited for; None for an epoch before the newest put that
        is not held (never drawn: orders are put in step order, so it will not come)."""
        with self._cond:
            self._cond.wait_for(lambda: epoch in self._perms or self._closed
                                or (self._perms and epoch < max(self._perms)))
            if epoch in self._perms:
                return self._perms[epoch]
            if self._closed:
                raise RuntimeError(f"the stream closed before epoch {epoch}'s order was drawn")
            return None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class BatchRows:
    """grain source: element j = (j, the row indices int64 [hi - lo] of global step j's
    batch that this process reads: positions [lo, hi) of the batch of ``batch_size``)."""

    def __init__(self, orders: Orders, batch_size: int, lo: int, hi: int,
                 steps_per_epoch: int, total_steps: int):
        self.orders, self.batch_size, self.lo, self.hi = orders, batch_size, lo, hi
        self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps

    def __len__(self) -> int:
        return self.total_steps

    def __getitem__(self, j: int) -> tuple[int, np.ndarray]:
        epoch, i = divmod(int(j), self.steps_per_epoch)
        start = i * self.batch_size
        perm = self.orders.get(epoch)  # None: a batch the stream never asks for (``read``)
        return int(j), None if perm is None else perm[start + self.lo:start + self.hi]


class ReadRows:
    """grain map: (j, row indices [M]) -> (j, uint8 [M, H, W, C] read from ``source``)."""

    def __init__(self, source):
        self.source = source

    def __call__(self, element: tuple[int, np.ndarray]) -> tuple[int, np.ndarray]:
        j, idx = element
        return j, None if idx is None else np.asarray(self.source[idx])


class GrainReader:
    """``read(epoch, first, k)``: uint8 [k, hi - lo, H, W, C], batches first..first+k-1 of
    ``epoch`` (this process's positions [lo, hi) of each), through a grain iterator over
    the run's ``total_steps`` batches; a read that does not continue the last one starts
    a fresh iterator at its step.

    ``provide(epoch, perm)`` before reading an epoch (``epoch in reader.orders`` says
    whether it was); ``read`` from one thread (the ``Stream``'s); ``state`` from another,
    for a step whose call has been read. num_workers: grain's read threads (``AUTO``: the
    backend's default, ``read_threads``; 0: reads on the calling thread)."""

    def __init__(self, source, *, batch_size: int, lo: int, hi: int, steps_per_epoch: int,
                 total_steps: int, num_workers: int = AUTO):
        grain = require_grain()
        self.batch_size, self.steps_per_epoch = batch_size, steps_per_epoch
        self.num_threads = read_threads(num_workers)
        self.fingerprint = fingerprint(source)
        self.orders = Orders()
        self._ds = grain.MapDataset.source(BatchRows(
            self.orders, batch_size, lo, hi, steps_per_epoch, total_steps)).map(ReadRows(source))
        self._options = grain.ReadOptions(num_threads=self.num_threads,
                                          prefetch_buffer_size=max(1, 2 * self.num_threads))
        self._it = None
        self._states: dict[int, tuple[int, dict]] = {}  # stop step -> (base, grain state)
        self._start(0)

    def _start(self, base: int) -> None:
        """A fresh iterator whose first element is the batch of global step ``base``."""
        if self._it is not None:
            self._it.close()
        self._it = iter(self._ds[base:].to_iter_dataset(self._options))
        self._base = self._next = base  # where it began, the step it reads next

    def provide(self, epoch: int, perm: np.ndarray) -> None:
        self.orders.put(epoch, perm)

    def read(self, epoch: int, first: int, k: int) -> np.ndarray:
        start = epoch * self.steps_per_epoch + first
        if start != self._next:  # a resumed or re-cut schedule
            self._start(start)
        out = None
        for want in range(start, start + k):
            got, rows = next(self._it)
            if got != want:
                raise CheckpointError(
                    f"grain's iterator gave the batch of step {got} where step {want} was "
                    f"asked for (it began at step {self._base}; its state now "
                    f"{self._it.get_state()}): a restored grain state that does not resume "
                    "where it was saved, e.g. one written by another grain version. Resume "
                    "with the grain version that wrote the checkpoint, or move the "
                    "checkpoint's data/ folder aside to resume from the step alone.")
            if rows is None:
                raise RuntimeError(f"epoch {want // self.steps_per_epoch}'s order was not "
                                   "provided before its batches were read")
            if out is None:  # [k, M, H, W, C] filled in place: no list of batches to stack
                out = np.empty((k, *rows.shape), rows.dtype)
            out[want - start] = rows
        self._next = start + k
        self._states[self._next] = (self._base, self._it.get_state())
        if len(self._states) > KEEP_STATES:
            self._states.pop(min(self._states))
        return out

    def state(self, step: int) -> dict:
        """The JSON state of the stream at ``step`` (a call boundary already read)."""
        epoch, position = divmod(int(step), self.steps_per_epoch)
        base, grain_state = self._states.get(int(step), (None, None))
        return {"step": int(step), "epoch": epoch, "position": position,
                "batch_size": self.batch_size, "source": self.fingerprint,
                "base": base, "grain": grain_state}

    def resume(self, saved: Optional[dict], step: int, where: str = "the checkpoint") -> None:
        """Continue from ``saved`` (``state`` of ``step``, read back from ``where``); None
        (a checkpoint without it, or without grain's state): from the step alone. A
        mismatch is an error naming both."""
        check_resume(saved, step, where, fingerprint=self.fingerprint,
                     batch_size=self.batch_size, steps_per_epoch=self.steps_per_epoch)
        grain_state = None if saved is None else saved.get("grain")
        if grain_state is None:
            self._start(int(step))
            return
        # base: absent in states written before it existed, whose iterator began at step 0
        self._start(int(saved.get("base") or 0))
        try:
            self._it.set_state(grain_state)  # grain's own state; ``read`` checks where it is
        except Exception as e:
            raise CheckpointError(
                f"{where}: grain cannot restore the data iterator's saved state "
                f"{grain_state} ({type(e).__name__}: {e}). Resume with the grain version "
                "that wrote it, or move the checkpoint's data/ folder aside to resume from "
                "the step alone.") from e
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
    for key, mine, what in (
            ("source", fingerprint, "the training set changed (config.data.name or "
             "config.data.dir, or the contents of its files: the fingerprint covers the "
             "set's length, shape, dtype, file names and a sample of its rows)"),
            ("batch_size", batch_size, "config.train.batch_size changed")):
        if saved.get(key) != mine:
            raise DataError(
                f"{where} was written training with {key}={saved.get(key)!r}, but this run "
                f"has {key}={mine!r}: {what}, so the run cannot resume where it stopped. Use "
                "the data and config the run was started with (its workdir's config.json), "
                "or a new --workdir.")
    epoch, position = divmod(int(step), steps_per_epoch)
    if (saved.get("epoch"), saved.get("position")) != (epoch, position):
        raise CheckpointError(f"{where}: the data iterator's state is at epoch "
                              f"{saved.get('epoch')} batch {saved.get('position')}, but step "
                              f"{step} is epoch {epoch} batch {position} ({steps_per_epoch} "
                              "batches an epoch).")


def resume_check(source, batch_size: int, steps_per_epoch: int
                 ) -> Callable[[Optional[dict], int, str], None]:
    """``check_resume`` for a run over the training set ``source`` (either input pipeline:
    both save the fingerprint), as ``(saved, step, where) -> None``: run on the latest
    checkpoint before anything is written to the workdir."""
    return functools.partial(check_resume, fingerprint=fingerprint(source),
                             batch_size=batch_size, steps_per_epoch=steps_per_epoch)
