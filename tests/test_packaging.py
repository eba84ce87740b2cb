"""What a user installs and runs: no TensorFlow in the core, one version, the console
script, the type marker, and the persistent compilation cache of the launcher."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest
import setuptools

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runs  # noqa: E402
import vae_jax  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pyproject() -> dict:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_the_core_install_has_no_tensorflow():
    core = " ".join(_pyproject()["project"]["dependencies"]).lower()
    for heavy in ("tensorflow", "clu", "tensorflow-datasets"):
        assert heavy not in core.replace("tensorboard", ""), heavy
    assert any("tensorflow" in d for d in _pyproject()["project"]["optional-dependencies"]["tfds"])


def test_importing_and_running_the_library_loads_no_tensorflow():
    code = ("import sys, vae_jax, vae_jax.cli, vae_jax.run.experiment, vae_jax.run.logs; "
            "vae_jax.run.logs.ScalarWriter('/tmp', enabled=False); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('tensorflow', 'clu', 'tensorflow_datasets')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


def test_the_public_names_users_import_keep_working():
    """The import paths of the public surface, whatever room their code lives in."""
    from vae_jax import config, data, distributions, evaluate, losses, models, train

    assert callable(config.defaults) and config.defaults().model.name == "mlp"
    assert callable(losses.elbo_terms) and callable(losses.iwae_bound)
    assert "mlp" in models.names() and models.VAE and models.get and models.register
    assert distributions.DiagGaussian and distributions.Bernoulli
    assert callable(evaluate.log_likelihood) and callable(evaluate.per_example)
    assert train.TrainState and callable(train.create_train_state) and callable(train.train_step)
    assert callable(data.load) and callable(data.preprocess)
    for name in ("train_and_evaluate", "evaluate_checkpoint", "sample_checkpoint", "elbo",
                 "elbo_terms", "iwae_bound", "log_likelihood", "read_scalars", "TrainState"):
        assert hasattr(vae_jax, name), name


def test_one_version_source():
    assert _pyproject()["project"]["dynamic"] == ["version"]
    assert importlib.metadata.version("vae_jax") == vae_jax.__version__


def test_console_scripts_live_in_the_package_and_only_it_is_installed():
    scripts = {e.name: e.value for e in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("vae-jax") == "vae_jax.cli:main"
    assert scripts.get("vae-jax-sweep") == "vae_jax.run.sweep:main"
    include = _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = setuptools.find_packages(ROOT, include=include)
    assert "vae_jax" in packages and "vae_jax.models.vdm" in packages
    assert {p.split(".")[0] for p in packages} == {"vae_jax"}, packages  # no `experiments`
    assert os.path.isfile(os.path.join(ROOT, "vae_jax", "py.typed"))
    assert "Apache License" in open(os.path.join(ROOT, "LICENSE")).read(200)


@pytest.mark.parametrize("command", [["vae_jax.cli"], ["vae_jax.run.sweep"]])
def test_help_lists_the_commands_own_flags(command):
    out = subprocess.run([sys.executable, "-m", *command, "--help"], capture_output=True,
                         text=True, cwd=ROOT)
    text = out.stdout + out.stderr
    assert "--helpfull" in text  # (absl ends --help with exit code 1)
    names = ["config", "workdir", "progress"] + (["mode", "step", "traceback"]
                                                 if command == ["vae_jax.cli"] else ["parallel"])
    for name in names:  # a bool flag is listed as --[no]name
        assert re.search(rf"--(\[no\])?{name}:", text), (name, text[:2000])
    assert "--xla_" not in text  # absl's and JAX's own flags stay behind --helpfull


@pytest.mark.slow
def test_the_launcher_fills_the_compilation_cache_and_reuses_it(tmp_path):
    cache = tmp_path / "xla"
    env = {k: v for k, v in _runs.env(str(tmp_path / "unused")).items()
           if not k.startswith("JAX_COMPILATION_CACHE") and not k.startswith("JAX_PERSISTENT")}
    first = _runs.run(_runs.command(str(tmp_path / "a"), f"--compilation_cache={cache}",
                                    "--config.train.num_steps=10"), env, timeout=300)
    assert first.returncode == 0, first.stderr[-2000:]
    entries = os.listdir(cache)
    assert len(entries) >= 5, entries   # train calls, init, evaluation, grids, checksums
    second = _runs.run(_runs.command(str(tmp_path / "b"), f"--compilation_cache={cache}",
                                     "--config.train.num_steps=10"), env, timeout=300)
    assert second.returncode == 0, second.stderr[-2000:]
    assert sorted(os.listdir(cache)) == sorted(entries), "the rerun compiled nothing new"
    # another model (programs in no cache yet) with the cache off: nothing written, neither
    # there nor in the default folder ($XDG_CACHE_HOME/vae_jax/jax)
    xdg = tmp_path / "xdg"
    off = _runs.run(_runs.command(str(tmp_path / "c"), "--compilation_cache=",
                                  "--config.train.num_steps=10", "--config.model.latent_dim=3"),
                    dict(env, XDG_CACHE_HOME=str(xdg)), timeout=300)
    assert off.returncode == 0, off.stderr[-2000:]
    assert sorted(os.listdir(cache)) == sorted(entries), "--compilation_cache= wrote entries"
    assert not os.path.exists(xdg / "vae_jax"), "--compilation_cache= used the default folder"
