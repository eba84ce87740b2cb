"""vae_jax.run.params_file and ``--mode=export``: a model's parameters as one checksummed .npz,
loaded back bit for bit into the model they came from and refused for anything else."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import requires_fashion_mnist
from experiments.configs import smoke
from vae_jax import models
from vae_jax.run import experiment, params_file
from vae_jax.errors import CheckpointError, CheckpointMismatchError, ConfigError


def _mlp_params(latent_dim: int = 3):
    model = models.get("mlp", image_shape=(4, 4, 1), hidden=(8,), latent_dim=latent_dim)
    x = jnp.zeros((1, 4, 4, 1))
    key = jax.random.key(0)
    return model.init(key, x, key), model, x


def test_a_saved_tree_loads_back_bit_for_bit_with_its_meta(tmp_path):
    params, model, x = _mlp_params()
    params = jax.tree.map(lambda a: a + 0.1, params)  # not the initial values
    path = str(tmp_path / "p.npz")
    sha = params_file.save(path, params, meta={"step": 7, "config": "mlp"})
    like = jax.eval_shape(lambda k: model.init(k, x, k), jax.random.key(1))
    loaded, meta = params_file.load(path, like)
    assert meta["step"] == 7 and meta["sha256"] == sha and meta["format"] == params_file.FORMAT
    assert jax.tree.structure(loaded) == jax.tree.structure(params)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, np.asarray(b))
    # the file is plain arrays: numpy reads it without pickle
    with np.load(path, allow_pickle=False) as f:
        assert params_file.META in f.files and len(f.files) == len(jax.tree.leaves(params)) + 1
    assert not any(n.endswith(".npz") and "tmp" in n for n in os.listdir(tmp_path))


def test_a_changed_byte_fails_the_checksum(tmp_path):
    params, _, _ = _mlp_params()
    path = str(tmp_path / "p.npz")
    params_file.save(path, params)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    name = next(k for k in arrays if k.endswith("kernel"))
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nextafter(arrays[name].flat[0], np.float32(1))  # one ulp
    np.savez(path, **arrays)
    with pytest.raises(CheckpointError, match="SHA-256"):
        params_file.load(path)


def test_another_models_parameters_are_refused_naming_the_difference(tmp_path):
    params, _, x = _mlp_params(latent_dim=3)
    path = str(tmp_path / "p.npz")
    params_file.save(path, params, meta={"model": "mlp latent 3"})
    other = models.get("mlp", image_shape=(4, 4, 1), hidden=(8,), latent_dim=5)
    like = jax.eval_shape(lambda k: other.init(k, x, k), jax.random.key(0))
    with pytest.raises(CheckpointMismatchError, match=r"other shape.*mlp latent 3"):
        params_file.load(path, like)


@pytest.mark.parametrize("content", ["missing", "pickle", "foreign", "format"])
def test_files_that_are_not_ours_are_refused_without_unpickling(tmp_path, content):
    path = str(tmp_path / "p.npz")
    if content == "pickle":  # an object array would need pickle to load
        np.savez(path, a=np.array([{"x": 1}], dtype=object))
    elif content == "foreign":
        np.savez(path, a=np.zeros(3))
    elif content == "format":
        np.savez(path, a=np.zeros(3), **{params_file.META: np.array(json.dumps(
            {"format": "vae_jax.params/0", "sha256": ""}))})
    match = {"missing": "No parameter file", "pickle": "not a parameter file",
             "foreign": "not written by", "format": "format"}[content]
    with pytest.raises(CheckpointError, match=match):
        params_file.load(path)


@pytest.mark.slow
@requires_fashion_mnist
def test_export_then_restore_gives_the_checkpoints_evaluation_parameters(tmp_path):
    # smoke keeps an EMA; evaluated with it, the file holds the EMA (the figures' params)
    config = smoke.get_config()
    config.eval.use_ema = True
    workdir = str(tmp_path / "run")
    experiment.train_and_evaluate(config, workdir)
    path = experiment.run(config, workdir, mode="export")
    assert path == os.path.join(workdir, "params_20.npz")
    s = experiment.setup(config, workdir, check_workdir=False)
    from_ckpt, step = experiment.restore_params(s.config, workdir, s.model, s.ds.image_shape)
    from_file, file_step = experiment.restore_params(s.config, path, s.model,
                                                     s.ds.image_shape)
    assert step == file_step == 20
    state = experiment.restore_state(s.config, workdir, s.model, s.ds.image_shape)
    for a, b in zip(jax.tree.leaves(from_file), jax.tree.leaves(from_ckpt)):
        np.testing.assert_array_equal(a, np.asarray(b))
    # the EMA, not the raw parameters
    assert any(not np.array_equal(a, np.asarray(r)) for a, r in
               zip(jax.tree.leaves(from_file), jax.tree.leaves(state.params)))
    # --mode=eval and --mode=sample read the file as --workdir, writing beside it
    from_workdir = experiment.run(config, workdir, mode="eval")
    from_path = experiment.run(config, path, mode="eval")
    figures = lambda r: {k: v for k, v in r.items() if not k.endswith("_seconds")}
    assert figures(from_path) == figures(from_workdir) and np.isfinite(from_path["test_log_px"])
    outputs = os.path.join(workdir, "params_20")
    with open(os.path.join(outputs, "eval.json")) as f:
        assert json.load(f) == from_path
    pictures = experiment.run(config, path, mode="sample")
    assert pictures and all(p.startswith(os.path.join(outputs, "samples")) and os.path.isfile(p)
                            for p in pictures.values())
    with pytest.raises(CheckpointError, match="--step=3.*step 20"):
        experiment.run(config, path, mode="eval", step=3)
    with pytest.raises(ConfigError, match="already a parameter file"):
        experiment.run(config, path, mode="export")
    # a config that builds another model is refused, naming the file's origin
    config.model.latent_dim = 6
    s6 = experiment.setup(config, workdir, check_workdir=False)
    with pytest.raises(CheckpointMismatchError, match=r"latent_dim.: 4"):
        experiment.restore_params(s6.config, path, s6.model, s6.ds.image_shape)
