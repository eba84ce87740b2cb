"""scripts/budget_compare.py's split evaluation: log p(x) of the test set as ranges in
separate processes (--test_start, --num_test, --save) joined by --merge, which is how the
deep HVAE's full-test-set figure is computed (scripts/deep_hvae_cpu_2h.sh)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from absl import app
from absl.testing import flagsaver

import _runs  # noqa: E402
from conftest import requires_fashion_mnist  # noqa: E402
from experiments.configs import smoke  # noqa: E402
from scripts import budget_compare  # noqa: E402
from vae_jax.run import experiment  # noqa: E402

pytestmark = requires_fashion_mnist
# run as the shell drivers run it, from the repository root
SCRIPT = ["-m", "scripts.budget_compare"]


def script(*flags: str) -> types.SimpleNamespace:
    """The script's ``main`` in this process (no interpreter and JAX start-up per call), its
    flags parsed from ``flags`` and restored afterwards: returncode 0, or 1 with the usage
    error's message on stderr, as ``app.run`` exits (the test of refused ranges below runs
    the command itself)."""
    stdout, stderr, returncode = io.StringIO(), "", 0
    with flagsaver.flagsaver(), contextlib.redirect_stdout(stdout), \
            contextlib.chdir(_runs.ROOT):
        budget_compare.FLAGS.unparse_flags()
        budget_compare.FLAGS(["budget_compare", *flags])
        try:
            budget_compare.main([])
        except app.UsageError as e:
            stderr, returncode = str(e), 1
    return types.SimpleNamespace(returncode=returncode, stdout=stdout.getvalue(), stderr=stderr)


def compare(tmp_path, *flags: str) -> dict:
    out = str(tmp_path / f"out_{abs(hash(flags))}.json")
    result = script(*flags, f"--out={out}")
    assert result.returncode == 0, result.stderr
    with open(out) as f:
        return json.load(f)


@pytest.mark.slow
def test_ranges_evaluated_apart_and_merged_equal_their_concatenation(tmp_path):
    workdir = str(tmp_path / "run")
    config = smoke.get_config()
    config.optim.schedule, config.optim.decay_steps = "cosine", 100  # not the config's own
    experiment.train_and_evaluate(config, workdir)
    run = f"--run=a={os.path.join('experiments', 'configs', 'smoke.py')}@{workdir}"
    # the same trained model under a second name: its paired differences must be exactly 0
    twin = run.replace("--run=a=", "--run=b=")
    common = [run, twin, "--num_samples=4", "--chunk=2", "--ll_batch_size=5",
              "--batch_size=50", "--au_images=20", "--au_samples=2",
              # the optimizer state's structure follows the schedule: restoring needs it
              *(f"--set={n}:optim.{f}" for n in "ab"
                for f in ("schedule=cosine", "decay_steps=100"))]
    whole_npz = str(tmp_path / "whole.npz")
    whole = compare(tmp_path, *common, "--num_test=20", f"--save={whole_npz}")
    parts = [str(tmp_path / "p0.npz"), str(tmp_path / "p1.npz")]
    compare(tmp_path, *common, "--num_test=10", f"--save={parts[0]}")
    second = compare(tmp_path, *common, "--test_start=10", "--num_test=10", "--noelbo",
                     f"--save={parts[1]}")
    assert "test_elbo_all" not in second["a"] and "log_px_subset" in second["a"]
    # given in either order, the ranges are joined by where they start
    merged = compare(tmp_path, f"--merge={parts[1]},{parts[0]}")

    a0, a1, w = np.load(parts[0]), np.load(parts[1]), np.load(whole_npz)
    assert int(a0["a/log_px_start"]) == 0 and int(a1["a/log_px_start"]) == 10
    # a range from image 0 draws with the unfolded key: the whole run's first 10 images
    np.testing.assert_allclose(a0["a/log_px"], w["a/log_px"][:10], rtol=1e-6)
    assert "a/elbo" not in a1.files   # --noelbo: log p(x) only; the ELBO from the first
    log_px = np.concatenate([a0["a/log_px"], a1["a/log_px"]])
    assert merged["a"]["num_test"] == 20
    assert merged["a"]["log_px_subset"]["mean"] == pytest.approx(float(np.mean(log_px)),
                                                                 abs=1e-3)
    assert merged["a"]["test_elbo_all"] == whole["a"]["test_elbo_all"]
    # the second range drew its own samples (start folded into the key): not a copy
    assert not np.allclose(a1["a/log_px"], a0["a/log_px"])
    assert merged["b"]["minus_a"]["log_px"] == {"mean": 0.0, "stderr": 0.0}


@pytest.mark.slow
def test_a_run_given_as_its_exported_parameters_has_its_workdirs_figures(tmp_path):
    # how a long evaluation goes on in a later process: from the file --mode=export wrote
    workdir = str(tmp_path / "run")
    config = smoke.get_config()
    experiment.train_and_evaluate(config, workdir)
    path = experiment.run(config, workdir, mode="export")
    cfg = os.path.join("experiments", "configs", "smoke.py")
    out = compare(tmp_path, f"--run=a={cfg}@{workdir}", f"--run=b={cfg}@{path}",
                  "--num_samples=4", "--chunk=2", "--ll_batch_size=5", "--batch_size=50",
                  "--au_images=20", "--au_samples=2", "--num_test=10")
    assert out["a"]["step"] == out["b"]["step"] == 20
    assert out["b"]["test_elbo_all"] == out["a"]["test_elbo_all"]
    assert out["b"]["minus_a"]["elbo"] == {"mean": 0.0, "stderr": 0.0}
    assert out["b"]["minus_a"]["log_px"] == {"mean": 0.0, "stderr": 0.0}


def test_merge_refuses_ranges_with_a_gap_or_an_overlap(tmp_path):
    paths = []
    for i, (start, n) in enumerate([(0, 10), (5, 10)]):
        paths.append(str(tmp_path / f"r{i}.npz"))
        np.savez(paths[-1], **{"a/elbo": np.zeros(20), "a/log_px": -np.ones(n),
                               "a/log_px_start": np.int64(start)})
    proc = subprocess.run([sys.executable, *SCRIPT, f"--merge={','.join(paths)}"],
                          cwd=_runs.ROOT, env=_runs.env(os.environ["JAX_COMPILATION_CACHE_DIR"]),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "test images 0..9" in proc.stderr and "starts at 5" in proc.stderr


def merge(tmp_path, files: dict, *flags: str) -> types.SimpleNamespace:
    """--merge of npz files written from {name: {array name: value}}."""
    paths = []
    for name, arrays in files.items():
        paths.append(str(tmp_path / f"{name}.npz"))
        np.savez(paths[-1], **arrays)
    return script(f"--merge={','.join(paths)}", *flags)


@pytest.mark.slow
def test_merge_joins_runs_from_separate_evaluations_and_pairs_their_common_images(tmp_path):
    # the baseline m evaluated twice: beside a (images 0..5) and beside b (images 0..3);
    # its ranges 0..3 are equal in both files and kept once
    rng = np.random.default_rng(0)
    m, a, b = (rng.normal(size=6) for _ in range(3))
    files = {
        "a0": {"m/log_px": m[:4], "m/log_px_start": np.int64(0),
               "a/log_px": a[:4], "a/log_px_start": np.int64(0)},
        "a4": {"m/log_px": m[4:], "m/log_px_start": np.int64(4),
               "a/log_px": a[4:], "a/log_px_start": np.int64(4)},
        "b0": {"m/log_px": m[:4], "m/log_px_start": np.int64(0),
               "b/log_px": b[:4], "b/log_px_start": np.int64(0)}}
    proc = merge(tmp_path, files, f"--out={tmp_path / 'o.json'}", "--base=a")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.load(open(tmp_path / "o.json"))
    assert out["m"]["num_test"] == 6 and out["b"]["num_test"] == 4
    assert out["m"]["log_px_subset"]["mean"] == pytest.approx(np.mean(m), abs=1e-3)
    # --base=a: b − a over the 4 images both have, m − a over all 6
    assert out["b"]["minus_a"]["log_px"]["mean"] == pytest.approx(np.mean(b[:4] - a[:4]), abs=1e-3)
    assert out["m"]["minus_a"]["log_px"]["mean"] == pytest.approx(np.mean(m - a), abs=1e-3)
    assert "minus_a" not in out["a"]
    # the same run's range twice with different figures: refused, naming both files
    files["b0"]["m/log_px"] = m[:4] + 1.0
    proc = merge(tmp_path, files)
    assert proc.returncode != 0
    assert "a0.npz" in proc.stderr and "b0.npz" in proc.stderr and "different" in proc.stderr
    # m again over images 2..3 only, beside c (a chunk of another size): inside a0's range
    # with the same figures, kept once; c paired with a over its 2 images
    c = rng.normal(size=2)
    files["b0"]["m/log_px"] = m[:4]
    files["c2"] = {"m/log_px": m[2:4], "m/log_px_start": np.int64(2),
                   "c/log_px": c, "c/log_px_start": np.int64(2)}
    proc = merge(tmp_path, files, f"--out={tmp_path / 'o.json'}", "--base=a")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.load(open(tmp_path / "o.json"))
    assert out["m"]["num_test"] == 6 and out["c"]["num_test"] == 2
    assert out["c"]["minus_a"]["log_px"]["mean"] == pytest.approx(np.mean(c - a[2:4]), abs=1e-3)
    files["c2"]["m/log_px"] = m[2:4] - 1.0   # ... but with other figures: refused
    proc = merge(tmp_path, files)
    assert proc.returncode != 0
    assert "c2.npz" in proc.stderr and "from test image 2" in proc.stderr
    del files["c2"]
    # a base that is not a run
    proc = merge(tmp_path, files, "--base=c")
    assert proc.returncode != 0 and "--base='c'" in proc.stderr


@pytest.mark.slow
def test_by_class_splits_each_paired_difference_by_the_test_labels(tmp_path):
    # a log p(x) range from image 4 and an ELBO from image 0: each difference is grouped by
    # the labels of the images it covers (Fashion-MNIST's real test labels)
    from vae_jax import data
    labels = data.load("fashion_mnist").test_labels
    rng = np.random.default_rng(1)
    n, start = 300, 4
    m, a = rng.normal(size=(2, n))
    em, ea = rng.normal(size=(2, n + start))
    files = {"f": {"m/log_px": m, "m/log_px_start": np.int64(start), "m/elbo": em,
                   "a/log_px": a, "a/log_px_start": np.int64(start), "a/elbo": ea}}
    proc = merge(tmp_path, files, f"--out={tmp_path / 'o.json'}", "--by_class=fashion_mnist")
    assert proc.returncode == 0, proc.stderr[-2000:]
    by_class = json.load(open(tmp_path / "o.json"))["a"]["minus_m_by_class"]
    assert sorted(by_class) == sorted(data.CLASS_NAMES["fashion_mnist"])
    for c, name in enumerate(data.CLASS_NAMES["fashion_mnist"]):
        in_range = labels[start:start + n] == c
        d = (a - m)[in_range]
        assert by_class[name]["log_px"]["mean"] == pytest.approx(d.mean(), abs=1e-3)
        assert by_class[name]["log_px"]["stderr"] == pytest.approx(
            d.std(ddof=1) / np.sqrt(len(d)), abs=1e-3)
        e = (ea - em)[labels[:n + start] == c]
        assert by_class[name]["elbo"]["mean"] == pytest.approx(e.mean(), abs=1e-3)
    # ranges past the labels: refused, naming the figure and the last label
    files["f"]["a/log_px_start"] = files["f"]["m/log_px_start"] = np.int64(len(labels) - 10)
    proc = merge(tmp_path, files, "--by_class=fashion_mnist")
    assert proc.returncode != 0 and "labels stop at 9999" in proc.stderr
