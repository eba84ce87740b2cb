"""Shared test helpers. In-process tests see one CPU device; multi-device checks run in a
subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before jax imports)."""

import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# One persistent XLA compilation cache for the whole session, shared with every subprocess
# test through the environment: the same smoke-sized programs compile once, not per test.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vae_jax_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def run_python(code: str, *, devices: int = 1, timeout: int = 300, env=None) -> str:
    """Run ``code`` in a fresh interpreter with ``devices`` forced CPU devices; return stdout."""
    full_env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                    JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


@pytest.fixture(scope="session")
def fashion_mnist_available() -> bool:
    return os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))


# Skipped only outside CI: under CI=true a missing data set fails the test instead.
requires_fashion_mnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz"))
    and os.environ.get("CI") != "true",
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist); "
           ".ci/run installs it")
