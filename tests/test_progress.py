"""Progress reports: bounded, carriage-return free lines off a terminal; silent when asked."""

import io
import time

import pytest
from absl import logging

from conftest import requires_fashion_mnist
from vae_jax import progress
from vae_jax.progress import Progress


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class TTY(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _progress_on(monkeypatch):
    monkeypatch.delenv(progress.ENV_VAR, raising=False)


def _run(stream, total=100, step_s=1.0, **kw):
    clock = FakeClock()
    p = Progress(total, stream=stream, clock=clock, **kw)
    for done in range(1, total + 1):
        clock.t += step_s
        p.update(done, loss=1.0 / done)
    return stream.getvalue()


def test_non_tty_prints_whole_lines_at_a_bounded_rate():
    out = _run(io.StringIO(), total=100, step_s=1.0, log_interval_s=10.0)
    assert "\r" not in out
    lines = out.splitlines()
    # 100 s of updates every 1 s, at most one line per 10 s: the first, every 10 s, the last.
    assert 10 <= len(lines) <= 12, lines
    assert lines[-1].startswith("step 100/100")
    assert all(line.startswith("step ") for line in lines)


def test_tty_redraws_in_place_and_ends_the_line():
    out = _run(TTY(), total=5, step_s=1.0)
    assert out.count("\r") == 5 and out.endswith("\n") and out.count("\n") == 1


def test_rate_and_eta():
    stream = io.StringIO()
    clock = FakeClock()
    p = Progress(100, stream=stream, clock=clock, log_interval_s=0.0)
    p.update(0)
    clock.t = 5.0
    p.update(50)       # 50 steps in 5 s: 10 steps/s, 50 to go: ETA 5 s
    assert "10.0 steps/s ETA 0:00:05" in stream.getvalue().splitlines()[-1]
    p.update(60, epoch=1.5, loss=2.25, rate=4.0)   # a given rate wins: 40 to go at 4/s
    assert stream.getvalue().splitlines()[-1] == (
        "step 60/100 epoch 1.50 loss 2.250 4.0 steps/s ETA 0:00:10")
    p.update(61, rate=0.25)   # slow units read as seconds per unit
    assert stream.getvalue().splitlines()[-1] == "step 61/100 4.0 s/step ETA 0:02:36"


def test_forced_updates_print_even_when_not_due():
    stream = io.StringIO()
    clock = FakeClock()
    p = Progress(10, unit="point", stream=stream, clock=clock, log_interval_s=1e9)
    p.update(1)
    p.update(2)
    p.update(3, force=True)
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["1/10", "3/10"]


def test_quiet_by_argument_environment_or_absl_verbosity(monkeypatch):
    assert _run(io.StringIO(), quiet=True) == ""
    monkeypatch.setenv(progress.ENV_VAR, "0")
    assert _run(io.StringIO()) == "" and _run(TTY()) == ""
    monkeypatch.delenv(progress.ENV_VAR)
    old = logging.get_verbosity()
    try:
        logging.set_verbosity(logging.ERROR)   # --verbosity=-2
        assert _run(io.StringIO()) == ""
        logging.set_verbosity(logging.WARNING)
        assert _run(io.StringIO()) != ""
    finally:
        logging.set_verbosity(old)


def test_set_enabled_reaches_subprocess_environment(monkeypatch):
    import os
    monkeypatch.setenv(progress.ENV_VAR, "1")   # restored after the test
    progress.set_enabled(False)
    assert os.environ[progress.ENV_VAR] == "0" and not progress.enabled()
    progress.set_enabled(True)
    assert progress.enabled()


def test_newline_only_after_an_unfinished_tty_line():
    stream = TTY()
    p = Progress(10, stream=stream, clock=FakeClock())
    p.newline()
    assert stream.getvalue() == ""
    p.update(3)
    p.newline()
    p.newline()
    assert stream.getvalue().count("\n") == 1
    plain = io.StringIO()
    p = Progress(10, stream=plain, clock=FakeClock())
    p.update(3)
    p.newline()
    assert plain.getvalue().count("\n") == 1   # off a terminal every line is already ended


def test_hms():
    assert progress.hms(3725.4) == "1:02:05" and progress.hms(-3) == "0:00:00"


def test_long_evaluations_report_batches(capsys):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from vae_jax import evaluate

    fn = jax.jit(lambda params, x, key: {"s": jnp.sum(x, axis=(1, 2, 3)).astype(jnp.float32)})
    images = np.arange(30 * 2 * 2, dtype=np.uint8).reshape(30, 2, 2, 1)
    expected = images.reshape(30, -1).sum(1)
    quiet = evaluate.per_example(fn, None, images, jax.random.key(0), batch_size=2)
    assert capsys.readouterr().out == ""   # 15 batches: below the automatic threshold
    loud = evaluate.per_example(fn, None, images, jax.random.key(0), batch_size=1,
                                progress=True)
    out = capsys.readouterr().out
    assert "batch 30/30" in out and "\r" not in out     # captured stdout is not a terminal
    np.testing.assert_array_equal(quiet["s"], expected)
    np.testing.assert_array_equal(loud["s"], expected)


def test_waiting_reports_a_long_wait_and_its_total():
    plain = io.StringIO()
    with progress.Waiting("compiling x", stream=plain, delay_s=0, log_interval_s=0.05):
        time.sleep(0.2)
    lines = plain.getvalue().splitlines()
    assert len(lines) >= 2 and "\r" not in plain.getvalue()
    assert all(line.startswith("compiling x ... ") and line.endswith(" s") for line in lines)
    tty = TTY()
    with progress.Waiting("compiling x", stream=tty, delay_s=0):
        pass
    out = tty.getvalue()
    assert out.startswith("\rcompiling x ... ") and out.endswith("\n") and out.count("\n") == 1
    for quiet in (progress.Waiting("compiling x", stream=io.StringIO(), quiet=True, delay_s=0),
                  progress.Waiting("compiling x", stream=io.StringIO(), delay_s=60)):
        with quiet:   # asked for silence, or shorter than the delay
            pass
        assert quiet.stream.getvalue() == ""


@requires_fashion_mnist
def test_training_says_what_it_compiles_before_the_first_step(tmp_path, monkeypatch, capsys):
    """The progress line starts before the first call, and the train step's and the
    evaluation's compilations say so (the delay set to 0: every compilation, however
    short, prints its line)."""
    from experiments.configs import smoke
    from vae_jax.run import experiment

    monkeypatch.setattr(progress, "WAITING_DELAY_S", 0.0)
    config = smoke.get_config()
    config.train.num_steps = 10
    experiment.train_and_evaluate(config, str(tmp_path))
    out = capsys.readouterr().out
    first = out.index("step 0/10 epoch 0.00")
    assert first < out.index("compiling the train step ... ") < out.index("step 10/10")
    assert out.index("compiling the evaluation ... ") < out.index("eval step 10")


def test_announced_functions_say_so_once_per_operand_type(monkeypatch, capsys):
    import jax
    import numpy as np

    from vae_jax.ops.compile import announced

    monkeypatch.setattr(progress, "WAITING_DELAY_S", 0.0)
    f = announced(jax.jit(lambda x: x + 1), "the thing")
    assert f(1.0) == 2.0 and "compiling the thing ... " in capsys.readouterr().out
    assert f(2.0) == 3.0 and capsys.readouterr().out == ""         # compiled: silent
    assert f(np.ones(3)).shape == (3,) and "compiling the thing" in capsys.readouterr().out
