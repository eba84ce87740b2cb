"""The diffusion models through the real loop, on tiny synthetic 8x8 images built here: a
killed-and-resumed VDM (continuous time, learned-net schedule) and latent VDM equal an
uninterrupted run bit for bit; 8 forced CPU devices train the VDM as 1 does; the trained
schedule is still monotone and hits its configured endpoints exactly (read back from the
checkpoint); ``--mode=eval`` of an 8-bit discrete-time VDM reports bits/dim and a
k-trajectory log p(x) above the ELBO, a continuous-time one skips log p(x); for each of
the three models the loop's evaluation, ``--mode=eval`` and ``--mode=sample`` agree and write
what they should."""

from __future__ import annotations

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import run_python
import _runs  # noqa: E402  (tests/ helpers)
from experiments.configs import smoke
from vae_jax.run import experiment
from vae_jax import config as config_lib
from vae_jax.run import build

# every test trains a model (compiling it takes tens of seconds on a CPU)
pytestmark = pytest.mark.slow

MODELS = {
    # continuous time (timesteps=0), the paper's monotone-network schedule
    "vdm": dict(likelihood="bernoulli", channels=8, blocks=1, timesteps=0, sample_steps=4,
                schedule="learned_net", schedule_hidden=8, gamma_min=-10.0, gamma_max=4.0),
    "latent_vdm": dict(latent_dim=4, hidden=(16,), score_hidden=(16,), sample_steps=4),
    # 8-bit, discrete time with whole trajectories: exact importance weights
    "vdm8": dict(name="vdm", likelihood="categorical256", channels=8, blocks=1, timesteps=4,
                 trajectory=True, sample_steps=4),
}


def make_config(data_path: str, name: str, num_steps: int = 4):
    """A tiny run of MODELS[name] on the synthetic .npz at ``data_path`` (public: the
    subprocess below builds the same config)."""
    config = smoke.get_config()
    config.data.name, config.data.dir = "npz", data_path
    fields = dict(MODELS[name])  # a "name" field: another variant of that model
    _runs.with_model(config, fields.pop("name", name), **fields)
    if MODELS[name].get("likelihood") == "categorical256":
        config.data.binarization = "none"
    config.train.batch_size, config.eval.batch_size = 16, 16
    config.train.num_steps, config.train.steps_per_call = num_steps, 2
    config.train.checkpoint_every_steps = 2
    config.train.eval_every_steps = 4
    config.eval.num_importance_samples, config.eval.iwae_k, config.eval.chunk = 4, 2, 2
    config.sample.num = 4
    # Adam with eps = 1 moves each parameter by about lr · its gradient: with the default
    # eps = 1e-8 a parameter whose gradient is ~0 steps by ±lr on the sign of float noise,
    # so 8 devices' other order of sums would differ by lr, not by rounding.
    config.optim.eps, config.optim.learning_rate = 1.0, 1e-2
    return config


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "synthetic_8x8.npz"
    np.savez(path, train=rng.integers(0, 256, (48, 8, 8), np.uint8),
             test=rng.integers(0, 256, (16, 8, 8), np.uint8))
    return str(path)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(tree))])


@pytest.fixture(scope="module")
def uninterrupted(data_path, tmp_path_factory):
    runs = {}
    for name in ("vdm", "latent_vdm"):
        workdir = str(tmp_path_factory.mktemp(f"full_{name}"))
        runs[name] = (workdir, experiment.train_and_evaluate(make_config(data_path, name), workdir))
    return runs


@pytest.mark.parametrize("name", ["vdm", "latent_vdm"])
def test_killed_and_resumed_run_equals_uninterrupted(data_path, uninterrupted, tmp_path, name):
    _, full = uninterrupted[name]
    assert int(full.step) == 4
    workdir = str(tmp_path / "resumed")
    first = experiment.train_and_evaluate(make_config(data_path, name, num_steps=2), workdir)
    assert int(first.step) == 2
    resumed = experiment.train_and_evaluate(make_config(data_path, name), workdir)
    assert int(resumed.step) == 4
    assert not np.array_equal(_flat(first.params), _flat(full.params))  # training moved them
    for part in ("params", "ema_params", "opt_state"):
        np.testing.assert_array_equal(_flat(getattr(resumed, part)), _flat(getattr(full, part)))


def test_trained_learned_net_schedule_is_monotone_with_its_endpoints(data_path, uninterrupted):
    workdir, full = uninterrupted["vdm"]
    config = make_config(data_path, "vdm")
    s = experiment.setup(config, workdir, check_workdir=False)
    state = experiment.restore_state(s.config, workdir, s.model, s.ds.image_shape)
    np.testing.assert_array_equal(_flat(state.params), _flat(full.params))
    schedule = s.model.diffusion.schedule
    params = {"params": state.params["params"]["diffusion"]["schedule"]}
    init = {"params": jax.tree.map(jnp.asarray, train_init_schedule(s.model, s.ds.image_shape))}
    # training moved the schedule's network, not only the score net
    assert not np.array_equal(_flat(params), _flat(init))
    t = jnp.linspace(0.0, 1.0, 10001)
    gamma = np.asarray(schedule.apply(params, t))
    assert gamma[0] == np.float32(-10.0) and gamma[-1] == np.float32(4.0)  # bit for bit
    assert np.all(np.diff(gamma) >= 0) and np.sum(np.diff(gamma) > 0) > 9000
    # a fixed linear schedule would be the straight line; the learned one is not
    assert np.max(np.abs(gamma - (-10.0 + 14.0 * np.asarray(t)))) > 1e-3


