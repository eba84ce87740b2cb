"""The run's footprint in its workdir: the workdir check, an exact metrics log that survives
kills, atomic JSON files, and a graceful stop on SIGTERM / SIGINT.

* ``check_workdir``: runs before any compilation and before anything is created in the
  workdir, so a run that fails validation alters nothing.
* ``MetricsLog``: ``workdir/metrics.jsonl``, one JSON record per line. A killed run may
  have logged steps after its last checkpoint; on resume ``truncate_after(step)`` drops
  them (atomically: write a copy, then ``os.replace``), so the file ends with each step
  exactly once. TensorBoard's event files are append-only; see docs/reliability.md.
* ``StopSignal``: the first SIGTERM/SIGINT sets a flag that the training loop reads at a
  call boundary (it then saves and exits); a second one gets the default behaviour.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from typing import Optional

import jax
import numpy as np

from vae_jax.errors import ConfigError


# --------------------------------------------------------------------------- workdir

def check_workdir(workdir: str) -> None:
    """--workdir must be a writable folder or creatable as one. Creates nothing."""
    if not workdir:
        raise ConfigError("--workdir is empty: give a folder for checkpoints and metrics.")
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"--workdir={workdir} is a file, not a folder. Give a folder path "
                          "(it is created if absent) or move the file away.")
    probe = path
    while not os.path.exists(probe):  # the nearest existing ancestor must be a writable dir
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ConfigError(f"--workdir={workdir} cannot be created: {probe} is a file, not a "
                          "folder. Choose another path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"--workdir={workdir} is not writable ({probe} denies write "
                          "access to this user). Choose a folder you can write to, or fix its "
                          "permissions.")


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file, then ``os.replace``)."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------ metrics

class MetricsLog:
    """Append-only ``metrics.jsonl`` of {"step": int, "kind": str, name: float, ...}.

    Only process 0 writes (``enabled``). Each record is flushed as written, so a SIGKILL
    loses at most a partial last line, which ``read`` and ``truncate_after`` drop.
    """

    def __init__(self, path: str, enabled: bool = True):
        self.path, self.enabled = path, enabled

    @staticmethod
    def read(path: str) -> list[dict]:
        if not os.path.exists(path):
            return []
        out = []
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:  # a line cut by a kill
                    continue
        return out

    def truncate_after(self, step: int) -> int:
        """Drop records with step > ``step`` (work a resumed run redoes); returns how many."""
        if not self.enabled or not os.path.exists(self.path):
            return 0
        records = self.read(self.path)
        keep = [r for r in records if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in keep)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        return len(records) - len(keep)

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind} | {k: float(v) for k, v in values.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


# ------------------------------------------------------------------------------ signals

class StopSignal:
    """Context manager: while active, SIGTERM/SIGINT set ``signum`` instead of killing.

    The first signal restores the previous handler, so a second Ctrl-C acts at once.
    Only installs in the main thread (Python's rule); elsewhere it is inert.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: Optional[int] = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        del frame
        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
        print(f"Received {signal.Signals(signum).name}: finishing the current call, then "
              "saving a checkpoint and exiting (send it again to stop at once).", flush=True)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def requested(self) -> bool:
        """Whether any process got a signal. Multi-process, all must agree (one tiny
        all-gather per call; single-process runs pay nothing)."""
        if jax.process_count() == 1:
            return self.signum is not None
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
        if self.signum is None and np.any(flags):
            self.signum = int(np.max(flags))
        return bool(np.any(flags))
