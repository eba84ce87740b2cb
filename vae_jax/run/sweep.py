"""Small grid sweeps: one workdir per point, resumable, and a summary of the final metrics.

A config declares its grid in ``config.sweep``, a section mirroring the config's own:
leaves are tuples of values, e.g. ::

    config.sweep = ml_collections.ConfigDict(
        {"loss": {"beta": (0.5, 1.0, 2.0, 4.0)}, "model": {"latent_dim": (2, 20)}})

``grid(config)`` expands it to points ``{"loss.beta": 0.5, "model.latent_dim": 2}, ...``
(the last field varies fastest). ``run_sweep`` trains each point with
``experiment.train_and_evaluate`` in ``workdir/<name>`` (name from the overrides, e.g.
``beta=0.5,latent_dim=2``), evaluates it with ``experiment.evaluate_checkpoint`` and writes
``point.json``; points with a ``point.json`` are skipped, so an interrupted sweep resumes.
Then ``summary.csv``, ``summary.md`` and ``elbo_vs_beta.png`` (when β is swept) are written.

``main`` is the ``vae-jax-sweep`` command (``python -m experiments.sweep`` in a checkout)::

    vae-jax-sweep --config=experiments/configs/sweep_beta.py --workdir=runs/sweep \
        [--parallel=2] [--config.train.num_epochs=1]
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import os
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from vae_jax import progress
from vae_jax.progress import Progress
from vae_jax.run import experiment, runtime

POINT_FILE = "point.json"
METRICS = ("test_elbo", "test_log_px_z", "test_kl")


def _leaves(section, prefix: str = "") -> list[tuple[str, tuple]]:
    out = []
    for key in section.keys():
        value, path = section[key], f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            out += _leaves(value, path + ".")
        elif isinstance(value, (tuple, list)) and len(value) > 0:
            out.append((path, tuple(value)))
        else:
            raise ValueError(f"config.sweep.{path}={value!r}: each swept field needs a "
                             "non-empty tuple of values, e.g. (0.5, 1.0, 2.0).")
    return out


def axes(config: ml_collections.ConfigDict) -> list[tuple[str, tuple]]:
    """The swept fields and their values: [("loss.beta", (0.5, 1.0)), ...]."""
    if "sweep" not in config or not config.sweep.keys():
        raise ValueError("The config declares no sweep: add e.g. config.sweep = "
                         "ml_collections.ConfigDict({'loss': {'beta': (0.5, 1.0, 2.0)}}).")
    out = _leaves(config.sweep)
    for path, _ in out:
        section = config
        for part in path.split("."):
            if part not in section:
                raise ValueError(f"config.sweep.{path} names no config field: config.{path} "
                                 "does not exist.")
            section = section[part]
    return out


def grid(config: ml_collections.ConfigDict) -> list[dict]:
    """Every combination of the swept values: [{field path: value}, ...]."""
    ax = axes(config)
    return [dict(zip([p for p, _ in ax], values))
            for values in itertools.product(*[v for _, v in ax])]


def point_name(point: dict) -> str:
    """'beta=0.5,latent_dim=2': the last component of each path, or the whole path when two
    swept fields share a last component."""
    short = [p.split(".")[-1] for p in point]
    use_full = len(set(short)) < len(short)
    return ",".join(f"{p if use_full else s}={v}" for (p, v), s in zip(point.items(), short))


def point_config(config: ml_collections.ConfigDict, point: dict) -> ml_collections.ConfigDict:
    """A copy of ``config`` with the point's overrides and without the ``sweep`` section."""
    cfg = copy.deepcopy(config)
    with cfg.unlocked():
        if "sweep" in cfg:
            del cfg["sweep"]
        cfg.update_from_flattened_dict(dict(point))
    return cfg


def run_point(config: ml_collections.ConfigDict, workdir: str, point: dict) -> dict:
    """Train and evaluate one point in ``workdir/<name>``; returns and writes its record."""
    name = point_name(point)
    point_dir = os.path.join(workdir, name)
    record_path = os.path.join(point_dir, POINT_FILE)
    if os.path.exists(record_path):
        with open(record_path) as f:
            return json.load(f)
    cfg = point_config(config, point)
    t0 = time.perf_counter()
    experiment.train_and_evaluate(cfg, point_dir)
    result = experiment.evaluate_checkpoint(cfg, point_dir)
    record = {"name": name, "overrides": point, "step": result["step"],
              "seconds": round(time.perf_counter() - t0, 1)}
    record.update({k: result[k] for k in METRICS if k in result})
    tmp = record_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, record_path)  # written last: its presence means "done"
    return record


