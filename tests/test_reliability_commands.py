"""What a user does to a run through the commands, done for real: damaged parameter files,
read-only and full disks outside training, SIGINT / SIGTERM in every phase, resuming with
another config or data set, every checkpoint damaged, --step that does not exist, ``~`` in
paths, a damaged compilation cache.

Most cases run the launcher's own code in process (``runtime.report_errors(experiment.run,
...)``, what ``vae-jax`` calls after parsing its flags) on copies of one trained smoke
workdir; the signal during ``--mode=eval`` goes through the real command in a subprocess.
Each checks the exit code, the one paragraph (or line) printed and that nothing already
written changed.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runs  # noqa: E402
from conftest import FASHION_MNIST_DIR, requires_fashion_mnist  # noqa: E402
from vae_jax import errors, parallel  # noqa: E402
from vae_jax.evaluate import sampling  # noqa: E402
from vae_jax.run import checkpoint, experiment, logs, runtime  # noqa: E402

pytestmark = requires_fashion_mnist


smoke_config = _runs.smoke_config


tree = _runs.tree


def cli(config, workdir, capsys, **flags) -> tuple[int, str, str]:
    """The launcher's run in process (``vae-jax`` after its flags are parsed): (exit code,
    stdout, the one ERROR line of stderr or "")."""
    try:
        runtime.report_errors(experiment.run, config, workdir, show_progress=False, **flags)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err[-3000:]
    lines = [line for line in out.err.splitlines() if line.startswith("ERROR: ")]
    assert len(lines) <= 1, out.err
    return code, out.out, lines[0] if lines else ""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 20-step smoke run (checkpoints 10 and 20) and its exported parameters."""
    workdir = str(tmp_path_factory.mktemp("trained") / "run")
    experiment.train_and_evaluate(smoke_config(), workdir)
    experiment.export_params(smoke_config(), workdir)
    return workdir


@pytest.fixture
def copy(trained, tmp_path):
    path = str(tmp_path / "run")
    shutil.copytree(trained, path)
    return path


def _mount_tmpfs(folder, size="8m"):
    """A real size-limited filesystem (needs root and mount permission; CI has both)."""
    give_up = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
    if os.geteuid() != 0:
        give_up("mounting a tmpfs needs root")
    os.makedirs(folder)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        give_up(f"cannot mount a tmpfs here: {r.stderr.strip()}")


@pytest.fixture
def tmpfs(tmp_path):
    folder = tmp_path / "fs"
    _mount_tmpfs(folder)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# ------------------------------------------------------------ a damaged parameter file

