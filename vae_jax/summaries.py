"""TensorBoard event files without TensorFlow: a run's scalars for ``tensorboard --logdir``.

Written with tensorboardX (a small, TensorFlow-free writer of the same event format). Only
process 0 writes; the other processes log the scalars through absl instead. The numbers to
compute with are in ``metrics.jsonl`` (``vae_jax.runtime.MetricsLog``, read back by
``vae_jax.logs.read_scalars``): the event files may hold the steps a killed run redid.
"""

from __future__ import annotations

from typing import Mapping

from absl import logging


class ScalarWriter:
    """``write_scalars(step, {tag: value})`` into ``logdir``'s ``events.out.tfevents.*``."""

    def __init__(self, logdir: str, *, enabled: bool = True):
        self._writer = None
        if enabled:
            from tensorboardX import SummaryWriter  # imported only by the process that writes

            self._writer = SummaryWriter(logdir=logdir, flush_secs=30)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if self._writer is None:
            logging.info("[%d] %s", step, ", ".join(f"{k}={v:.6g}" for k, v in scalars.items()))
            return
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), int(step))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
