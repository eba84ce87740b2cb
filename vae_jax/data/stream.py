"""The streaming input pipeline: each train call's batches are read on the host, from a
random-access source, by a worker thread and placed on the devices ahead of the call
(``Stream``), for training sets that do not fit on the devices.

Order: step s of epoch e reads rows perm_e[i*B:(i+1)*B] (i = s mod steps_per_epoch), with
perm_e the permutation the on-device path draws (``epoch_permutation``), so both paths see
the same batches and give the same parameters. The position of the stream is a function of
the step alone, so a run killed mid-epoch resumes at the same row; with a ``reader``
(``grain_pipeline.GrainReader``, what training uses) the reader's own state is saved with
each checkpoint too (``state`` / ``resume``) and checked against the step on resume.

Each process reads only the rows of its own devices' part of every batch (B/n per device)
and places them with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vae_jax.data.grain_pipeline import GrainReader
from vae_jax.errors import DataError
from vae_jax.parallel import DATA_AXIS


def process_share(batch_size: int, mesh: Mesh, process_index: int | None = None
                  ) -> tuple[int, int]:
    """[lo, hi): the positions of a global batch that ``process_index``'s devices hold."""
    p = jax.process_index() if process_index is None else process_index
    per_device = batch_size // mesh.size
    ids = [i for i, d in enumerate(mesh.devices.flat) if d.process_index == p]
    return ids[0] * per_device, (ids[-1] + 1) * per_device


def check_process_share(batch_size: int, mesh: Mesh) -> None:
    """Every process reads a contiguous, equal, non-empty part of each batch; else a
    DataError naming the sizes."""
    owners = [d.process_index for d in mesh.devices.flat]
    counts = {p: owners.count(p) for p in sorted(set(owners))}
    per_device = batch_size // mesh.size
    if per_device == 0 or len(set(counts.values())) > 1:
        raise DataError(
            f"The streaming pipeline splits each batch of {batch_size} over {mesh.size} "
            f"devices held by {len(counts)} processes ({counts} devices each), so the "
            f"processes would read {[c * per_device for c in counts.values()]} images per "
            "batch: each process's share must be equal and non-empty. Give every process "
            "the same number of devices and a batch of at least one image per device.")
    for p in counts:
        ids = [i for i, o in enumerate(owners) if o == p]
        if ids != list(range(ids[0], ids[-1] + 1)):
            raise DataError(f"process {p}'s devices are not contiguous in the data mesh "
                            f"(positions {ids}); build the mesh with parallel.data_mesh().")


class Stream:
    """Each train call's batches, uint8 [k, B, H, W, C] on the devices (axis 1 split over
    ``data``), read by a host thread ``prefetch`` calls ahead.

    source: random access by index arrays (a numpy array, a memory map, or anything with
    ``source[np.ndarray] -> uint8 [len, H, W, C]``) holding the training set's rows;
    order(epoch) -> int [N], the epoch's permutation (called on the caller's thread);
    schedule(step) -> where the call starting at ``step`` ends (never past its epoch);
    num_workers: None reads ``source`` on the stream's thread; an int reads it through a
    grain pipeline (``GrainReader``) with that many read threads (0: the stream's thread).
    """

    def __init__(self, source, mesh: Mesh, *, batch_size: int, steps_per_epoch: int,
                 total_steps: int, order: Callable[[int], np.ndarray],
                 schedule: Callable[[int], int], prefetch: int = 2,
                 num_workers: Optional[int] = None):
        self.source, self.batch_size, self.steps_per_epoch = source, batch_size, steps_per_epoch
        self.total_steps, self.order, self.schedule = total_steps, order, schedule
        self.depth = prefetch
        self.sharding = NamedSharding(mesh, P(None, DATA_AXIS))
        self.lo, self.hi = process_share(batch_size, mesh)
        self.item_shape = tuple(np.shape(source)[1:])
        self.reader = None if num_workers is None else GrainReader(
            source, batch_size=batch_size, lo=self.lo, hi=self.hi,
            steps_per_epoch=steps_per_epoch, total_steps=total_steps, num_workers=num_workers)
        self._orders: dict[int, np.ndarray] = {}
        self._pending: dict[int, tuple[int, concurrent.futures.Future]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stream")

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {e: p for e, p in self._orders.items() if e >= epoch - 1}
            self._orders[epoch] = np.asarray(self.order(epoch))
            if self.reader is not None:
                self.reader.provide(epoch, self._orders[epoch])
        return self._orders[epoch]

    def _read(self, epoch: int, perm: np.ndarray, first: int, k: int) -> jax.Array:
        b = self.batch_size
        if self.reader is not None:
            local = self.reader.read(epoch, first, k)
        else:
            idx = perm[first * b:(first + k) * b].reshape(k, b)[:, self.lo:self.hi]
            local = np.asarray(self.source[idx.reshape(-1)])
        local = local.reshape(k, self.hi - self.lo, *self.item_shape)
        return jax.make_array_from_process_local_data(self.sharding, local,
                                                      (k, b, *self.item_shape))

    def _submit(self, start: int) -> int:
        stop = self.schedule(start)
        if start not in self._pending:
            epoch, first = divmod(start, self.steps_per_epoch)
            if not start < stop <= (epoch + 1) * self.steps_per_epoch:
                raise ValueError(f"steps [{start}, {stop}) are not inside one epoch")
            self._pending[start] = (stop, self._pool.submit(
                self._read, epoch, self._perm(epoch), first, stop - start))
        return stop

    def batches(self, start: int) -> tuple[int, jax.Array]:
        """(stop, uint8 [stop - start, B, H, W, C] on the devices): the call from ``start``.
        Queues the reads of the next ``prefetch`` calls."""
        for key in [k for k in self._pending if k < start]:
            self._pending.pop(key)[1].cancel()  # stale: a resumed or re-cut schedule
        stop = nxt = self._submit(start)
        for _ in range(self.depth):
            if nxt >= self.total_steps:
                break
            nxt = self._submit(nxt)
        stop, future = self._pending.pop(start)
        return stop, future.result()

    def state(self, step: int) -> Optional[dict]:
        """The reader's JSON state at ``step`` (saved with the checkpoint); None without one."""
        return None if self.reader is None else self.reader.state(step)

    def resume(self, saved: Optional[dict], step: int, where: str = "the checkpoint") -> None:
        """Resume the reader from ``saved`` (``state`` of ``step``, or None: from the step)."""
        if self.reader is not None:
            self.reader.resume(saved, step, where)

    def close(self) -> None:
        for _, future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
        if self.reader is not None:
            self.reader.close()