@pytest.mark.parametrize("how", ["truncated", "bitflip"])
def test_a_damaged_parameter_file_is_refused_naming_how_to_export_it_again(copy, capsys,
                                                                           how):
    """--mode=eval and --mode=sample of a cut-off or bit-flipped params_20.npz: exit code 4
    and one paragraph saying it is damaged and the export command that writes it again (the
    workdir beside it holds the checkpoints); nothing is written."""
    path = os.path.join(copy, "params_20.npz")
    raw = bytearray(open(path, "rb").read())
    if how == "truncated":
        raw = raw[:len(raw) // 2]
    else:
        for i in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[i] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    before = tree(copy)
    for mode in ("eval", "sample"):
        code, _, line = cli(smoke_config(), path, capsys, mode=mode)
        assert code == 4, line
        assert line.startswith(f"ERROR: CheckpointError: {path} is damaged"), line
        assert f"--workdir={copy} --mode=export --step=20" in line
        assert tree(copy) == before, mode


# ------------------------------------------------- writes outside training that cannot

def test_sample_and_export_on_a_read_only_workdir_stop_before_the_work(trained, tmp_path,
                                                                        capsys):
    """A workdir on a read-only filesystem: --mode=sample and --mode=export (which wrote
    into it after the work, ending in an OSError traceback) and --mode=eval are refused up
    front with the training run's check (exit code 2) naming the folder; nothing changes."""
    folder = tmp_path / "fs"
    _mount_tmpfs(folder)
    try:
        workdir = str(folder / "run")
        shutil.copytree(trained, workdir)
        os.remove(os.path.join(workdir, "params_20.npz"))
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        before = tree(workdir)
        for mode, named in (("sample", f"{workdir}/samples (where --mode=sample writes"),
                            ("export", f"--workdir={workdir} (where --mode=export writes"),
                            ("eval", f"--workdir={workdir} is not writable")):
            code, _, line = cli(smoke_config(), workdir, capsys, mode=mode)
            assert code == 2, (mode, line)
            assert named in line and "read-only filesystem" in line, line
        assert tree(workdir) == before
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_eval_sample_and_export_on_a_full_disk_stop_before_the_work(copy, tmpfs, capsys,
                                                                   monkeypatch):
    """A full filesystem: --mode=eval (which evaluated everything, then died with an
    [Errno 28] traceback), --mode=sample and --mode=export stop before evaluating, drawing
    or writing, with exit code 7 and one paragraph naming the file and the fix."""
    workdir = str(tmpfs / "run")
    shutil.copytree(copy, workdir)
    with open(tmpfs / "filler", "wb", buffering=0) as f:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError:
                pass

    def never(*args, **kwargs):
        raise AssertionError("the work ran although its result cannot be written")

    monkeypatch.setattr(experiment.suite, "run_suite", never)
    monkeypatch.setattr(sampling, "write_sample_images", never)
    before = tree(workdir)
    for mode, target, fragment in (
            ("eval", f"{workdir}/eval.json", "Nothing was evaluated"),
            ("sample", f"{workdir}/samples", "No picture was drawn"),
            ("export", f"{workdir}/params_20.npz", "Nothing was written")):
        code, _, line = cli(smoke_config(), workdir, capsys, mode=mode)
        assert code == 7, (mode, line)
        assert line.startswith(f"ERROR: WriteError: Cannot write {target}: No space left on "
                               "device (ENOSPC)"), line
        assert fragment in line and "free space on that filesystem" in line
    assert tree(workdir) == before


def test_a_write_that_fails_after_the_evaluation_is_one_paragraph(copy, capsys, monkeypatch):
    """eval.json that cannot be written once the figures exist (the disk filled meanwhile):
    exit code 7 naming the file; the figures were printed."""
    real = runtime.write_json

    def full(path, obj):
        if path.endswith("eval.json"):
            raise OSError(28, os.strerror(28), path)
        return real(path, obj)

    monkeypatch.setattr(runtime, "write_json", full)
    code, out, line = cli(smoke_config(eval__num_test_images=50,
                                       eval__num_importance_samples=0, eval__iwae_k=0),
                          copy, capsys, mode="eval")
    assert code == 7 and f"Cannot write {copy}/eval.json: No space left" in line, line
    assert "the figures printed above are computed anew" in line
    assert '"test_elbo"' in out and not os.path.exists(os.path.join(copy, "eval.json"))


# -------------------------------------------------------------- SIGINT / SIGTERM anywhere

@pytest.mark.slow
def test_sigint_during_eval_stops_within_one_call(trained, tmp_path):
    """Ctrl-C during a --mode=eval that could not end in minutes (log p(x) with k = 10⁵,
    10 samples a device call; the old single call per batch ignored it until the call
    returned): the real command exits with 130 after at most two more calls, with one line
    and no traceback, and writes nothing."""
    before = tree(trained)
    t0 = time.time()
    r = _runs.run(_runs.command(trained, "--mode=eval", "--config.eval.num_test_images=100",
                                "--config.eval.iwae_k=0",
                                "--config.eval.num_importance_samples=100000", driver=True),
                  _runs.env(str(tmp_path / "cache"), VAE_JAX_FAULT="signal_during_calls:8",
                            VAE_JAX_SIGNAL="SIGINT"))
    print(f"exited {r.returncode} in {time.time() - t0:.1f} s: {r.stdout.splitlines()[-2:]}")
    assert r.returncode == 130, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r.stderr
    stopped = [line for line in r.stdout.splitlines() if line.startswith("Stopped by")]
    assert stopped == ["Stopped by SIGINT during --mode=eval: nothing was written (eval.json "
                       "is written once every figure is computed); the same command "
                       "evaluates again."]
    after = [line for line in r.stdout.splitlines() if line.startswith("fault_driver:")]
    assert len(after) == 1 and "SIGINT sent after call" in after[0], r.stdout[-2000:]
    assert int(after[0].split("; ")[1].split()[0]) <= 2, after  # the call in flight, one queued
    assert tree(trained) == before


@pytest.mark.slow
def test_sigterm_during_the_final_evaluation_saves_and_stops_within_a_batch(copy, capsys,
                                                                           monkeypatch):
    """SIGTERM while training's last evaluation runs (it used to run to its end: minutes for
    a deep model) stops it at the next batch: exit code 143, checkpoint 20 complete, no
    evaluation of step 20 logged; the same command makes that evaluation first."""
    shutil.rmtree(os.path.join(copy, "checkpoints", "20"))  # resume at 10, train to 20
    config = smoke_config(eval__batch_size=100)  # 100 ELBO batches of the test set
    original, calls, sent = parallel.between_calls, [0], []

    def between_calls():
        calls[0] += 1
        if calls[0] == 3:  # a real SIGTERM to this process after the third batch
            sent.append(calls[0])
            os.kill(os.getpid(), signal.SIGTERM)
        original()

    monkeypatch.setattr(parallel, "between_calls", between_calls)
    with pytest.raises(errors.TrainingInterrupted) as e:
        experiment.train_and_evaluate(config, copy)
    assert e.value.code == 143
    assert calls[0] - sent[0] <= 2 and calls[0] < 50, (calls, sent)
    assert ("Stopped by SIGTERM at step 20/20 during its evaluation (the rerun makes it "
            "first); checkpoint saved") in capsys.readouterr().out
    assert sorted(int(d) for d in os.listdir(os.path.join(copy, "checkpoints"))) == [10, 20]
    evals = [r["step"] for r in logs.MetricsLog.read(os.path.join(copy, "metrics.jsonl"))
             if r["kind"] == "eval"]
    assert evals == [10]
    monkeypatch.setattr(parallel, "between_calls", original)
    experiment.train_and_evaluate(config, copy)
    evals = [r["step"] for r in logs.MetricsLog.read(os.path.join(copy, "metrics.jsonl"))
             if r["kind"] == "eval"]
    assert evals == [10, 20]


def test_sigterm_during_sample_and_export_exits_with_one_line(copy, capsys, monkeypatch):
    """--mode=sample stopped after its first picture and --mode=export stopped while it
    restores: exit code 143 and one line each; the picture written is whole, nothing else
    is written."""
    real_save = sampling.save_png

    def save_then_signal(path, grid):
        out = real_save(path, grid)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(sampling, "save_png", save_then_signal)
    code, out, line = cli(smoke_config(), copy, capsys, mode="sample")
    assert code == 143 and line == "", line
    assert out.splitlines()[-1] == ("Stopped by SIGTERM during --mode=sample: the pictures "
                                    "written so far are kept; the same command draws them "
                                    "all again.")
    written = os.listdir(os.path.join(copy, "samples"))
    assert len(written) == 1 and written[0].endswith(".png"), written  # whole, no tmp file
    from PIL import Image
    Image.open(os.path.join(copy, "samples", written[0])).load()

    monkeypatch.undo()
    os.remove(os.path.join(copy, "params_20.npz"))
    before = tree(copy)
    real_restore = experiment.restore_params

    def restore_then_signal(*args, **kwargs):
        out = real_restore(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(experiment, "restore_params", restore_then_signal)
    code, out, line = cli(smoke_config(), copy, capsys, mode="export")
    assert code == 143 and line == ""
    assert out.splitlines()[-1].startswith("Stopped by SIGTERM during --mode=export: nothing "
                                           "was written")
    assert tree(copy) == before


# -------------------------------------------------------------- resuming another config

@pytest.mark.slow
def test_a_changed_config_is_recorded_on_resume_and_another_data_set_refused(copy, capsys):
    """Resuming with loss.beta = 4 and 30 steps: the changes are printed and appended to
    config_history.jsonl with the step they take effect at; config.json holds the latest.
    Resuming with another binarization (the data set the run was trained on) is refused
    with exit code 2, changing nothing."""
    first = [json.loads(line) for line in open(os.path.join(copy, "config_history.jsonl"))]
    assert [(r["step"], r["resumed"], r["changed"]) for r in first] == [(0, False, {})]
    code, out, _ = cli(smoke_config(loss__beta=4.0, train__num_steps=30), copy, capsys)
    assert code == 0
    assert ('Resuming at step 20 with a config that differs from the previous start\'s '
            '(config.json): loss.beta 1.0 -> 4.0, train.num_steps 20 -> 30. Recorded in '
            'config_history.jsonl.') in out
    history = [json.loads(line) for line in open(os.path.join(copy, "config_history.jsonl"))]
    assert [(r["step"], r["resumed"]) for r in history] == [(0, False), (20, True)]
    assert history[1]["changed"] == {"loss.beta": [1.0, 4.0], "train.num_steps": [20, 30]}
    assert history[0]["config"]["loss"]["beta"] == 1.0
    assert json.load(open(os.path.join(copy, "config.json"))) == history[1]["config"]

    before = tree(copy)
    code, _, line = cli(smoke_config(data__binarization="static", train__num_steps=40),
                        copy, capsys)
    assert code == 2, line
    assert ("config.data.binarization='dynamic' there (its config.json), 'static' here"
            in line and "--config.data.binarization=dynamic" in line), line
    assert tree(copy) == before


@pytest.mark.slow
def test_the_on_device_path_refuses_another_training_set_on_resume(tmp_path, capsys):
    """The same npz file name with other pixels (same shapes): a run on the on-device input
    pipeline refuses to resume, as the streaming one does (the fingerprint saved with each
    checkpoint), with exit code 3; nothing changes."""
    path = str(tmp_path / "synthetic_train.npz")
    rng = np.random.default_rng(0)
    np.savez(path, train=rng.integers(0, 256, (64, 28, 28), np.uint8),
             test=rng.integers(0, 256, (8, 28, 28), np.uint8))
    workdir = str(tmp_path / "run")
    config = smoke_config(data__name="npz", data__dir=path, data__pipeline="device",
                          train__num_steps=4, train__checkpoint_every_steps=2,
                          train__eval_every_steps=4, train__steps_per_call=2)
    assert cli(config, workdir, capsys)[0] == 0
    saved = checkpoint.read_data_state(checkpoint.manager(
        os.path.join(workdir, "checkpoints"), read_only=True), 4)
    assert saved["step"] == 4 and saved["batch_size"] == 32 and "grain" not in saved
    np.savez(path, train=rng.integers(0, 256, (64, 28, 28), np.uint8),
             test=rng.integers(0, 256, (8, 28, 28), np.uint8))
    before = tree(workdir)
    config.train.num_steps = 6
    code, _, line = cli(config, workdir, capsys)
    assert code == 3, line
    assert f"{workdir}/checkpoints/4 was written training with source=" in line
    assert "the training set changed" in line and "a new --workdir" in line
    assert tree(workdir) == before


# --------------------------------------------------------------- every checkpoint damaged

def test_every_checkpoint_damaged_is_refused_keeping_the_run_history(copy, capsys):
    """Both checkpoints fail their checksum: training refuses (exit code 4) naming them and
    how to start afresh on purpose, instead of starting again from step 0 and rewriting
    metrics.jsonl; nothing is moved or rewritten."""
    for step in (10, 20):
        files = [f for f in glob.glob(os.path.join(copy, "checkpoints", str(step), "state",
                                                   "**", "d", "*"), recursive=True)
                 if os.path.isfile(f)]
        target = max(files, key=os.path.getsize)
        raw = bytearray(open(target, "rb").read())
        for i in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[i] ^= 0xFF
        open(target, "wb").write(bytes(raw))
    os.remove(os.path.join(copy, ".lock"))  # the run's lock file is its own to write
    before = tree(copy)
    code, out, line = cli(smoke_config(), copy, capsys)
    assert code == 4, line
    ckpts = os.path.join(copy, "checkpoints")
    assert line.startswith(f"ERROR: CheckpointError: No checkpoint in {ckpts} restores: 2 "
                           f"failed ({ckpts}/20, {ckpts}/10;"), line
    assert "Nothing was changed" in line and "move the workdir aside" in line
    assert f"delete {ckpts} and {copy}/metrics.jsonl" in line
    after = tree(copy)
    after.pop(".lock")
    assert after == before


# --------------------------------------------------------------------------------- smaller

def test_a_step_without_a_checkpoint_names_the_steps_there(copy, capsys):
    code, _, line = cli(smoke_config(), copy, capsys, mode="eval", step=999)
    assert code == 4
    assert (f"No checkpoint at step 999 in {copy}/checkpoints; the steps there are [10, 20]"
            in line), line


def test_tilde_in_workdir_and_data_dir_is_the_home_folder(copy, tmp_path, capsys,
                                                          monkeypatch):
    """--workdir=~/run and --config.data.dir=~/fmnist read the user's home, as a shell
    would (they created a folder literally named '~')."""
    home = tmp_path / "home"
    home.mkdir()
    os.symlink(copy, home / "run")
    os.symlink(FASHION_MNIST_DIR, home / "fmnist")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    code, _, line = cli(smoke_config(data__dir="~/fmnist", eval__num_test_images=20,
                                     eval__num_importance_samples=0, eval__iwae_k=0),
                        "~/run", capsys, mode="eval")
    assert code == 0, line
    assert json.load(open(os.path.join(copy, "eval.json")))["step"] == 20
    assert not glob.glob(str(tmp_path / "**" / "~"), recursive=True)


@pytest.mark.slow
def test_a_damaged_compilation_cache_entry_is_replaced_and_said_once(tmp_path):
    """Entries of the persistent cache cut short on disk: the next run removes each,
    says so in one line, compiles it and writes it anew, whole (JAX alone kept it and
    warned at every run)."""
    cache = str(tmp_path / "cache")
    code = ("import jax, jax.numpy as jnp\nfrom vae_jax.run import jit_cache\n"
            "jit_cache.enable(None)\n"
            "print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).sum()))\n")

    def run() -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], cwd=_runs.ROOT, text=True,
                              capture_output=True, env=_runs.env(cache), timeout=120)

    first = run()
    assert first.returncode == 0, first.stderr
    entries = sorted(glob.glob(os.path.join(cache, "*-cache")))
    assert entries
    sizes = [os.path.getsize(p) for p in entries]
    for p in entries:
        open(p, "r+b").truncate(40)
    second = run()
    assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
    removed = [line for line in second.stderr.splitlines()
               if line.startswith("Removed a damaged entry of the compilation cache")]
    assert len(removed) == len(entries), second.stderr
    assert "Error reading persistent compilation cache" not in second.stderr
    assert [os.path.getsize(p) for p in entries] == sizes  # written again, whole