def run_sweep(config: ml_collections.ConfigDict, workdir: str, *, parallel: int = 1,
              command: Optional[Callable[[int], Sequence[str]]] = None) -> list[dict]:
    """Run every point not finished yet, then write the summary; returns the records.

    parallel == 1: points run one after another in this process. parallel > 1: up to that
    many subprocesses at a time, point i started as ``command(i)`` (which must run
    ``run_point`` for ``grid(config)[i]``), each logging to ``workdir/<name>/log.txt``.
    """
    points = grid(config)
    os.makedirs(workdir, exist_ok=True)
    todo = [i for i, p in enumerate(points)
            if not os.path.exists(os.path.join(workdir, point_name(p), POINT_FILE))]
    print(f"Sweep of {len(points)} points in {workdir}: {len(points) - len(todo)} done, "
          f"{len(todo)} to run.", flush=True)
    bar = Progress(len(points), unit="point", log_interval_s=0.0)
    done = len(points) - len(todo)
    if parallel <= 1:
        for i in todo:
            bar.newline()
            print(f"[sweep] point {i + 1}/{len(points)}: {point_name(points[i])}", flush=True)
            run_point(config, workdir, points[i])
            done += 1
            bar.update(done, force=True)
    else:
        if command is None:
            raise ValueError("run_sweep(parallel > 1) needs `command`, the argv that runs one "
                             "point in a subprocess (``main`` provides it).")
        running: list[tuple[int, subprocess.Popen, object]] = []
        queue = list(todo)
        failed = []
        while queue or running:
            while queue and len(running) < parallel:
                i = queue.pop(0)
                point_dir = os.path.join(workdir, point_name(points[i]))
                os.makedirs(point_dir, exist_ok=True)
                log = open(os.path.join(point_dir, "log.txt"), "a")
                running.append((i, subprocess.Popen(list(command(i)), stdout=log,
                                                    stderr=subprocess.STDOUT), log))
            time.sleep(0.5)
            for item in list(running):
                i, proc, log = item
                if proc.poll() is not None:
                    log.close()
                    running.remove(item)
                    if proc.returncode != 0:
                        failed.append(point_name(points[i]))
                    done += 1
                    bar.update(done, force=True)
        if failed:
            raise RuntimeError(f"Sweep points failed: {failed}; see log.txt in their folders "
                               f"under {workdir}. Rerun the sweep to retry only those.")
    records = [run_point(config, workdir, p) for p in points]  # all done: reads point.json
    write_summary(workdir, records, [p for p, _ in axes(config)])
    return records


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_summary(workdir: str, records: list[dict], fields: list[str]) -> dict[str, str]:
    """summary.csv, summary.md and (when loss.beta is swept) elbo_vs_beta.png in ``workdir``."""
    header = ["name", *fields, "step", *METRICS, "seconds"]
    rows = [[r["name"], *[r["overrides"][f] for f in fields], r["step"],
             *[r.get(m, float("nan")) for m in METRICS], r["seconds"]] for r in records]
    paths = {"csv": os.path.join(workdir, "summary.csv"),
             "md": os.path.join(workdir, "summary.md")}
    with open(paths["csv"], "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    md = ["| " + " | ".join(header[1:]) + " |", "|" + "---|" * (len(header) - 1)]
    md += ["| " + " | ".join(_fmt(v) for v in row[1:]) + " |" for row in rows]
    with open(paths["md"], "w") as f:
        f.write("\n".join(md) + "\n")
    if "loss.beta" in fields:
        try:
            paths["plot"] = plot_elbo_vs_beta(os.path.join(workdir, "elbo_vs_beta.png"),
                                              records, fields)
        except ImportError as e:
            print(f"Skipping elbo_vs_beta.png: {e}")
    print("\n".join(md), flush=True)
    return paths


def plot_elbo_vs_beta(path: str, records: list[dict], fields: list[str]) -> str:
    """Test ELBO (evaluated at β = 1) against the training β, one line per other setting."""
    from matplotlib.figure import Figure  # optional dependency, only for this plot

    others = [f for f in fields if f != "loss.beta"]
    lines: dict[tuple, list] = {}
    for r in records:
        key = tuple(r["overrides"][f] for f in others)
        lines.setdefault(key, []).append((r["overrides"]["loss.beta"], r["test_elbo"]))
    fig = Figure(figsize=(5, 3.6), dpi=80)
    ax = fig.add_subplot()
    for key, pts in lines.items():
        pts.sort()
        label = ", ".join(f"{f.split('.')[-1]}={v}" for f, v in zip(others, key)) or None
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=label)
    ax.set_xscale("log", base=2)
    betas = sorted({r["overrides"]["loss.beta"] for r in records})
    ax.set_xticks(betas, [f"{b:g}" for b in betas])
    ax.minorticks_off()
    ax.set_xlabel("β used in training")
    ax.set_ylabel("test ELBO (nats, β = 1)")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path


# ----------------------------------------------------------------------------- the command

def _define_flags() -> None:
    config_flags.DEFINE_config_file("config", None, "Config file declaring config.sweep.",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Sweep folder: one subfolder per point plus "
                        "summaries.")
    flags.DEFINE_integer("parallel", 1, "Points run at once: 1 = in this process, one after "
                         "another; N > 1 = up to N subprocesses.")
    flags.DEFINE_integer("point", None, "Internal: run only this point index (a subprocess).")
    flags.DEFINE_bool("progress", True, "Progress bars; --noprogress silences them.")
    flags.mark_flags_as_required(["config", "workdir"])


def _point_command(i: int) -> list[str]:
    """The argv of a subprocess that runs point ``i`` with this sweep's flags."""
    args = [a for a in sys.argv[1:] if not a.startswith(("--parallel", "--point"))]
    return [sys.executable, "-m", "vae_jax.run.sweep", *args, "--parallel=1", f"--point={i}"]


def _main(argv) -> None:
    del argv
    f = flags.FLAGS
    if not f["verbosity"].present:  # orbax logs every checkpoint at INFO
        logging.set_verbosity(logging.WARNING)
    if not f.progress:
        progress.set_enabled(False)
    if f.point is not None:
        run_point(f.config, f.workdir, grid(f.config)[f.point])
    else:
        run_sweep(f.config, f.workdir, parallel=f.parallel, command=_point_command)


def main() -> None:
    """``vae-jax-sweep``: a grid of runs declared in ``config.sweep``, one workdir each."""
    runtime.current_folder_importable()
    _define_flags()
    runtime.list_flags_in_help(
        "A grid of runs declared in config.sweep, one workdir each, then summary.csv/.md.\n\n"
        "  vae-jax-sweep --config=experiments/configs/sweep_beta.py --workdir=runs/sweep"
        " [--parallel=2]\n", ["config", "workdir", "parallel", "progress"])
    app.run(_main)


if __name__ == "__main__":
    main()
