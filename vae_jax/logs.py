"""Read back the scalars a run wrote, from its exact record ``workdir/metrics.jsonl``.

``experiment.train_and_evaluate`` writes every train and eval record there once per step,
even across kills and resumes (``runtime.MetricsLog``); ``read_scalars(workdir)`` turns
them into arrays for a notebook's plots, named as in TensorBoard (``train_loss``,
``test_elbo``, ...). No TensorFlow or TensorBoard is needed to read them.
"""

from __future__ import annotations

import os

import numpy as np

from vae_jax.runtime import MetricsLog


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps int64 [T], values float64 [T])}, sorted by step.

    Train records' fields are tagged ``train_<name>``; eval records' fields keep their
    names (``test_elbo``, ``test_au_z``, ...). A step recorded twice keeps its last value.
    """
    path = os.path.join(workdir, "metrics.jsonl")
    records = MetricsLog.read(path)
    if not records:
        raise FileNotFoundError(f"No metrics in {path}; train there first "
                                "(experiment.train_and_evaluate or experiments/main.py).")
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
