"""The streaming input pipeline: each train call's batches are read on the host, from a
random-access source, by a worker thread and placed on the devices ahead of the call
(``Stream``), for training sets that do not fit on the devices.

Order: step s of epoch e reads rows perm_e[i*B:(i+1)*B] (i = s mod steps_per_epoch), with
perm_e the permutation the on-device path draws (``epoch_permutation``), so both paths see
the same batches and give the same parameters. The position of the stream is a function of
the step alone, so a run killed mid-epoch resumes at the same row; the reader's own state
(``grain_pipeline.GrainReader``) is saved with each checkpoint too (``state`` / ``resume``)
and checked against the step on resume.

One read path for every source: a grain pipeline, whose read threads (``num_workers``)
default to none on the CPU backend (``grain_pipeline.read_threads``); with none, grain
reads on the stream's own thread, which costs an in-memory array 0.04 ms a batch more than
indexing it directly (benchmarks/README.md), so no second, direct path is kept.

Each process reads only the rows of its own devices' part of every batch (B/n per device)
and places them with ``jax.make_array_from_process_local_data``.
"""

from __future__ import annotations

import concurrent.futures
from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from vae_jax.data.grain_pipeline import AUTO, GrainReader
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
    num_workers: grain's read threads (``AUTO``: the backend's default; 0: grain reads on
    the stream's thread).
    """

    def __init__(self, source, mesh: Mesh, *, batch_size: int, steps_per_epoch: int,
                 total_steps: int, order: Callable[[int], np.ndarray],
                 schedule: Callable[[int], int], prefetch: int = 2,
                 num_workers: int = AUTO):
        self.source, self.batch_size, self.steps_per_epoch = source, batch_size, steps_per_epoch
        self.total_steps, self.order, self.schedule = total_steps, order, schedule
        self.depth = prefetch
        self.sharding = NamedSharding(mesh, P(None, DATA_AXIS))
        self.lo, self.hi = process_share(batch_size, mesh)
        self.item_shape = tuple(np.shape(source)[1:])
        self.reader = GrainReader(
            source, batch_size=batch_size, lo=self.lo, hi=self.hi,
            steps_per_epoch=steps_per_epoch, total_steps=total_steps, num_workers=num_workers)
        self._pending: dict[int, tuple[int, concurrent.futures.Future]] = {}
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stream")

    def _read(self, epoch: int, first: int, k: int) -> jax.Array:
        local = self.reader.read(epoch, first, k).reshape(k, self.hi - self.lo,
                                                          *self.item_shape)
        return jax.make_array_from_process_local_data(self.sharding, local,
                                                      (k, self.batch_size, *self.item_shape))

    def _submit(self, start: int) -> int:
        stop = self.schedule(start)
        if start not in self._pending:
            epoch, first = divmod(start, self.steps_per_epoch)
            if not start < stop <= (epoch + 1) * self.steps_per_epoch:
                raise ValueError(f"steps [{start}, {stop}) are not inside one epoch")
            if epoch not in self.reader.orders:  # drawn once, here, in step order
                self.reader.provide(epoch, np.asarray(self.order(epoch)))
            self._pending[start] = (stop, self._pool.submit(
                self._read, epoch, first, stop - start))
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

    def wait(self) -> None:
        """Block until the reads queued ahead are done (a benchmark times each stream's
        calls without another's reads ahead running meanwhile)."""
        concurrent.futures.wait([future for _, future in self._pending.values()])

    def state(self, step: int) -> dict:
        """The reader's JSON state at ``step`` (saved with the checkpoint)."""
        return self.reader.state(step)

    def resume(self, saved: Optional[dict], step: int, where: str = "the checkpoint") -> None:
        """Resume the reader from ``saved`` (``state`` of ``step``, or None: from the step)."""
        self.reader.resume(saved, step, where)

    def close(self) -> None:
        for _, future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=True)
        self.reader.close()
