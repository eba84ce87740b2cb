"""Time to the first training step of every shipped config and variant, as the command
line runs it: from process start to the end of the first training call, with a cold and
then a warm persistent compilation cache.

    python -m benchmarks.time_to_first_step [--configs=default,fashion_mnist_vdm:8bit]
        [--repeats=1] [--workdir=/tmp/ttfs] [--checkout=/path/to/another/checkout]
        [--cache_reads]

Each run is ``python -m experiments.main --config=... --config.train.num_steps=1
--config.eval.num_test_images=64`` in a fresh process and a fresh workdir; the first step
is the progress line ``step 1/1`` (printed when the first call's metrics are back), and the
process is stopped there. The commands run without this process's ``XLA_FLAGS``,
``JAX_COMPILATION_CACHE_DIR`` and ``VAE_JAX_PROGRESS``: XLA's defaults, the script's own
caches and plain progress lines (an XLA option is timed on the command itself). Cold: a
new, empty compilation cache; warm: the same command again on that cache. "compiling" is
the sum of the compilations the process announced up to that line (``compiling the
initialisation / the train step ... s``; each one longer than
``progress.WAITING_DELAY_S``), so it includes their tracing.

Configs whose data is not on this machine run on stand-ins of the same shape, labelled in
the table: MNIST variants read the Fashion-MNIST IDX files (the same file names and shape)
as ``mnist``; CIFAR-10 variants read an ``npz`` of random uint8 32x32x3 images (50 000
train, 10 000 test) built once in ``--workdir``. The sweep configs (run by
``experiments.sweep``) and ``burda.py`` (a recipe the mnist_* / fashion_mnist_* configs
call) are not configs of their own.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "experiments", "configs")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
NOT_CONFIGS = {"__init__", "burda", "sweep_beta", "sweep_smoke"}
STEP = re.compile(r"^step (\d+)/(\d+)")
COMPILING = re.compile(r"^compiling (.+?) \.\.\. ([\d.]+) s")
CACHE_READ = re.compile(r"^cache read (\S+) ([\d.]+) s")
# --cache_reads: the command run with each read of the persistent compilation cache timed
# (JAX's own function, wrapped before the command installs its damaged-entry hook on it).
TIMED_READS = """
import runpy, sys, time
from jax._src import compilation_cache as cc
read = cc.get_executable_and_time
def timed(cache_key, *args, **kwargs):
    t = time.perf_counter()
    try:
        return read(cache_key, *args, **kwargs)
    finally:
        print(f"cache read {cache_key.split('-')[0]} {time.perf_counter() - t:.2f} s", flush=True)
cc.get_executable_and_time = timed
sys.argv = ["vae-jax", *sys.argv[1:]]
runpy.run_module("experiments.main", run_name="__main__")
"""


def shipped() -> list[str]:
    """Every config file and variant under experiments/configs, as ``name`` or
    ``name:variant``."""
    out = []
    for file in sorted(os.listdir(CONFIGS)):
        name, ext = os.path.splitext(file)
        if ext != ".py" or name in NOT_CONFIGS:
            continue
        module = importlib.import_module(f"experiments.configs.{name}")
        variants = getattr(module, "VARIANTS", None)
        out += [f"{name}:{v}" for v in variants] if variants else [name]
    return out


def _config(spec: str):
    from vae_jax import config as config_lib

    name, _, variant = spec.partition(":")
    module = importlib.import_module(f"experiments.configs.{name}")
    return config_lib.resolve(module.get_config(variant) if variant else module.get_config())


def stand_in(spec: str, workdir: str) -> tuple[list[str], str]:
    """(extra flags, label) for a config whose data set is not on this machine."""
    data = _config(spec).data.name
    if data == "mnist":
        return [f"--config.data.dir={FASHION_MNIST}"], "Fashion-MNIST files read as mnist"
    if data == "cifar10":
        path = os.path.join(workdir, "cifar10_shaped.npz")
        if not os.path.exists(path):
            import numpy as np

            rng = np.random.default_rng(0)
            np.savez(path, train=rng.integers(0, 256, (50_000, 32, 32, 3), dtype=np.uint8),
                     test=rng.integers(0, 256, (10_000, 32, 32, 3), dtype=np.uint8))
        return ["--config.data.name=npz", f"--config.data.dir={path}"], \
            "random uint8 32x32x3 npz in place of CIFAR-10"
    return [], ""


def num_parameters(spec: str, flags: list[str]) -> int:
    """Parameters of the config's model (traced, not run)."""
    import jax
    import numpy as np

    from vae_jax.run import build

    config = _config(spec)
    shape = (32, 32, 3) if any("cifar10_shaped" in f for f in flags) else (28, 28, 1)
    model = build.build_model(config, shape)
    x = jax.ShapeDtypeStruct((1, *shape), np.float32)
    key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, k), key, x)
    return int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))