# ------------------------------------------------------------ a stop during a compilation

def _stop_while_compiling(workdir: str, cache: str, what: str, sig: int, *flags: str):
    """Run a small deep HVAE's command (5 stochastic layers; its train step takes seconds
    to compile with a cold cache), send ``sig`` when it says it is compiling ``what``;
    return (exit code, output)."""
    config = os.path.join(_runs.ROOT, "experiments", "configs", "fashion_mnist_deep_hvae.py")
    cmd = [sys.executable, "-m", "experiments.main", f"--config={config}:binary",
           f"--workdir={workdir}", "--config.train.num_steps=2",
           "--config.eval.num_test_images=64", "--config.model.encoder_blocks=1",
           "--config.model.decoder_blocks=(1, 1, 2, 1)", "--config.model.widths=16", *flags]
    env = _runs.env(cache)
    env.pop("VAE_JAX_PROGRESS", None)
    proc = subprocess.Popen(cmd, cwd=_runs.ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and line.startswith(f"compiling {what} ..."):
                proc.send_signal(sig)
                sent = True
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert sent, "".join(lines)[-3000:]
    return code, "".join(lines)


@pytest.mark.slow
@requires_fashion_mnist
def test_a_stop_while_compiling_acts_before_the_compilation_ends(tmp_path):
    """SIGINT while a deep HVAE's train step compiles (the research configs' take tens of
    seconds on a CPU with a cold cache) saves step 0 and exits 130 without waiting for the
    compilation; SIGTERM while --mode=eval compiles the evaluation exits 143 with one line.
    Either way the compiler, which cannot be stopped, is left behind without aborting the
    process."""
    cache, workdir = str(tmp_path / "cache"), str(tmp_path / "run")
    code, out = _stop_while_compiling(workdir, cache, "the train step", signal.SIGINT)
    assert code == 130, out[-3000:]
    assert "Stopped by SIGINT at step 0/2 while compiling the train step; checkpoint saved" \
        in out, out[-3000:]
    assert not re.search(r"^step [12]/2", out, re.M), out[-3000:]
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["0"]
    assert "Fatal" not in out and "terminate called" not in out, out[-3000:]

    code, out = _stop_while_compiling(workdir, cache, "the evaluation", signal.SIGTERM,
                                      "--mode=eval")
    assert code == 143, out[-3000:]
    assert "Stopped by SIGTERM during --mode=eval: nothing was written" in out, out[-3000:]
    assert not os.path.exists(os.path.join(workdir, "eval.json"))
    assert "Fatal" not in out and "terminate called" not in out, out[-3000:]
