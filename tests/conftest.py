"""Shared test helpers. In-process tests see one CPU device; multi-device checks run in a
subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=8 (set before jax imports).

The suite's programs are tiny and most are compiled once or twice, so XLA:CPU's compilation,
not their execution, is most of the suite's time. The test processes and the commands,
interpreters and notebook kernels they start therefore compile with ``FAST_COMPILE_FLAGS``
(LLVM's optimisation level 0; XLA's loop emitters in place of its MLIR fusion emitters; each
program's code generated in one piece, not split for threads that two busy cores do not
have): the same HLO compiles about three times faster (benchmarks/README.md, "The suite's
compile options"). They change how each fusion's code is generated, and with it some float
bits (digests of initial parameters, a tanh-based derivative far out), not what the program
computes: every test that compares with a closed form or an outside reference within a
tolerance, and every pair of runs compared bit for bit (compiled alike), checks the same
property under them. Tests whose bits depend on XLA's own code generation (committed digests
of initial parameters, two different programs that agree bit for bit, float accuracy at the
extremes) carry the ``xla_defaults`` mark and run, a file's marked tests together, in a
pytest subprocess with XLA's default options. ``VAE_JAX_TEST_XLA_DEFAULTS=1`` runs the whole
suite with them.
"""

import json
import os
import subprocess
import sys
import tempfile

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                      "--xla_cpu_parallel_codegen_split_count=1")
FAST_COMPILE = os.environ.get("VAE_JAX_TEST_XLA_DEFAULTS") != "1"
# the caller's own flags, without this session's
CALLER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE_FLAGS, "").strip()
if FAST_COMPILE:  # before any backend starts; the caller's flags come after, so theirs win
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [FAST_COMPILE_FLAGS, CALLER_XLA_FLAGS]))
# One persistent XLA compilation cache for the whole session, shared with every subprocess
# test through the environment: the same smoke-sized programs compile once, not per test.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vae_jax_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def xla_flags(devices: int) -> str:
    """This session's ``XLA_FLAGS`` with ``devices`` forced CPU devices."""
    return " ".join(filter(None, [os.environ.get("XLA_FLAGS"),
                                  f"--xla_force_host_platform_device_count={devices}"]))


def run_python(code: str, *, devices: int = 1, timeout: int = 300, env=None) -> str:
    """Run ``code`` in a fresh interpreter with ``devices`` forced CPU devices; return stdout."""
    full_env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
                    XLA_FLAGS=xla_flags(devices), JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
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


# -- tests that run with XLA's default options -------------------------------------------
RESULTS = "VAE_JAX_TEST_RESULTS"   # where a subprocess session writes its outcomes
_with_defaults: dict[str, tuple[str, str]] = {}   # node id -> (outcome, report) from one
_outcomes: dict[str, tuple[str, str]] = {}        # ... as that subprocess records them


def run_with_xla_defaults(node_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Run ``node_ids`` in one pytest subprocess with XLA's default options."""
    fd, path = tempfile.mkstemp(prefix="vae_jax_xla_defaults_", suffix=".json")
    os.close(fd)
    env = dict(os.environ, VAE_JAX_TEST_XLA_DEFAULTS="1", XLA_FLAGS=CALLER_XLA_FLAGS,
               **{RESULTS: path})
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               *node_ids], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900)
        with open(path) as f:
            text = f.read()
        results = {k: tuple(v) for k, v in json.loads(text).items()} if text else {}
    finally:
        os.remove(path)
    missing = f"no outcome from the subprocess (exit {proc.returncode}):\n{proc.stdout[-4000:]}"
    return {i: results.get(i, ("failed", missing)) for i in node_ids}


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not FAST_COMPILE or pyfuncitem.get_closest_marker("xla_defaults") is None:
        return None
    if pyfuncitem.nodeid not in _with_defaults:   # this file's marked tests, in one process
        module = pyfuncitem.nodeid.split("::")[0]
        _with_defaults.update(run_with_xla_defaults([
            i.nodeid for i in pyfuncitem.session.items
            if i.nodeid.split("::")[0] == module and i.get_closest_marker("xla_defaults")]))
    outcome, report = _with_defaults[pyfuncitem.nodeid]
    if outcome != "passed":   # a skip there (that did not skip here) proves nothing either
        pytest.fail(f"{outcome} with XLA's default options:\n{report}", pytrace=False)
    return True


def pytest_runtest_logreport(report):
    """In that subprocess: each test's outcome, its first one other than passed if any."""
    if RESULTS in os.environ and (report.when == "call" or report.outcome != "passed"):
        if _outcomes.get(report.nodeid, ("passed",))[0] == "passed":
            _outcomes[report.nodeid] = (report.outcome, report.longreprtext)


def pytest_sessionfinish(session):
    if RESULTS in os.environ:
        with open(os.environ[RESULTS], "w") as f:
            json.dump(_outcomes, f)
