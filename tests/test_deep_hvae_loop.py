"""The deep top-down HVAE through the loop's guarantees, on tiny synthetic 8x8 images built
here: nothing compiles after the first epoch, a killed-and-resumed run equals an
uninterrupted one bit for bit, 8 forced CPU devices equal 1, per-layer KL and active units
are in the evaluation metrics, ``--mode=eval`` repeats the last evaluation with log p(x) above
the ELBO, and ``--mode=sample`` takes a temperature per layer."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from conftest import run_python
import _runs  # noqa: E402  (tests/ helpers)
from experiments.configs import smoke
from vae_jax import errors
from vae_jax.run import checkpoint, experiment

pytestmark = pytest.mark.slow  # each run compiles a deep_hvae: tens of seconds on the CPU

MODEL = dict(resolutions=(8, 4), encoder_blocks=1, decoder_blocks=(1, 1), widths=8,
             latent_channels=2)  # two stochastic layers, "00" and "01"


def make_config(data_path: str, num_steps: int):
    config = smoke.get_config()
    config.data.name, config.data.dir = "npz", data_path
    _runs.with_model(config, "deep_hvae", **MODEL)
    # 48 images, batch 16: 3 steps an epoch, one call each (train.call_length: 3 is the
    # divisor of the epoch nearest to 2)
    config.train.batch_size, config.eval.batch_size = 16, 16
    config.train.num_steps, config.train.steps_per_call = num_steps, 2
    config.train.checkpoint_every_steps = config.train.eval_every_steps = 0  # every epoch
    config.eval.num_importance_samples, config.eval.iwae_k, config.eval.chunk = 4, 2, 2
    config.sample.num = 4
    return config


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = str(tmp_path_factory.mktemp("data") / "synthetic_8x8.npz")
    np.savez(path, train=rng.integers(0, 256, (48, 8, 8), np.uint8),
             test=rng.integers(0, 256, (16, 8, 8), np.uint8))
    return path


@pytest.fixture(scope="module")
def uninterrupted(data_path, tmp_path_factory):
    """9 steps (3 epochs) in one run, counting compilations up to each epoch's save."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    compiles, per_epoch = [0], []

    def on_event(event, duration, **kwargs):
        if event == "/jax/core/compile/backend_compile_duration":
            compiles[0] += 1

    jax.monitoring.register_event_duration_secs_listener(on_event)
    save = checkpoint.save

    def counting_save(mngr, step, state, **kwargs):
        per_epoch.append(compiles[0])
        return save(mngr, step, state, **kwargs)

    checkpoint.save = counting_save
    try:
        state = experiment.train_and_evaluate(make_config(data_path, 9), workdir)
    finally:
        checkpoint.save = save
        jax.monitoring.unregister_event_duration_listener(on_event)
    return workdir, state, per_epoch


def test_no_compilation_after_the_first_epoch(uninterrupted):
    _, state, per_epoch = uninterrupted
    assert int(state.step) == 9 and len(per_epoch) == 3 and per_epoch[0] > 0
    # epoch 1's save compiles its checksums; from then on nothing compiles
    assert per_epoch[1:] == [per_epoch[1]] * 2, per_epoch


def test_resumed_run_equals_uninterrupted(uninterrupted, data_path, tmp_path):
    _, full, _ = uninterrupted
    workdir = str(tmp_path / "resumed")
    first = experiment.train_and_evaluate(make_config(data_path, 3), workdir)  # "killed" at 3
    assert int(first.step) == 3
    resumed = experiment.train_and_evaluate(make_config(data_path, 9), workdir)
    assert int(resumed.step) == 9
    for part in ("params", "opt_state", "ema_params"):
        np.testing.assert_array_equal(_flat(getattr(resumed, part)), _flat(getattr(full, part)))


