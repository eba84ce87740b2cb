"""The notebooks run top to bottom (small-config switch on), are committed without outputs, and
each .ipynb is the jupytext pairing of the percent-format .py beside it (edit either, then
``jupytext --sync notebooks/*.py``)."""

import os
import re
import time
import tomllib

import jupytext
import nbformat
import pytest
from conftest import requires_fashion_mnist
from jupytext.compare import NotebookDifference, compare_notebooks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("quickstart.ipynb", "losses_from_scratch.ipynb", "beyond_the_vae.ipynb")


def _read(name):
    return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs(name):
    nb = _read(name)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "a notebook without code"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    # Colab: the first code cell installs the package (from VAE_JAX_SOURCE, else the repository
    # URL), never TensorFlow, and says whether the runtime must restart.
    install = code[0].source
    assert '"pip", "install"' in install and "VAE_JAX_SOURCE" in install
    assert "RESTART THE RUNTIME" in install and "import vae_jax" in install
    assert "tensorflow" not in install.replace("tensorflow-datasets is there", "")
    assert "[tfds]" not in install


def _paired(name):
    return os.path.join(ROOT, "notebooks", name[:-len(".ipynb")] + ".py")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_ipynb_matches_its_percent_script(name):
    ipynb = jupytext.read(os.path.join(ROOT, "notebooks", name))
    script = jupytext.read(_paired(name))
    assert ipynb.metadata["jupytext"]["formats"] == "ipynb,py:percent"
    compare_notebooks(ipynb, script, fmt="py:percent")  # raises NotebookDifference
    # ... and the comparison does see a changed cell.
    script.cells[-1].source += "\nprint('edited')"
    with pytest.raises(NotebookDifference):
        compare_notebooks(ipynb, script, fmt="py:percent")


def _repository():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["urls"]["Repository"]


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_install_url_is_pyprojects_repository(name):
    """The URL is set in one place, pyproject.toml; the notebooks' copies must agree with it."""
    nb = _read(name)
    install = next(c for c in nb.cells if c.cell_type == "code").source
    assert re.findall(r'^REPOSITORY = "(.*)"$', install, re.M) == [_repository()]
    owner_name = _repository().removeprefix("https://github.com/")
    badges = re.findall(r"colab\.research\.google\.com/github/([^/]+/[^/]+)/", nb.cells[0].source)
    assert badges == [owner_name]


def test_the_install_cell_is_the_same_everywhere():
    """So running one notebook's install (test_notebook_executes) tests all three."""
    cells = [next(c for c in _read(name).cells if c.cell_type == "code").source
             for name in NOTEBOOKS]
    assert cells[1:] == cells[:-1]


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
    # The install cell is the same in every notebook (test_the_install_cell_is_the_same_
    # everywhere): beyond_the_vae, which also reads pretrained/ from VAE_JAX_SOURCE, runs its
    # install, the others its other branch (vae_jax importable, nothing installed). The
    # install installs this checkout as a dry run (pip's own PIP_* settings), offline and
    # without dependencies, so the shared environment is left as it is; the kernel then
    # imports this checkout through PYTHONPATH.
    installs = name == "beyond_the_vae.ipynb"
    if installs:
        monkeypatch.setenv("VAE_JAX_SOURCE", ROOT)
    else:
        monkeypatch.delenv("VAE_JAX_SOURCE", raising=False)
    for option in ("DRY_RUN", "NO_INDEX", "NO_DEPS"):
        monkeypatch.setenv(f"PIP_{option}", "1")
    monkeypatch.setenv("PIP_NO_BUILD_ISOLATION", "0")  # pip's spelling of "no isolation"
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
    first = next(c for c in nb.cells if c.cell_type == "code")
    printed = "".join(o.get("text", "") for o in first.outputs)
    # pip prints the project's name normalised (vae-jax) or as built (vae_jax), by version
    installed = re.search(r"Would install vae[-_]jax-", printed) and "no restart needed" in printed
    assert bool(installed) == installs, printed
    assert f"from {os.path.join(ROOT, 'vae_jax')}" in printed, printed
    print(f"{name}: {elapsed:.0f} s")
