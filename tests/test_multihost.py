"""Multi-process data parallel for real: two CPU processes on 127.0.0.1 joined through
jax.distributed.initialize() (gloo collectives) train the smoke config and end with the
same parameters as one process with the same global batch over the same two devices."""

from __future__ import annotations

import glob
import json
import os
import socket
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runs  # noqa: E402
from conftest import requires_fashion_mnist  # noqa: E402
from experiments.configs import smoke  # noqa: E402
from vae_jax.run import logs  # noqa: E402

pytestmark = requires_fashion_mnist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(workdir: str, cache: str, *overrides: str) -> list[str]:
    port = _free_port()
    procs = [subprocess.Popen(
        _runs.command(workdir, f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                      f"--process_id={i}", *overrides),
        env=_runs.env(cache, devices=1), cwd=_runs.ROOT, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    """Both input pipelines: the training set split over the two processes' devices (each
    process places only its rows) and the stream (each process reads only its half of
    every batch) end bit for bit where one process over two devices does."""
    cache = _runs.shared_cache()
    single = str(tmp_path / "one_process")
    r = _runs.run(_runs.command(single), _runs.env(cache, devices=2))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    config = smoke.get_config()
    for pipeline in ("device", "stream"):
        multi = str(tmp_path / f"two_processes_{pipeline}")
        outs = _two_processes(multi, cache, f"--config.data.pipeline={pipeline}")
        assert all(f"Input pipeline {pipeline!r}" in out for out in outs)
        # Each device computes the same half-batch in both set-ups and the all-reduce of
        # two partial sums is exact (a + b == b + a), so the results agree bit for bit.
        _runs.assert_same_state(_runs.final_state(multi, config),
                                _runs.final_state(single, config))

        # Only process 0 writes: one TensorBoard file, each metrics step once, the same
        # numbers.
        assert len(glob.glob(os.path.join(multi, "events.out.tfevents.*"))) == 1
        log = logs.MetricsLog.read
        multi_records = log(os.path.join(multi, "metrics.jsonl"))
        assert [r["step"] for r in multi_records if r["kind"] == "train"] == [5, 10, 15, 20]
        assert multi_records == log(os.path.join(single, "metrics.jsonl"))
        assert sorted(os.listdir(os.path.join(multi, "images"))) == sorted(
            os.listdir(os.path.join(single, "images")))
        if pipeline != "device":
            continue
        # The command again on the finished run: nothing owed (process 0's log holds the
        # last evaluation; process 1 keeps no log and takes process 0's answer).
        _two_processes(multi, cache, f"--config.data.pipeline={pipeline}")
        assert log(os.path.join(multi, "metrics.jsonl")) == multi_records
        # Killed between the last save and the last evaluation (its record missing): the
        # command again makes it on both processes, and the log is whole again.
        with open(os.path.join(multi, "metrics.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in multi_records
                         if (r["step"], r["kind"]) != (20, "eval"))
        _two_processes(multi, cache, f"--config.data.pipeline={pipeline}")
        assert log(os.path.join(multi, "metrics.jsonl")) == multi_records


@pytest.mark.slow
def test_a_process_that_never_comes_up_fails_with_a_clear_message(tmp_path):
    """Process 0 of 2 alone: JAX aborts it after --distributed_timeout; the line printed
    first names the run and what to check. Nothing is written to the workdir."""
    workdir = str(tmp_path / "never_written")
    r = _runs.run(_runs.command(workdir, f"--coordinator_address=127.0.0.1:{_free_port()}",
                                "--num_processes=2", "--process_id=0",
                                "--distributed_timeout=3"),
                  _runs.env(_runs.shared_cache(), devices=1), timeout=120)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Joining process 0 of 2 via coordinator 127.0.0.1:" in out
    assert "start all processes with the same --coordinator_address" in out
    assert "DEADLINE_EXCEEDED" in out
    assert not os.path.exists(workdir)