def test_eval_metrics_hold_kl_and_active_units_per_layer(uninterrupted):
    workdir, _, _ = uninterrupted
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [3, 6, 9]
    for layer in ("00", "01"):
        kl = [r[f"test_kl_{layer}"] for r in evals]
        au = [r[f"test_au_{layer}"] for r in evals]
        assert all(np.isfinite(kl)) and all(k >= 0 for k in kl)
        assert all(0 <= a <= 4 * 4 * 2 for a in au)  # at most the layer's latent units
    # the layers' KLs are the total KL
    last = evals[-1]
    assert last["test_kl_00"] + last["test_kl_01"] == pytest.approx(last["test_kl"], rel=1e-5)


def test_eval_mode_gives_the_last_evaluation_and_a_log_px_above_it(uninterrupted, data_path):
    """--mode=eval of the finished run: its last in-training evaluation's ELBO again, and
    log p(x) (exact importance weights) above the ELBO; the loop wrote its PNG grids."""
    workdir, _, _ = uninterrupted
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    last = [r for r in records if r["kind"] == "eval"][-1]
    assert np.isfinite(last["test_elbo"]) and last["test_elbo"] < 0
    assert os.path.isfile(os.path.join(workdir, "images", "samples_00000009.png"))
    result = experiment.evaluate_checkpoint(make_config(data_path, 9), workdir)
    assert result["step"] == 9 and result["test_elbo"] == pytest.approx(last["test_elbo"])
    assert result["test_log_px"] >= result["test_elbo"] - 5 * result["test_elbo_stderr"]


def test_sample_mode_takes_a_temperature_per_layer(uninterrupted, data_path, tmp_path):
    workdir, _, _ = uninterrupted
    config = make_config(data_path, 9)
    config.sample.temperature = (1.0, 0.5)
    paths = experiment.sample_checkpoint(config, workdir, outdir=str(tmp_path / "a"))
    assert paths and all(os.path.getsize(p) > 0 for p in paths.values())
    assert os.path.basename(paths["samples_t1-0.5"]) == "samples_t1-0.5.png"
    config.sample.temperature = 0.5  # one value for every layer: the same pictures
    same = experiment.sample_checkpoint(config, workdir, outdir=str(tmp_path / "b"))
    config.sample.temperature = (0.5, 0.5)
    per_layer = experiment.sample_checkpoint(config, workdir, outdir=str(tmp_path / "c"))
    assert (open(same["samples_t0.5"], "rb").read()
            == open(per_layer["samples_t0.5-0.5"], "rb").read())
    assert (open(paths["samples_t1-0.5"], "rb").read()
            != open(per_layer["samples_t0.5-0.5"], "rb").read())
    config.sample.temperature = (1.0, 0.8, 0.6)
    with pytest.raises(errors.ConfigError, match="has 2 stochastic layers"):
        experiment.sample_checkpoint(config, workdir, outdir=str(tmp_path / "d"))
    config.sample.temperature = (1.0, -0.5)
    with pytest.raises(errors.ConfigError, match="config.sample.temperature"):
        experiment.sample_checkpoint(config, workdir, outdir=str(tmp_path / "e"))


CODE_8_DEVICES = """
import sys, jax, numpy as np
sys.path.insert(0, "tests")
from test_deep_hvae_loop import make_config
from vae_jax.run import experiment
assert jax.device_count() == 8, jax.devices()
config = make_config({data!r}, 9)
# one call an epoch (3 steps), evaluated once at the end (test_vdm_loop's 8-device run
# covers calls cut by checkpoints on 8 devices)
config.train.steps_per_call, config.train.eval_every_steps = 3, 9
s = experiment.train_and_evaluate(config, {workdir!r})
np.save({out!r}, np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(s.params))]))
"""


def test_eight_devices_equal_one_device(uninterrupted, data_path, tmp_path):
    _, one, _ = uninterrupted
    out = str(tmp_path / "params8.npy")
    run_python(CODE_8_DEVICES.format(data=data_path, workdir=str(tmp_path / "w8"), out=out),
               devices=8, timeout=600)
    # same global batch and keys: only the order of floating-point sums differs
    np.testing.assert_allclose(np.load(out), _flat(one.params), rtol=1e-4, atol=1e-5)