def first_step(spec: str, flags: list[str], cache: str, workdir: str,
               timeout: float, checkout: str = ROOT,
               cache_reads: bool = False) -> tuple[float, float]:
    """(seconds from process start to the first step's line, seconds announced as
    compiling before it) of one run of the command of ``checkout``; with ``cache_reads``,
    prints the seconds each read of the compilation cache took before that line."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("JAX_COMPILATION_CACHE_DIR", "XLA_FLAGS", "VAE_JAX_PROGRESS")}
    env["PYTHONPATH"] = checkout + os.pathsep + env.get("PYTHONPATH", "")
    name, _, variant = spec.partition(":")
    config = os.path.join(checkout, "experiments", "configs", f"{name}.py")
    entry = ["-c", TIMED_READS] if cache_reads else ["-m", "experiments.main"]
    cmd = [sys.executable, *entry,
           f"--config={config}" + (f":{variant}" if variant else ""),
           f"--workdir={workdir}", "--config.train.num_steps=1",
           "--config.eval.num_test_images=64", f"--compilation_cache={cache}", *flags]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1,
                            start_new_session=True)
    compiling: dict[str, float] = {}
    tail: list[str] = []
    watchdog = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    watchdog.start()
    try:
        for line in proc.stdout:
            tail = (tail + [line.rstrip()])[-20:]
            if m := COMPILING.match(line):
                compiling[m.group(1)] = float(m.group(2))
            if (m := CACHE_READ.match(line)) and float(m.group(2)) >= 0.05:
                print(f"  {spec}: cache read of {m.group(1)} took {m.group(2)} s", flush=True)
            if (m := STEP.match(line)) and int(m.group(1)) > 0:
                return time.perf_counter() - start, sum(compiling.values())
        raise RuntimeError(f"{spec}: exited ({proc.wait()}) before its first step (or "
                           f"after {timeout:.0f} s):\n" + "\n".join(tail))
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default="",
                        help="comma list of name or name:variant (default: every one)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="cold and warm runs per config (medians are printed)")
    parser.add_argument("--workdir", default="", help="scratch folder (default: a temp one)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--cache_reads", action="store_true",
                        help="print each read of the compilation cache that took 0.05 s or "
                             "more before the first step (what a warm run spends loading)")
    parser.add_argument("--checkout", default=ROOT,
                        help="the repository whose command is timed (default: this one; "
                             "another checkout, e.g. an older commit, gives a baseline)")
    args = parser.parse_args()
    specs = [s for s in args.configs.split(",") if s] or shipped()
    scratch = args.workdir or tempfile.mkdtemp(prefix="ttfs_")
    os.makedirs(scratch, exist_ok=True)
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} "
          f"at the start; {args.repeats} cold + warm run(s) per config\n", flush=True)
    rows = []
    for spec in specs:
        flags, label = stand_in(spec, scratch)
        cold, warm = [], []
        for r in range(args.repeats):
            cache = os.path.join(scratch, "cache", spec.replace(":", "_"), str(r))
            shutil.rmtree(cache, ignore_errors=True)
            for runs in (cold, warm):
                workdir = tempfile.mkdtemp(prefix="run_", dir=scratch)
                try:
                    runs.append(first_step(spec, flags, cache, workdir, args.timeout,
                                           os.path.abspath(args.checkout), args.cache_reads))
                except RuntimeError as e:
                    print(e, flush=True)
                    runs.append((float("nan"), float("nan")))
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
        med = lambda runs, i: statistics.median(r[i] for r in runs)  # noqa: E731
        rows.append((spec + (f" ({label})" if label else ""), num_parameters(spec, flags),
                     med(cold, 0), med(cold, 1), med(warm, 0), med(warm, 1)))
        print(f"{rows[-1][0]}: cold {rows[-1][2]:.1f} s (compiling {rows[-1][3]:.1f} s), "
              f"warm {rows[-1][4]:.1f} s (compiling {rows[-1][5]:.1f} s)", flush=True)
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("| config | parameters | cold s | of which compiling | warm s | of which compiling |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, n, c, cc, w, wc in rows:
        print(f"| {name} | {n:,} | {c:.1f} | {cc:.1f} | {w:.1f} | {wc:.1f} |")
    if not args.workdir:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
