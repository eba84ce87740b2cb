"""The checkpoint saves of one training run (``TrainingSaves``): at most one asynchronous
save in flight, each under a ``runtime.WriteGuard``, so a failed write is a WriteError naming
its step (one save late when asynchronous); and the loop's ``closing``, which finishes the
last save, flushes the summaries and, after a failed write, cuts metrics.jsonl back to the
last checkpoint known to be on disk. The saving itself is ``checkpoint.save`` / ``finish``."""

from __future__ import annotations

import contextlib
from typing import Any, Optional

import orbax.checkpoint as ocp
from absl import logging

from vae_jax import checkpoint
from vae_jax.errors import WriteError


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
        with self.guard(checkpoint.step_path(self.mngr, step)):
            checkpoint.save(self.mngr, step, state, data_state=data_state)
        self.pending = int(step)

    def finish(self) -> None:
        """Block until the save in flight is finalised (its failure: a WriteError)."""
        step, self.pending = self.pending, None
        if step is not None:
            with self.guard(checkpoint.step_path(self.mngr, step)):
                checkpoint.finish(self.mngr, step)
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
        close ``writer`` (a summaries.ScalarWriter) and close the manager. After a failed
        write, cut ``metrics_log`` (runtime.MetricsLog) back to the last finished checkpoint
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