def train_init_schedule(model, image_shape):
    """The schedule's parameters at initialisation (the run's init key)."""
    from vae_jax import train
    from vae_jax.train import optim

    keys = build.root_keys(0)
    state = train.create_train_state(keys["init"], model, optim.make_optimizer(
        config_lib.defaults().optim, 1), image_shape)
    return state.params["params"]["diffusion"]["schedule"]


def _trained_evaluated_and_sampled(config, workdir, outdir) -> dict:
    """The loop's evaluation record and PNG grid, --mode=eval repeating that evaluation and
    --mode=sample writing pictures, for a finished 4-step run; returns --mode=eval's result."""
    records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    evals = [r for r in records if r["kind"] == "eval"]
    assert len(evals) == 1 and np.isfinite(evals[0]["test_elbo"]) and evals[0]["test_elbo"] < 0
    assert os.path.isfile(os.path.join(workdir, "images", "samples_00000004.png"))
    result = experiment.evaluate_checkpoint(config, workdir)
    assert result["step"] == 4 and result["test_elbo"] == pytest.approx(evals[0]["test_elbo"])
    if "test_log_px" in result:  # models with exact importance weights
        assert result["test_log_px"] >= result["test_elbo"] - 5 * result["test_elbo_stderr"]
    paths = experiment.sample_checkpoint(config, workdir, outdir=outdir)
    assert paths and all(os.path.getsize(p) > 0 for p in paths.values())
    return result


def test_latent_vdm_trains_evaluates_and_samples(data_path, uninterrupted, tmp_path):
    workdir, _ = uninterrupted["latent_vdm"]
    _trained_evaluated_and_sampled(make_config(data_path, "latent_vdm"), workdir,
                                   str(tmp_path / "samples"))


def test_eval_of_an_8bit_discrete_vdm_reports_bpd_and_a_tighter_log_px(data_path, tmp_path):
    config = make_config(data_path, "vdm8")
    workdir = str(tmp_path / "vdm8")
    experiment.train_and_evaluate(config, workdir)
    result = _trained_evaluated_and_sampled(config, workdir, str(tmp_path / "samples"))
    assert result["likelihood"] == "categorical256" and result["log_px_k"] == 4
    # bits/dim is −ELBO / (H W C ln 2)
    assert result["test_elbo_bpd"] == pytest.approx(-result["test_elbo"] / (64 * math.log(2)),
                                                    rel=1e-6)
    assert result["test_elbo_bpd"] > 0   # L_4 of an untrained net is large
    # E log mean_k w ≥ E log w: 4 trajectories per image tighten the bound; the gap is
    # many standard errors for an untrained model (its log weights vary widely)
    gap = result["test_log_px"] - result["test_elbo"]
    assert gap > 3 * result["test_elbo_stderr"], result
    assert result["test_log_px"] >= result["test_iwae"] - 3 * result["test_iwae_stderr"]
    assert result["test_log_px_bpd"] < result["test_elbo_bpd"]


def test_eval_of_a_continuous_vdm_skips_log_px(data_path, uninterrupted, tmp_path):
    workdir, _ = uninterrupted["vdm"]
    result = _trained_evaluated_and_sampled(make_config(data_path, "vdm"), workdir,
                                            str(tmp_path / "samples"))
    assert "test_log_px" not in result and "exact" in result["log_px_note"]
    assert np.isfinite(result["test_elbo"]) and result["test_elbo"] < 0


CODE_DEVICES = """
import jax, numpy as np, sys
sys.path.insert(0, "tests")
from test_vdm_loop import make_config
from vae_jax.run import experiment
assert jax.device_count() == {devices}, jax.devices()
s = experiment.train_and_evaluate(make_config({data!r}, "vdm"), {workdir!r})
np.save({out!r}, np.concatenate([np.ravel(x) for x in jax.tree.leaves(jax.device_get(s.params))]))
"""


def test_eight_devices_equal_one_device_for_the_vdm(data_path, uninterrupted, tmp_path):
    _, one = uninterrupted["vdm"]
    out = str(tmp_path / "params8.npy")
    run_python(CODE_DEVICES.format(devices=8, data=data_path, workdir=str(tmp_path / "w8"),
                                   out=out), devices=8)
    eight = np.load(out)
    # Same global batch (2 images per device), same keys: only the order of sums differs.
    np.testing.assert_allclose(eight, _flat(one.params), rtol=1e-4, atol=1e-5)
