"""``experiments/main.py --mode=sample`` end to end, with the progress bar's log-mode output."""

import os
import subprocess
import sys

import pytest
from PIL import Image
from conftest import requires_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _main(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    env.pop("VAE_JAX_PROGRESS", None)
    result = subprocess.run([sys.executable, "-m", "experiments.main",
                             "--config=experiments/configs/smoke.py", *args],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@requires_fashion_mnist
@pytest.mark.slow
def test_train_then_sample_a_2d_model(tmp_path):
    common = [f"--workdir={tmp_path}", "--config.model.latent_dim=2",
              "--config.train.num_steps=10"]
    out = _main(*common)
    # stdout is a pipe here: whole lines, no carriage returns, and the final step reported.
    assert "\r" not in out and "step 10/10" in out
    quiet = _main(*common, "--mode=sample", "--noprogress", "--config.sample.temperature=0.5",
                  "--config.sample.manifold_size=5", "--config.sample.scatter_points=500")
    assert "step 10/10" not in quiet
    folder = tmp_path / "samples"
    names = {"samples_t0.5", "reconstructions", "interpolation_linear",
             "interpolation_spherical", "traversal", "manifold", "latent_scatter"}
    assert {p[:-4] for p in os.listdir(folder)} == names
    assert Image.open(folder / "manifold.png").size == (5 * 29 + 1, 5 * 29 + 1)
    assert Image.open(folder / "traversal.png").size[1] == 2 * 29 + 1   # both latent dims
