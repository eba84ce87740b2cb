"""Where the test suite's time goes: a pytest plugin that records each test's wall time and
CPU time (its own process's and its subprocesses', user + system) and prints, after the
run, the totals, the test files and the tests that cost the most CPU. In the test processes
it also adds up the seconds JAX reports (``jax.monitoring``) for tracing, lowering to MLIR
and XLA's compilation (a cache read included), which show how much of their time is
compiling.

    python -m pytest -n 2 -p benchmarks.suite_cpu [-m "not slow"]

On 2 cores the suite's wall time is about its CPU time over two: a test file's CPU time is
what removing work from it would save. With xdist every worker appends its rows to a file
in one folder (``VAE_JAX_SUITE_CPU_DIR``, a new temporary folder unless set), which the
controller reads at the end.
"""

from __future__ import annotations

import collections
import json
import os
import resource
import tempfile
import time

import pytest

FOLDER = "VAE_JAX_SUITE_CPU_DIR"
TOP = 25
# jax.monitoring's duration events, by the name they get in the report
EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "tracing",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lowering",
          "/jax/core/compile/backend_compile_duration": "compiling"}
_seconds = collections.Counter()   # this process's totals of EVENTS so far
_last: dict[str, float] = {}       # its subprocesses' CPU time at the end of its last test
AFTER = "(subprocesses waited for after the last test)"


def _record(event: str, duration: float, **_) -> None:
    if event in EVENTS:
        _seconds[EVENTS[event]] += duration


def _cpu() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


def pytest_configure(config):
    if not hasattr(config, "workerinput"):   # the controller, or a run without xdist
        os.environ.setdefault(FOLDER, tempfile.mkdtemp(prefix="vae_jax_suite_cpu_"))
    import jax

    jax.monitoring.register_event_duration_secs_listener(_record)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    own0, children0 = _cpu()
    seconds0 = dict(_seconds)
    t0 = time.perf_counter()
    yield
    own1, children1 = _cpu()
    row = {"test": item.nodeid, "wall": time.perf_counter() - t0, "own": own1 - own0,
           "children": children1 - children0,
           **{name: _seconds[name] - seconds0.get(name, 0.0) for name in EVENTS.values()}}
    _write(row)
    _last["children"] = children1


def _write(row: dict) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    with open(os.path.join(os.environ[FOLDER], f"{worker}.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish():
    """The subprocesses this process waited for after its last test (tests/conftest.py's
    subprocess for the xla_defaults tests, started after collection): one more row."""
    if "children" in _last:
        _write({"test": AFTER, "wall": 0.0, "own": 0.0,
                "children": _cpu()[1] - _last["children"]})


def table(rows: list[dict]) -> list[str]:
    """The report's lines: totals, then the files and the tests with the most CPU time."""
    files = collections.defaultdict(lambda: [0.0, 0.0, 0.0, 0.0])
    for r in rows:
        f = files[r["test"].split("::")[0]]
        f[0] += r["own"]
        f[1] += r["children"]
        f[2] += r["wall"]
        f[3] += r.get("compiling", 0.0)
    own, children = sum(r["own"] for r in rows), sum(r["children"] for r in rows)
    after = sum(r["children"] for r in rows if r["test"] == AFTER)
    tests = sum(r["test"] != AFTER for r in rows)
    jax_seconds = ", ".join(f"{name} {sum(r.get(name, 0.0) for r in rows):.0f} s"
                            for name in EVENTS.values())
    lines = [f"{tests} tests: CPU {own + children:.0f} s ({own:.0f} s in the test "
             f"processes, {children:.0f} s in their subprocesses, {after:.0f} s of it in "
             f"those waited for after the last test), tests' wall time "
             f"{sum(r['wall'] for r in rows):.0f} s summed over the workers",
             f"In the test processes, as JAX reports them: {jax_seconds}",
             "", "|  CPU s | of which subprocesses | of which compiling in the test process "
             "| wall s | file |", "|---:|---:|---:|---:|---|"]
    for name, (o, c, w, x) in sorted(files.items(),
                                      key=lambda kv: -(kv[1][0] + kv[1][1]))[:TOP]:
        lines.append(f"| {o + c:.1f} | {c:.1f} | {x:.1f} | {w:.1f} | {name} |")
    lines += ["", "|  CPU s | of which subprocesses | wall s | test |", "|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: -(r["own"] + r["children"]))[:TOP]:
        lines.append(f"| {r['own'] + r['children']:.1f} | {r['children']:.1f} | "
                     f"{r['wall']:.1f} | {r['test']} |")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if hasattr(config, "workerinput"):
        return
    folder = os.environ[FOLDER]
    rows = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            rows += [json.loads(line) for line in f]
    terminalreporter.section("CPU time per test file and test (benchmarks/suite_cpu.py)")
    for line in table(rows):
        terminalreporter.write_line(line)
