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
extremes) carry the ``xla_defaults`` mark and run, all of a test run's together, in one
pytest subprocess with XLA's default options, started after collection and running while the
other tests do. ``VAE_JAX_TEST_XLA_DEFAULTS=1`` runs the whole suite with them.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                      "--xla_cpu_parallel_codegen_split_count=1")
FAST_COMPILE = os.environ.get("VAE_JAX_TEST_XLA_DEFAULTS") != "1"
# the caller's own flags, without this test run's
CALLER_XLA_FLAGS = os.environ.get("XLA_FLAGS", "").replace(FAST_COMPILE_FLAGS, "").strip()
if FAST_COMPILE:  # before any backend starts; the caller's flags come after, so theirs win
    os.environ["XLA_FLAGS"] = " ".join(filter(None, [FAST_COMPILE_FLAGS, CALLER_XLA_FLAGS]))
# One persistent XLA compilation cache for the whole test run, shared with every subprocess
# test through the environment: the same smoke-sized programs compile once, not per test.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="vae_jax_xla_cache_")
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"


def xla_flags(devices: int) -> str:
    """This test run's ``XLA_FLAGS`` with ``devices`` forced CPU devices."""
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
RESULTS = "VAE_JAX_TEST_RESULTS"   # where that subprocess's pytest writes its outcomes
_with_defaults: dict[str, tuple[str, str]] = {}   # node id -> (outcome, report) from one
_outcomes: dict[str, tuple[str, str]] = {}        # ... as that subprocess records them
_relay: dict[str, subprocess.Popen] = {}          # the subprocess this process started
# Runs the command in its argv[2:], then writes its exit status to the file argv[1] names.
_EXIT_STATUS = ("import os, subprocess, sys; status = subprocess.run(sys.argv[2:]).returncode; "
                "open(sys.argv[1] + '.part', 'w').write(str(status)); "
                "os.replace(sys.argv[1] + '.part', sys.argv[1])")


def start_with_xla_defaults(node_ids: list[str], directory: str) -> subprocess.Popen:
    """Start one pytest subprocess that runs ``node_ids`` with XLA's default options; it
    writes their outcomes to ``directory``/outcomes.json, then its exit status to
    ``directory``/exit (its output goes to ``directory``/log)."""
    env = dict(os.environ, VAE_JAX_TEST_XLA_DEFAULTS="1", XLA_FLAGS=CALLER_XLA_FLAGS,
               **{RESULTS: os.path.join(directory, "outcomes.json")})
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--basetemp={os.path.join(directory, 'tmp')}", *node_ids]
    with open(os.path.join(directory, "log"), "w") as log:
        return subprocess.Popen([sys.executable, "-c", _EXIT_STATUS,
                                 os.path.join(directory, "exit"), *command],
                                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def outcomes_with_xla_defaults(node_ids: list[str], directory: str,
                               timeout: float = 900) -> dict[str, tuple[str, str]]:
    """Wait for the subprocess ``start_with_xla_defaults`` started in ``directory``; each
    node id's (outcome, report), a failure for any it gave no outcome."""
    if not os.path.isdir(directory):
        return {i: ("failed", f"no subprocess started in {directory}") for i in node_ids}
    exit_file, deadline = os.path.join(directory, "exit"), time.monotonic() + timeout
    while not os.path.exists(exit_file) and time.monotonic() < deadline:
        time.sleep(0.1)
    status = f"none in {timeout} s"
    if os.path.exists(exit_file):
        with open(exit_file) as f:
            status = f.read()
    results = {}
    if os.path.exists(os.path.join(directory, "outcomes.json")):
        with open(os.path.join(directory, "outcomes.json")) as f:
            results = {k: tuple(v) for k, v in json.load(f).items()}
    with open(os.path.join(directory, "log")) as f:
        missing = f"no outcome from the subprocess (exit {status}):\n{f.read()[-4000:]}"
    return {i: results.get(i, ("failed", missing)) for i in node_ids}


def run_with_xla_defaults(node_ids: list[str]) -> dict[str, tuple[str, str]]:
    """Run ``node_ids`` in one pytest subprocess with XLA's default options."""
    with tempfile.TemporaryDirectory(prefix="vae_jax_xla_defaults_") as directory:
        start_with_xla_defaults(node_ids, directory).wait()
        return outcomes_with_xla_defaults(node_ids, directory)


def marked_with_xla_defaults(session) -> list[str]:
    return [i.nodeid for i in session.items if i.get_closest_marker("xla_defaults")]


def relay_directory(config) -> str:
    """The test run's directory for that subprocess, one for all pytest-xdist workers."""
    base = config._tmp_path_factory.getbasetemp()   # the tmp_path_factory fixture's
    if os.environ.get("PYTEST_XDIST_WORKER"):   # each worker's is a folder of the run's
        base = base.parent
    return os.path.join(base, "xla_defaults")


def pytest_collection_finish(session):
    """The run's marked tests, all of them, in one subprocess that runs while the other
    tests do, started by the first worker that gets here."""
    marked = marked_with_xla_defaults(session)
    if not FAST_COMPILE or not marked or session.config.option.collectonly:
        return
    try:
        os.makedirs(relay_directory(session.config))
    except FileExistsError:   # another worker started it
        return
    _relay["process"] = start_with_xla_defaults(marked, relay_directory(session.config))


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    if not FAST_COMPILE or pyfuncitem.get_closest_marker("xla_defaults") is None:
        return None
    if pyfuncitem.nodeid not in _with_defaults:
        _with_defaults.update(outcomes_with_xla_defaults(
            marked_with_xla_defaults(pyfuncitem.session), relay_directory(pyfuncitem.config)))
    outcome, report = _with_defaults[pyfuncitem.nodeid]
    if outcome != "passed":   # a skip there (that did not skip here) proves nothing either
        pytest.fail(f"{outcome} with XLA's default options:\n{report}", pytrace=False)
    return True


def pytest_runtest_logreport(report):
    """In that subprocess: each test's outcome, its first one other than passed if any."""
    if RESULTS in os.environ and (report.when == "call" or report.outcome != "passed"):
        if _outcomes.get(report.nodeid, ("passed",))[0] == "passed":
            _outcomes[report.nodeid] = (report.outcome, report.longreprtext)


def pytest_sessionfinish(exitstatus):
    if RESULTS in os.environ:
        with open(os.environ[RESULTS], "w") as f:
            json.dump(_outcomes, f)
    process = _relay.get("process")
    if process is None:
        return
    if exitstatus == pytest.ExitCode.INTERRUPTED and process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)   # a stopped test run stops it too
    process.wait()   # (every marked test, on either worker, waits for it anyway)
