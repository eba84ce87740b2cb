"""Helpers for tests that run the launcher in subprocesses (not a test module)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import numpy as np

import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "experiments", "configs", "smoke.py")


def shared_cache() -> str:
    """The session's persistent compilation cache (conftest.py), shared by the workers and
    every subprocess: the smoke config's programs compile once a session, not once a test."""
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


def env(cache_dir: str, devices: int | None = None, **extra) -> dict:
    """The subprocess environment: this checkout first on the path, CPU only, and a shared
    persistent compilation cache so that repeated runs skip XLA compilation."""
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e["JAX_PLATFORMS"] = "cpu"
    e["JAX_COMPILATION_CACHE_DIR"] = cache_dir
    e["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    e["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if devices is not None:
        e["XLA_FLAGS"] = conftest.xla_flags(devices)
    e.update(extra)
    return e


def smoke_config(**overrides):
    """The smoke config with ``section__field=value`` overrides."""
    from experiments.configs import smoke

    config = smoke.get_config()
    for path, value in overrides.items():
        section, name = path.split("__")
        config[section][name] = value
    return config


def tree(folder) -> dict:
    """{relative path: (is_dir, size, mtime_ns, bytes of small files)} of a folder
    (links not followed)."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            small = (open(p, "rb").read() if os.path.isfile(p) and not os.path.islink(p)
                     and st.st_size < 4096 else None)
            out[os.path.relpath(p, folder)] = (os.path.isdir(p), st.st_size, st.st_mtime_ns,
                                               small)
    return out


def command(workdir: str, *overrides: str, driver: bool = False) -> list[str]:
    entry = [os.path.join(ROOT, "tests", "fault_driver.py")] if driver else [
        "-m", "experiments.main"]
    return [sys.executable, *entry, f"--config={SMOKE}", f"--workdir={workdir}", *overrides]


def run(cmd: list[str], environ: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=environ, cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def final_state(workdir: str, config, image_shape=(28, 28, 1)):
    """The TrainState in workdir's latest checkpoint, read back with orbax (checksummed)."""
    from vae_jax.run import build, experiment

    model = build.build_model(config, image_shape)
    return experiment.restore_state(config, workdir, model, image_shape)


def assert_same_state(a, b) -> None:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), f"max |diff| {np.max(np.abs(x - y))}"


def with_model(config, name: str, **fields):
    """``config`` with its model section replaced by model ``name`` and ``fields`` only
    (the builder's own defaults for the rest), as a config file for another family does."""
    import ml_collections

    config.model = ml_collections.ConfigDict({"name": name, **fields})
    return config
