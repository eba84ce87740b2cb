"""The notebooks run top to bottom (small-config switch on) and are committed without outputs."""

import os
import subprocess
import sys
import time

import nbformat
import pytest
from conftest import requires_fashion_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "losses_from_scratch.ipynb")


def _read(name):
    return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    # Colab: the first code cell installs the package unless it is importable already.
    assert "%pip install" in code[0].source and "import vae_jax" in code[0].source


def test_notebooks_match_their_generator():
    result = subprocess.run([sys.executable, os.path.join(ROOT, "notebooks", "build_notebooks.py"),
                             "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@requires_fashion_mnist
@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_executes(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    # The kernel inherits this environment: the small config, this checkout's vae_jax and no
    # progress bars in the cell outputs.
    monkeypatch.setenv("VAE_JAX_NOTEBOOK_SMOKE", "1")
    monkeypatch.setenv("VAE_JAX_PROGRESS", "0")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [ROOT] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    nb = _read(name)
    client = NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:  # names the failing cell and its traceback
        pytest.fail(f"{name} failed:\n{e}")
    elapsed = time.perf_counter() - t0
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    print(f"{name}: {elapsed:.0f} s")
