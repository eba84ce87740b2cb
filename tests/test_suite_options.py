"""The suite's compile options (conftest.py): the test processes compile with
``FAST_COMPILE_FLAGS``; a test marked ``xla_defaults`` runs in a subprocess with XLA's
default options, and its outcome is the test's."""

import os

import pytest

import conftest


def test_the_session_compiles_with_the_fast_options():
    if not conftest.FAST_COMPILE:
        pytest.skip("VAE_JAX_TEST_XLA_DEFAULTS=1: this session keeps XLA's default options")
    assert os.environ["XLA_FLAGS"].startswith(conftest.FAST_COMPILE_FLAGS)


@pytest.mark.xla_defaults
def test_a_marked_test_runs_with_xla_defaults():
    assert os.environ["VAE_JAX_TEST_XLA_DEFAULTS"] == "1"
    assert conftest.FAST_COMPILE_FLAGS not in os.environ.get("XLA_FLAGS", "")
    assert not conftest.FAST_COMPILE
