"""The deep top-down HVAE, the VDM and the latent VDM through the same loop as every model:
``experiment.train_and_evaluate`` (checkpoints, metrics, PNG grids, evaluation suite) and
``--mode=eval`` / ``--mode=sample`` on tiny synthetic 8x8 images built by the test."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import _runs  # noqa: E402  (tests/ helpers)
from experiments.configs import smoke
from vae_jax.run import experiment

MODELS = {
    "deep_hvae": dict(resolutions=(8, 4), encoder_blocks=1, decoder_blocks=(1, 1), widths=8,
                      latent_channels=2),
    "vdm": dict(likelihood="bernoulli", channels=8, blocks=1, timesteps=4, sample_steps=4),
    "latent_vdm": dict(latent_dim=4, hidden=(16,), score_hidden=(16,), sample_steps=4),
}


def _config(tmp_path, name):
    rng = np.random.default_rng(0)
    path = tmp_path / "synthetic_8x8.npz"
    np.savez(path, train=rng.integers(0, 256, (48, 8, 8), np.uint8),
             test=rng.integers(0, 256, (16, 8, 8), np.uint8))
    config = smoke.get_config()
    config.data.name, config.data.dir = "npz", str(path)
    _runs.with_model(config, name, **MODELS[name])
    config.train.batch_size, config.eval.batch_size = 16, 16
    config.train.num_steps, config.train.steps_per_call = 4, 2
    config.train.checkpoint_every_steps = config.train.eval_every_steps = 4
    config.eval.num_importance_samples, config.eval.iwae_k, config.eval.chunk = 4, 2, 2
    config.sample.num = 4
    if name == "latent_vdm":
        # test_vdm_loop's optimizer for the same latent VDM: the same programs, which the
        # session's compilation cache then compiles once for both files
        config.optim.eps, config.optim.learning_rate = 1.0, 1e-2
    return config


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(MODELS))
def test_trains_evaluates_and_samples(tmp_path, name):
    config = _config(tmp_path, name)
    workdir = str(tmp_path / "run")
    state = experiment.train_and_evaluate(config, workdir)
    assert int(state.step) == 4
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 1 and np.isfinite(evals[0]["test_elbo"]) and evals[0]["test_elbo"] < 0
    assert os.path.isfile(os.path.join(workdir, "images", "samples_00000004.png"))
    result = experiment.evaluate_checkpoint(config, workdir)
    assert result["step"] == 4 and result["test_elbo"] == pytest.approx(evals[0]["test_elbo"])
    if "test_log_px" in result:  # models with exact importance weights
        assert result["test_log_px"] >= result["test_elbo"] - 5 * result["test_elbo_stderr"]
    paths = experiment.sample_checkpoint(config, workdir)
    assert paths and all(os.path.getsize(p) > 0 for p in paths.values())
