"""Read back the scalars a run wrote (TensorBoard event files in its workdir).

``experiment.train_and_evaluate`` logs train_* metrics, steps_per_s and test_* metrics through
clu's writer; ``read_scalars(workdir)`` turns them into arrays for a notebook's plots.
"""

from __future__ import annotations

import glob
import os

import numpy as np


def read_scalars(workdir: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps int64 [T], values float64 [T])}, sorted by step.

    A resumed run has several event files; they are read in name (= start time) order and a
    step logged twice keeps its last value.
    """
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.util import tensor_util

    files = sorted(glob.glob(os.path.join(workdir, "events.out.tfevents.*")))
    if not files:
        raise FileNotFoundError(f"No TensorBoard event files in {workdir}; train there first "
                                "(experiment.train_and_evaluate or experiments/main.py).")
    series: dict[str, dict[int, float]] = {}
    for path in files:
        for event in event_file_loader.EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.HasField("tensor"):
                    x = tensor_util.make_ndarray(value.tensor)
                elif value.HasField("simple_value"):
                    x = value.simple_value
                else:
                    continue
                if np.ndim(x) == 0:
                    series.setdefault(value.tag, {})[int(event.step)] = float(x)
    out = {}
    for tag, points in series.items():
        steps = np.array(sorted(points), np.int64)
        out[tag] = (steps, np.array([points[s] for s in steps], np.float64))
    return out
