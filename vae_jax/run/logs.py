"""What a run records in its workdir: the exact ``metrics.jsonl``, TensorBoard event files,
and reading the scalars back.

* ``MetricsLog``: ``workdir/metrics.jsonl``, one JSON record per line. A killed run may
  have logged steps after its last checkpoint; on resume ``truncate_after(step)`` drops
  them (atomically: write a copy, then ``os.replace``), so the file ends with each step
  exactly once. TensorBoard's event files are append-only; see docs/reliability.md.
* ``ScalarWriter``: TensorBoard event files without TensorFlow, for ``tensorboard
  --logdir``, written with tensorboardX (a small, TensorFlow-free writer of the same event
  format). Only process 0 writes; the other processes log the scalars through absl
  instead. The numbers to compute with are in ``metrics.jsonl``: the event files may hold
  the steps a killed run redid.
* ``read_scalars(workdir)``: the records of ``metrics.jsonl`` as arrays for a notebook's
  plots, named as in TensorBoard (``train_loss``, ``test_elbo``, ...). No TensorFlow or
  TensorBoard is needed to read them.
* ``config.json`` (the latest start's config) and ``config_history.jsonl`` (one record per
  start: the step it takes effect at, the fields changed, the config): ``config_changes``,
  ``append_config_history``; ``DATA_SET_FIELDS`` are those a resume may not change.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax
import numpy as np
from absl import logging


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

    def has(self, step: int, kind: str) -> bool:
        """Whether a ``kind`` record of ``step`` was written: process 0's answer on every
        process (multi-process, only process 0 need see the file)."""
        found = self.enabled and any(r.get("step") == step and r.get("kind") == kind
                                     for r in self.read(self.path))
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            found = bool(multihost_utils.broadcast_one_to_all(np.int32(found)))
        return found

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

    def cut_after(self, step: int) -> None:
        """Drop records after ``step`` in place (one ``ftruncate``, no copy: works on a
        full disk). Records are in step order, as ``truncate_after`` leaves them."""
        if not self.enabled or not os.path.exists(self.path):
            return
        offset = 0
        with open(self.path, "rb+") as f:
            for line in f:
                try:
                    if json.loads(line).get("step", 0) > step:
                        break
                except ValueError:
                    break
                offset += len(line)
            f.truncate(offset)

    def write(self, step: int, kind: str, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "kind": kind} | {k: float(v) for k, v in values.items()}
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")



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


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps int64 [T], values float64 [T])}, sorted by step.

    Train records' fields are tagged ``train_<name>``; eval records' fields keep their
    names (``test_elbo``, ``test_au_z``, ...). A step recorded twice keeps its last value.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    records = MetricsLog.read(path)
    if not records:
        raise FileNotFoundError(f"No metrics in {path}; train there first "
                                "(vae_jax.run.experiment.train_and_evaluate or vae-jax).")
    series: dict[str, dict[int, float]] = {}
    for record in records:
        prefix = "train_" if record.get("kind") == "train" else ""
        for name, value in record.items():
            if name in ("step", "kind"):
                continue
            series.setdefault(prefix + name, {})[int(record["step"])] = float(value)
    out = {}
    for tag, points in series.items():
        steps = np.array(sorted(points), np.int64)
        out[tag] = (steps, np.array([points[s] for s in steps], np.float64))
    return out


# -------------------------------------------------------------- the config of each start

CONFIG = "config.json"               # the config of the latest start (or resume)
CONFIG_HISTORY = "config_history.jsonl"  # one record per start: its step and what changed
# The fields that make "the data set": a run does not resume on another one (its training
# set's contents are checked too, by fingerprint: data.resume_check). data.dir may change
# (the same files moved) as long as the fingerprint agrees.
DATA_SET_FIELDS = ("data.name", "data.binarization")
ABSENT = "(absent)"  # a field one config lacks


def flat_config(config: Mapping) -> dict:
    """{"section.field": value} of a config as JSON (``config.json``'s content)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out |= {f"{key}.{k}": v for k, v in flat_config(value).items()}
        else:
            out[key] = value
    return out


def config_changes(previous: Mapping, current: Mapping) -> dict[str, list]:
    """{field: [previous value, current value]} of every field that differs between two
    configs as JSON (a field one of them lacks: "(absent)")."""
    a, b = flat_config(previous), flat_config(current)
    return {k: [a.get(k, ABSENT), b.get(k, ABSENT)] for k in sorted(set(a) | set(b))
            if a.get(k, ABSENT) != b.get(k, ABSENT)}


def read_config(workdir: str) -> dict | None:
    """``workdir/config.json`` (the config of the run's latest start), or None."""
    path = os.path.join(workdir, CONFIG)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def append_config_history(workdir: str, record: dict) -> None:
    """Append one record to ``workdir/config_history.jsonl`` (flushed and synced)."""
    with open(os.path.join(workdir, CONFIG_HISTORY), "a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def describe_changes(changes: Mapping[str, list], limit: int = 12) -> str:
    """'loss.beta 1.0 -> 4.0, train.num_steps 20 -> 40' (at most ``limit`` fields)."""
    shown = [f"{k} {json.dumps(old)} -> {json.dumps(new)}"
             for k, (old, new) in list(changes.items())[:limit]]
    more = f" and {len(changes) - limit} more" if len(changes) > limit else ""
    return ", ".join(shown) + more
