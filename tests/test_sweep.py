"""Sweeps: grid expansion, per-point configs and names, resumability, summaries."""

import csv
import json
import os
import sys

import ml_collections
import pytest

from conftest import requires_fashion_mnist
from experiments.configs import sweep_smoke
from vae_jax.run import experiment, sweep


def _config(grid):
    config = ml_collections.ConfigDict({"loss": {"beta": 1.0, "name": "elbo"},
                                        "model": {"latent_dim": 20}})
    config.sweep = ml_collections.ConfigDict(grid)
    return config


def test_grid_is_the_cartesian_product_last_field_fastest():
    config = _config({"loss": {"beta": (0.5, 1.0, 2.0)}, "model": {"latent_dim": (2, 20)}})
    points = sweep.grid(config)
    assert len(points) == 6
    assert points[0] == {"loss.beta": 0.5, "model.latent_dim": 2}
    assert points[1] == {"loss.beta": 0.5, "model.latent_dim": 20}
    assert points[-1] == {"loss.beta": 2.0, "model.latent_dim": 20}
    assert [sweep.point_name(p) for p in points[:2]] == ["beta=0.5,latent_dim=2",
                                                         "beta=0.5,latent_dim=20"]


def test_point_names_use_full_paths_when_last_components_clash():
    assert sweep.point_name({"loss.name": "elbo", "model.name": "mlp"}) == \
        "loss.name=elbo,model.name=mlp"


def test_point_config_applies_overrides_without_touching_the_base():
    config = _config({"loss": {"beta": (0.5, 4.0)}})
    config.lock()
    cfg = sweep.point_config(config, {"loss.beta": 4.0})
    assert cfg.loss.beta == 4.0 and "sweep" not in cfg
    assert config.loss.beta == 1.0 and "sweep" in config


@pytest.mark.parametrize("grid, match", [
    ({"loss": {"betta": (1.0,)}}, "config.loss.betta does not exist"),
    ({"loss": {"beta": 1.0}}, "non-empty tuple"),
    ({"loss": {"beta": ()}}, "non-empty tuple"),
])
def test_bad_grids_name_the_field(grid, match):
    with pytest.raises(ValueError, match=match):
        sweep.grid(_config(grid))


def test_no_sweep_section_is_a_clear_error():
    with pytest.raises(ValueError, match="declares no sweep"):
        sweep.grid(ml_collections.ConfigDict({"loss": {"beta": 1.0}}))


def _records():
    return [{"name": f"beta={b},latent_dim={d}", "overrides": {"loss.beta": b,
             "model.latent_dim": d}, "step": 10, "test_elbo": -300.0 + 10 * d - b,
             "test_log_px_z": -280.0, "test_kl": 20.0, "seconds": 1.5}
            for b in (0.5, 2.0) for d in (2, 20)]


def test_write_summary_tables_and_plot(tmp_path):
    paths = sweep.write_summary(str(tmp_path), _records(), ["loss.beta", "model.latent_dim"])
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    assert rows[1]["model.latent_dim"] == "20"
    assert float(rows[1]["test_elbo"]) == pytest.approx(-100.5)
    md = open(paths["md"]).read().splitlines()
    assert md[0] == ("| loss.beta | model.latent_dim | step | test_elbo | test_log_px_z | "
                     "test_kl | seconds |")
    assert md[3] == "| 0.50 | 20 | 10 | -100.50 | -280.00 | 20.00 | 1.50 |"
    assert os.path.getsize(paths["plot"]) > 1000


def test_parallel_sweep_runs_every_point_once_and_resumes(tmp_path):
    config = _config({"loss": {"beta": (0.5, 1.0, 2.0)}})
    points = sweep.grid(config)
    workdir = str(tmp_path)
    # A stand-in for a training subprocess: writes the point's record (and counts runs).
    script = ("import json, os, sys; d = sys.argv[1]; os.makedirs(d, exist_ok=True); "
              "open(os.path.join(d, 'runs'), 'a').write('x'); "
              "json.dump({'name': os.path.basename(d), 'overrides': json.loads(sys.argv[2]), "
              "'step': 1, 'test_elbo': -float(json.loads(sys.argv[2])['loss.beta']), "
              "'test_log_px_z': 0.0, 'test_kl': 0.0, 'seconds': 0.0}, "
              "open(os.path.join(d, 'point.json'), 'w'))")

    def command(i):
        return [sys.executable, "-c", script, os.path.join(workdir, sweep.point_name(points[i])),
                json.dumps(points[i])]

    records = sweep.run_sweep(config, workdir, parallel=2, command=command)
    assert [r["test_elbo"] for r in records] == [-0.5, -1.0, -2.0]
    os.remove(os.path.join(workdir, "beta=1.0", "point.json"))
    sweep.run_sweep(config, workdir, parallel=2, command=command)   # reruns only that point
    runs = [open(os.path.join(workdir, sweep.point_name(p), "runs")).read() for p in points]
    assert runs == ["x", "xx", "x"]
    assert len(open(os.path.join(workdir, "summary.csv")).read().splitlines()) == 4


def test_failed_parallel_point_is_reported(tmp_path):
    config = _config({"loss": {"beta": (0.5,)}})
    with pytest.raises(RuntimeError, match="beta=0.5"):
        sweep.run_sweep(config, str(tmp_path), parallel=2,
                        command=lambda i: [sys.executable, "-c", "raise SystemExit(3)"])


@requires_fashion_mnist
@pytest.mark.slow
def test_smoke_sweep_trains_each_point_and_skips_finished_ones(tmp_path, monkeypatch):
    config = sweep_smoke.get_config()
    config.train.num_steps = 4
    config.train.steps_per_call = 2
    config.train.eval_every_steps = 4
    config.train.checkpoint_every_steps = 4
    records = sweep.run_sweep(config, str(tmp_path))
    assert [r["overrides"]["loss.beta"] for r in records] == [0.5, 2.0]
    for r in records:
        assert r["step"] == 4 and r["test_elbo"] < 0
        assert r["test_elbo"] == pytest.approx(r["test_log_px_z"] - r["test_kl"], abs=1e-2)
        saved = json.load(open(os.path.join(tmp_path, r["name"], "config.json")))
        assert saved["loss"]["beta"] == r["overrides"]["loss.beta"] and "sweep" not in saved
    assert os.path.exists(tmp_path / "elbo_vs_beta.png")

    def fail(*a, **k):
        raise AssertionError("a finished point was trained again")
    monkeypatch.setattr(experiment, "train_and_evaluate", fail)
    again = sweep.run_sweep(config, str(tmp_path))
    assert again == records
