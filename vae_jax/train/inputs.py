"""What the training loop reads: one input object whatever the pipeline.

``next(step) -> (stop, run)``: the call from ``step`` ends at ``stop``, and
``run(state, train_key) -> (state, metrics [stop - step])`` runs it. The loop calls only
that, saves ``state(step)`` with each checkpoint (the input's own state, or None) and, on
resume, hands it back to ``resume``.

* ``DeviceInput`` (``config.data.pipeline="device"``): the training set on the devices,
  split over the data axis; each epoch's permutation is drawn there and every step's batch
  gathered inside the call (``Trainer.call``). Its state is the stream's without the
  reader's position: the step, the batch size and the training set's fingerprint, so a
  resume over another training set is refused on either path (``data.check_resume``).
* ``StreamInput`` (``"stream"``): each call's batches read on the host by a grain pipeline
  and placed on the devices ahead of the call (``data.Stream``, ``Trainer.call_streamed``).

Both see the same batches in the same order (epoch e's permutation is
``Trainer.permutation(fold_in(order_key, e))``), so the two pipelines train the same
parameters.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import jax
import numpy as np

from vae_jax import data
from vae_jax.train.trainer import Trainer

Run = Callable[..., tuple]  # (state, train_key) -> (state, metrics)


class DeviceInput(contextlib.AbstractContextManager):
    """The training set placed on the devices once; batches gathered inside each call.

    ``images``: this process's rows [first, last) of the ``num_rows`` training images,
    uint8 [N, H, W, C] (``data.process_rows``); ``schedule(step)`` is where the call
    starting at ``step`` ends; ``fingerprint``: the whole training set's
    (``data.fingerprint``), saved with each checkpoint and checked on resume.
    """

    def __init__(self, trainer: Trainer, images, *, num_rows: int, row_offset: int,
                 order_key: jax.Array, schedule: Callable[[int], int],
                 fingerprint: Optional[str] = None):
        self.trainer, self.order_key, self.schedule = trainer, order_key, schedule
        self.num_rows, self.fingerprint = num_rows, fingerprint
        self.images = trainer.put_train_images(images, num_rows=num_rows,
                                               row_offset=row_offset)
        self._perm, self._epoch = None, -1

    def next(self, step: int) -> tuple[int, Run]:
        epoch = step // self.trainer.steps_per_epoch
        if epoch != self._epoch:
            self._perm = self.trainer.permutation(
                self.order_key, jax.device_put(np.int32(epoch)), self.num_rows)
            self._epoch = epoch
        stop = self.schedule(step)
        call, images, perm = self.trainer.call(stop - step), self.images, self._perm
        return stop, lambda state, key: call(state, images, perm, key)

    def state(self, step: int) -> Optional[dict]:
        """The step, batch size and training set's fingerprint (the position is a function
        of the step); None without a fingerprint."""
        if self.fingerprint is None:
            return None
        epoch, position = divmod(int(step), self.trainer.steps_per_epoch)
        return {"step": int(step), "epoch": epoch, "position": position,
                "batch_size": self.trainer.batch_size, "source": self.fingerprint}

    def resume(self, saved: Optional[dict], step: int, where: str) -> None:
        """Check ``saved`` (None: a checkpoint without it) against this run's training set,
        batch and ``step``; nothing to restore: the step fixes the epoch and permutation."""
        if self.fingerprint is not None:
            data.check_resume(saved, step, where, fingerprint=self.fingerprint,
                              batch_size=self.trainer.batch_size,
                              steps_per_epoch=self.trainer.steps_per_epoch)

    def __exit__(self, *exc) -> None:
        return None


class StreamInput(contextlib.AbstractContextManager):
    """Batches read on the host a call at a time (``data.Stream``) and placed ahead.

    ``source``: random access to the training rows (an array, a memory map or
    ``data.Rows``); the reader's state is saved with each checkpoint (``state``) and
    checked on resume (``resume``).
    """

    def __init__(self, trainer: Trainer, source, *, total_steps: int, order_key: jax.Array,
                 schedule: Callable[[int], int], prefetch: int, num_workers: int):
        num_rows = len(source)
        self.trainer = trainer
        self.stream = data.Stream(
            source, trainer.mesh, batch_size=trainer.batch_size,
            steps_per_epoch=trainer.steps_per_epoch, total_steps=total_steps,
            schedule=schedule, prefetch=prefetch, num_workers=num_workers,
            order=lambda epoch: jax.device_get(trainer.permutation(
                order_key, jax.device_put(np.int32(epoch)), num_rows)))

    def next(self, step: int) -> tuple[int, Run]:
        stop, batches = self.stream.batches(step)  # read and placed ahead by its thread
        call = self.trainer.call_streamed()
        return stop, lambda state, key: call(state, batches, key)

    def state(self, step: int) -> Optional[dict]:
        """The reader's JSON state at ``step``, saved with the checkpoint."""
        return self.stream.state(step)

    def resume(self, saved: Optional[dict], step: int, where: str) -> None:
        """Resume the reader from its saved state (checked against ``step``)."""
        self.stream.resume(saved, step, where)

    def __exit__(self, *exc) -> None:
        self.stream.close()
