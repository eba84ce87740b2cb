"""The suite's compile options (conftest.py): the test processes compile with
``FAST_COMPILE_FLAGS``; a test marked ``xla_defaults`` runs in a subprocess with XLA's
default options, and its outcome is the test's."""

import json
import os
import re

import pytest

import conftest


def test_the_suite_compiles_with_the_fast_options_unless_asked_not_to():
    flags = os.environ.get("XLA_FLAGS", "")
    if conftest.FAST_COMPILE:
        assert flags.startswith(conftest.FAST_COMPILE_FLAGS)
    else:   # VAE_JAX_TEST_XLA_DEFAULTS=1: XLA's own options throughout
        assert os.environ["VAE_JAX_TEST_XLA_DEFAULTS"] == "1"
        assert conftest.FAST_COMPILE_FLAGS not in flags


@pytest.mark.xla_defaults
def test_a_marked_test_runs_with_xla_defaults():
    assert os.environ["VAE_JAX_TEST_XLA_DEFAULTS"] == "1"
    assert conftest.FAST_COMPILE_FLAGS not in os.environ.get("XLA_FLAGS", "")
    assert not conftest.FAST_COMPILE


def test_every_marked_test_runs_once_in_one_subprocess(request):
    """All of this run's marked tests (this file's among them), each once, in the one
    subprocess the first worker started, whichever worker runs them."""
    directory = conftest.relay_directory(request.config)
    marked = conftest.marked_with_xla_defaults(request.session)
    assert request.node.nodeid not in marked
    known = "tests/test_suite_options.py::test_a_marked_test_runs_with_xla_defaults"
    if known in {item.nodeid for item in request.session.items}:   # selected (not -k'd out)
        assert known in marked
    # VAE_JAX_TEST_XLA_DEFAULTS=1 (every test runs right here), or none marked selected
    if not conftest.FAST_COMPILE or not marked:
        assert not os.path.exists(directory)
        return
    conftest.outcomes_with_xla_defaults(marked, directory)   # waits for it to end
    with open(os.path.join(directory, "outcomes.json")) as f:
        assert sorted(json.load(f)) == sorted(marked)
    with open(os.path.join(directory, "log")) as f:   # one pytest run: one summary line
        assert len(re.findall(r"^=* ?\d+ (?:passed|failed).* in [\d.]+s", f.read(), re.M)) == 1


def test_the_subprocess_gives_each_outcome_and_a_missing_one_is_a_failure():
    marked = "tests/test_suite_options.py::test_a_marked_test_runs_with_xla_defaults"
    assert conftest.run_with_xla_defaults([marked]) == {marked: ("passed", "")}
    missing = "tests/test_suite_options.py::test_that_does_not_exist"
    outcome, report = conftest.run_with_xla_defaults([missing])[missing]
    assert outcome == "failed" and "no outcome from the subprocess (exit 4)" in report
