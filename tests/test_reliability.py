"""Reliability, tested by doing the bad thing for real: kills (SIGKILL, SIGTERM) of the real
launcher in subprocesses, corrupted checkpoint files, NaN losses, another model's checkpoint.

Runs use the smoke config (real Fashion-MNIST, a 32-unit MLP) on CPU, where XLA is
deterministic, so "equal" below means bit-identical.
"""

from __future__ import annotations

import glob
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runs  # noqa: E402
from conftest import requires_fashion_mnist  # noqa: E402
from vae_jax import errors, losses, train  # noqa: E402
from vae_jax.run import build, checkpoint, experiment, logs, runtime
from vae_jax.train import optim

pytestmark = requires_fashion_mnist


smoke_config = _runs.smoke_config


def ckpt_steps(workdir) -> list[int]:
    folder = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def records(workdir, kind):
    return [r for r in logs.MetricsLog.read(os.path.join(workdir, "metrics.jsonl"))
            if r["kind"] == kind]


def snapshot(folder) -> dict:
    out = {}
    for root, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(root, f)
            st = os.stat(p)
            out[os.path.relpath(p, folder)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """One uninterrupted 20-step run: checkpoints at 10 and 20, its final state. Saved
    synchronously (config.train.async_checkpoint=False); the runs resuming from copies of
    it save in the background (the default)."""
    workdir = str(tmp_path_factory.mktemp("base"))
    state = experiment.train_and_evaluate(smoke_config(train__async_checkpoint=False), workdir)
    return workdir, jax.device_get(state)


# ------------------------------------------------------------------------ kill and resume

@pytest.mark.slow
def test_kill_and_resume_is_bit_identical(tmp_path):
    """SIGTERM (checkpoints saved synchronously), SIGKILL inside the background write of
    a checkpoint (asynchronous, the default), SIGKILL at a random moment, then a plain
    rerun: the final state and metrics.jsonl equal an uninterrupted run's exactly."""
    cache, workdir = _runs.shared_cache(), str(tmp_path / "killed")
    overrides = ["--config.train.num_steps=40"]

    # 1. A real SIGTERM right after step 15's metrics: the handler lets the loop finish the
    #    call, save step 15 (not a checkpoint boundary) and exit 128 + 15 with a message.
    r = _runs.run(_runs.command(workdir, *overrides, "--config.train.async_checkpoint=False",
                                driver=True), _runs.env(cache, VAE_JAX_FAULT="sigterm_after:15"))
    assert r.returncode == 128 + signal.SIGTERM, r.stdout[-2000:] + r.stderr[-3000:]
    assert "Stopped by SIGTERM at step 15/40; checkpoint saved" in r.stdout
    assert ckpt_steps(workdir) == [10, 15]

    # 2. SIGKILL inside the write of checkpoint 20, on orbax's background thread while the
    #    loop trains on: its arrays sit in orbax's tmp folder, never renamed, so step 20
    #    does not exist; the metrics of steps 16-20 (and maybe of the next calls, up to the
    #    save of step 30, which waits for 20's) were logged.
    r = _runs.run(_runs.command(workdir, *overrides, driver=True),
                  _runs.env(cache, VAE_JAX_FAULT="sigkill_in_checkpoint:20"))
    assert r.returncode == -signal.SIGKILL, r.stdout[-2000:] + r.stderr[-3000:]
    assert "SIGKILL inside checkpoint 20's write, on thread background" in r.stdout
    assert ckpt_steps(workdir) == [10, 15]
    assert glob.glob(os.path.join(workdir, "checkpoints", "20.orbax-checkpoint-tmp*"))
    assert max(r["step"] for r in records(workdir, "train")) in (20, 25, 30)

    # 3. SIGKILL from outside at a random moment once this run trains again: on resume it
    #    rewrites metrics.jsonl without steps after 15, then logs step 20 anew.
    seed = random.randrange(10**6)
    delay = random.Random(seed).uniform(0.0, 0.3)
    metrics = os.path.join(workdir, "metrics.jsonl")
    before = os.stat(metrics).st_mtime_ns
    with subprocess.Popen(_runs.command(workdir, *overrides), env=_runs.env(cache),
                          cwd=_runs.ROOT, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL) as p:
        deadline = time.time() + 240
        while p.poll() is None and (os.stat(metrics).st_mtime_ns == before or max(
                r["step"] for r in records(workdir, "train")) <= 15):
            assert time.time() < deadline
            time.sleep(0.005)
        time.sleep(delay)
        killed_at = max((r["step"] for r in records(workdir, "train")), default=0)
        p.send_signal(signal.SIGKILL)
        p.wait()
    print(f"random kill: seed {seed}, {delay:.2f} s after resuming, last logged step "
          f"{killed_at}, exit {p.returncode}")

    # 4. The same command again, to the end.
    r = _runs.run(_runs.command(workdir, *overrides), _runs.env(cache))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]

    # The uninterrupted run, in this process.
    reference = str(tmp_path / "reference")
    config = smoke_config(train__num_steps=40)
    ref_state = experiment.train_and_evaluate(config, reference)
    _runs.assert_same_state(_runs.final_state(workdir, config), ref_state)
    _runs.assert_same_state(_runs.final_state(reference, config), ref_state)

    # Each step exactly once, and the very same numbers as the uninterrupted run.
    assert [r["step"] for r in records(workdir, "train")] == list(range(5, 41, 5))
    assert [r["step"] for r in records(workdir, "eval")] == [10, 20, 30, 40]
    assert records(workdir, "train") == records(reference, "train")
    assert records(workdir, "eval") == records(reference, "eval")


@pytest.mark.slow
def test_same_seed_is_bit_identical(base, tmp_path):
    """Determinism on CPU: a second run of the same config equals the first bit for bit;
    another seed does not (so the comparison can fail). The second run saves in the
    background (the first synchronously) and went on training, donating its state, while
    each write ran: its checkpoint of step 10 is still step 10's state, bit for bit (and
    passes its checksum)."""
    workdir, state = base
    again = experiment.train_and_evaluate(smoke_config(), str(tmp_path / "again"))
    _runs.assert_same_state(again, state)
    config, shape = smoke_config(), (28, 28, 1)
    model = build.build_model(config, shape)
    at_10 = [experiment.restore_state(config, w, model, shape, step=10)
             for w in (workdir, str(tmp_path / "again"))]
    assert int(at_10[0].step) == 10
    _runs.assert_same_state(*at_10)
    other = train.create_train_state(jax.random.key(1), build.build_model(
        smoke_config(), (28, 28, 1)), optax.adam(1e-3), (28, 28, 1))
    assert not np.array_equal(jax.tree.leaves(other.params)[0],
                              jax.tree.leaves(state.params)[0])


@pytest.mark.slow
def test_sigint_saves_and_exits_with_a_message(base, tmp_path, monkeypatch, capsys):
    """A real SIGINT (Ctrl-C) to this process after step 25's metrics: the run finishes the
    call, saves step 25, says how to resume and raises SystemExit(130); resuming from it
    ends exactly where an uninterrupted run does."""
    workdir, _ = base
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    write = logs.MetricsLog.write

    def write_then_interrupt(self, step, kind, values):
        write(self, step, kind, values)
        if step == 25 and kind == "train":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(logs.MetricsLog, "write", write_then_interrupt)
    config = smoke_config(train__num_steps=30)
    # the handler in place before the run: default_int_handler in a terminal, SIG_IGN in a
    # process started with SIGINT ignored (nohup, `&` in a script, some CI runners)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(SystemExit) as e:
        experiment.train_and_evaluate(config, copy)
    assert isinstance(e.value, errors.TrainingInterrupted) and e.value.code == 130
    assert "Stopped by SIGINT at step 25/30; checkpoint saved" in capsys.readouterr().out
    assert ckpt_steps(copy) == [10, 20, 25]
    assert signal.getsignal(signal.SIGINT) == before  # handler restored
    monkeypatch.undo()
    resumed = experiment.train_and_evaluate(config, copy)
    assert [r["step"] for r in records(copy, "train")] == [5, 10, 15, 20, 25, 30]
    straight = str(tmp_path / "straight")
    shutil.copytree(workdir, straight)
    _runs.assert_same_state(resumed, experiment.train_and_evaluate(config, straight))


# ---------------------------------------------------------------------------- checkpoints

def _small_state(seed):
    k = jax.random.key(seed)
    return {"params": {"w": jax.random.normal(k, (64, 64)), "b": jnp.arange(8.0)},
            "step": jnp.asarray(seed, jnp.int32)}


def _damage(step_dir, how):
    files = [f for f in glob.glob(os.path.join(step_dir, "state", "**", "d", "*"),
                                  recursive=True) if os.path.isfile(f)]
    target = max(files, key=os.path.getsize)  # the 64x64 array's chunk
    raw = bytearray(open(target, "rb").read())
    if how == "truncated":
        raw = raw[: len(raw) // 2]
    elif how == "bitflip":  # same length: orbax alone would restore wrong numbers silently
        for i in range(len(raw) // 2, len(raw) // 2 + 64):
            raw[i] ^= 0xFF
    with open(target, "wb") as f:
        f.write(bytes(raw))
    return target


def test_manager_keeps_the_newest_steps_without_deprecated_orbax_arguments(tmp_path):
    """max_to_keep goes to orbax as a preservation policy and the items as a handler
    registry (orbax 0.12 deprecates its max_to_keep / item_handlers arguments)."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        mngr = checkpoint.manager(str(tmp_path / "ckpt"), max_to_keep=2)
        for step in (10, 20, 30, 40):
            checkpoint.save(mngr, step, _small_state(step))
    assert mngr.all_steps() == [30, 40]
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["30", "40"]
    _runs.assert_same_state(checkpoint.restore(mngr, _small_state(0)), _small_state(40))
    mngr.close()


@pytest.mark.parametrize("how", ["truncated", "bitflip"])
def test_damaged_checkpoint_is_reported_skipped_and_kept(tmp_path, how, capsys):
    mngr = checkpoint.manager(str(tmp_path / "ckpt"))
    checkpoint.save(mngr, 10, _small_state(10))
    checkpoint.save(mngr, 20, _small_state(20))
    damaged = _damage(checkpoint.step_path(mngr, 20), how)
    with pytest.raises(errors.CheckpointError, match=checkpoint.step_path(mngr, 20)):
        checkpoint.restore(mngr, _small_state(0), 20)
    state, step, skipped = checkpoint.restore_latest_good(mngr, _small_state(0))
    assert step == 10 and [p for p, _ in skipped] == [checkpoint.step_path(mngr, 20)]
    _runs.assert_same_state(state, _small_state(10))
    out = capsys.readouterr().out
    assert "skipping damaged checkpoint " + checkpoint.step_path(mngr, 20) in out
    assert os.path.exists(damaged)  # never deleted
    mngr.close()


@pytest.mark.slow
def test_training_resumes_past_a_damaged_checkpoint(base, tmp_path):
    """Step 20 corrupted on disk: the run reports it, moves it to checkpoints.damaged (not
    deleted), resumes from step 10 and ends bit-identical to the undamaged run."""
    workdir, state = base
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    _damage(os.path.join(copy, "checkpoints", "20"), "bitflip")
    resumed = experiment.train_and_evaluate(smoke_config(), copy)
    _runs.assert_same_state(resumed, state)
    kept = os.listdir(os.path.join(copy, "checkpoints.damaged"))
    assert len(kept) == 1 and kept[0].startswith("20.")
    assert ckpt_steps(copy) == [10, 20]
    assert [r["step"] for r in records(copy, "train")] == [5, 10, 15, 20]


def test_checkpoint_of_another_model_names_the_parameter(base):
    workdir, _ = base
    before = snapshot(workdir)
    config = smoke_config(model__hidden=(48,))
    with pytest.raises(checkpoint.CheckpointMismatchError) as e:
        experiment.train_and_evaluate(config, workdir)
    msg = str(e.value)
    print(msg)
    assert ("builds: params/params/decoder/hidden_0/bias: checkpoint shape (32,), config "
            "shape (48,)") in msg
    assert "params/params/encoder" in msg and "checkpoint shape (784, 32)" in msg
    assert "config shape (784, 48)" in msg and os.path.join(workdir, "checkpoints") in msg
    assert snapshot(workdir) == before


def test_checkpoint_with_an_ema_and_a_config_without_one_says_which_setting(base):
    """The same model with and without an EMA kept (train.ema_decay): the paragraph names
    the setting and the value that resumes, not a list of parameters; nothing written."""
    workdir, _ = base   # the smoke config keeps an EMA
    before = snapshot(workdir)
    with pytest.raises(checkpoint.CheckpointMismatchError) as e:
        experiment.train_and_evaluate(smoke_config(train__ema_decay=0.0), workdir)
    msg = str(e.value)
    assert "keeps an EMA of the parameters and this config does not" in msg
    assert "--config.train.ema_decay=0.999" in msg and "params/" not in msg
    assert snapshot(workdir) == before


def test_no_pickle_in_checkpoints(base):
    workdir, _ = base
    for root, _, files in os.walk(os.path.join(workdir, "checkpoints")):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                head = fh.read(2)
            assert head[:1] != b"\x80", f"{f} looks like a pickle"  # pickle protocol 2+


@pytest.mark.parametrize("killed_at", [20, 10])
@pytest.mark.slow
def test_a_run_killed_in_an_evaluation_keeps_its_state_and_the_rerun_makes_it(
        base, tmp_path, monkeypatch, killed_at):
    """A step is saved before it is evaluated (the last evaluation can take minutes for a
    deep model on the full test set): an evaluation that dies leaves the step's checkpoint
    complete, and the same command again makes the evaluation it owes before training on
    (20: the finished run's last; 10: one midway), so that metrics.jsonl ends equal to the
    uninterrupted run's."""
    workdir, state = base
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    for step in range(killed_at, 21, 10):  # resume before killed_at and train to it
        shutil.rmtree(os.path.join(copy, "checkpoints", str(step)))
    real = experiment.suite.run_suite

    def dies(*args, **kwargs):
        raise KeyboardInterrupt("killed during the evaluation")

    monkeypatch.setattr(experiment.suite, "run_suite", dies)
    with pytest.raises(KeyboardInterrupt):
        experiment.train_and_evaluate(smoke_config(), copy)
    assert ckpt_steps(copy) == list(range(10, killed_at + 1, 10))
    assert killed_at not in [r["step"] for r in records(copy, "eval")]
    monkeypatch.setattr(experiment.suite, "run_suite", real)
    experiment.train_and_evaluate(smoke_config(), copy)
    _runs.assert_same_state(_runs.final_state(copy, smoke_config()), state)
    assert [r["step"] for r in records(copy, "eval")] == [10, 20]
    assert records(copy, "eval") == records(workdir, "eval")
    assert records(copy, "train") == records(workdir, "train")


def test_evaluations_during_training_follow_num_test_images(base, tmp_path, monkeypatch):
    """config.eval.num_test_images = n: the in-run evaluations see the first n test images
    (before, they always ran the whole test set, minutes for a deep model)."""
    workdir, _ = base
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    shutil.rmtree(os.path.join(copy, "checkpoints", "20"))  # resume at 10, evaluate at 20
    seen = []
    real = experiment.suite.run_suite

    def spy(suite, params, images, key, **kwargs):
        seen.append(np.asarray(images))
        return real(suite, params, images, key, **kwargs)

    monkeypatch.setattr(experiment.suite, "run_suite", spy)
    experiment.train_and_evaluate(smoke_config(eval__num_test_images=37), copy)
    test_images = experiment.data.load("fashion_mnist").test_images
    assert len(seen) == 1 and np.array_equal(seen[0], test_images[:37])


# ------------------------------------------------------------------------------ non-finite

ABSURD_LR = 1e30  # Adam moves every weight by ~lr at once: the next forward pass overflows


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_step_and_metric_keeping_last_checkpoint(base, tmp_path):
    workdir, state = base
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    config = smoke_config(train__num_steps=40, optim__learning_rate=ABSURD_LR)
    with pytest.raises(errors.NonFiniteLossError) as e:
        experiment.train_and_evaluate(config, copy)
    msg = str(e.value)
    print(msg)
    assert "'loss'" in msg and "at step 2" in msg  # steps 21, 22, ...: the run resumed at 20
    assert "The last good checkpoint, step 20" in msg
    assert ckpt_steps(copy) == [10, 20]
    _runs.assert_same_state(_runs.final_state(copy, config), state)


@pytest.mark.slow
@pytest.mark.xla_defaults  # two programs' updates agree bit for bit
def test_skip_nonfinite_discards_exactly_the_bad_updates():
    """A beta schedule that is NaN at step 1 only: with skip, step 1 changes nothing but the
    counter and step 0 is the ordinary update; without skip, NaN reaches the weights."""
    config = smoke_config()
    model = build.build_model(config, (28, 28, 1))
    tx = optax.adam(1e-3)
    loss_fn = lambda p, x, k, beta: losses.get("elbo")(p, x, k, model=model, beta=beta)
    nan_at_1 = lambda s: jnp.where(s == 1, jnp.nan, 1.0)
    batch = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1)), jnp.uint8)
    key = jax.random.key(0)

    def run(beta_fn, skip, steps):
        step = jax.jit(lambda s, b, k: train.train_step(
            s, b, k, loss_fn=loss_fn, optimizer=tx, binarization="dynamic", beta_fn=beta_fn,
            ema_decay=0.9, skip_nonfinite=skip))
        s = train.create_train_state(jax.random.key(1), model, tx, (28, 28, 1))
        out = []
        for _ in range(steps):
            s, m = step(s, batch, key)
            out.append((s, m))
        return out

    skipped = run(nan_at_1, True, 3)
    poisoned = run(nan_at_1, False, 2)
    assert [float(m["skipped"]) for _, m in skipped] == [0.0, 1.0, 0.0]
    assert int(skipped[1][0].step) == 2
    _runs.assert_same_state(skipped[1][0].replace(step=skipped[0][0].step),
                            skipped[0][0])  # nothing moved but the counter
    _runs.assert_same_state(skipped[0][0], poisoned[0][0])  # a good step is the plain update
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(skipped[2][0]))
    # Without skip the NaN reaches the weights (the encoder's: beta only scales the KL).
    assert any(np.isnan(np.asarray(x)).any() for x in jax.tree.leaves(poisoned[1][0].params))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # images of a wreck
def test_skip_option_finishes_and_counts(base, tmp_path):
    workdir, _ = base
    copy = str(tmp_path / "copy")
    shutil.copytree(workdir, copy)
    config = smoke_config(train__num_steps=30, optim__learning_rate=ABSURD_LR,
                          train__on_nonfinite="skip")
    state = experiment.train_and_evaluate(config, copy)
    skipped = sum(r["skipped"] for r in records(copy, "train") if r["step"] > 20)
    assert 0 < skipped <= 10
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_grad_clip_scales_by_the_global_norm():
    """clip_by_global_norm(c) rescales every leaf by c / ||g|| (one factor for the whole
    tree). With Adam's eps large the update is ~ lr g / eps, so the clipped update for g
    equals the unclipped update for g * c / ||g||."""
    base_cfg = smoke_config(optim__eps=1e6)
    clipped_cfg = smoke_config(optim__eps=1e6, optim__grad_clip_norm=1.0)
    g = {"a": jnp.full((3,), 4.0), "b": jnp.full((2, 2), -3.0)}
    norm = float(optax.global_norm(g))  # sqrt(3*16 + 4*9) = sqrt(84)
    params = jax.tree.map(jnp.zeros_like, g)
    tx_c, tx = optim.make_optimizer(clipped_cfg.optim), optim.make_optimizer(base_cfg.optim)
    u_c, _ = tx_c.update(g, tx_c.init(params), params)
    u, _ = tx.update(jax.tree.map(lambda x: x / norm, g), tx.init(params), params)
    for x, y in zip(jax.tree.leaves(u_c), jax.tree.leaves(u)):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    u_unclipped, _ = tx.update(g, tx.init(params), params)
    assert not np.allclose(jax.tree.leaves(u_unclipped)[0], jax.tree.leaves(u_c)[0], rtol=1e-3,
                           atol=0)


# --------------------------------------------------------------- one run per workdir

tree = _runs.tree


def one_paragraph_error(stderr: str, kind: str) -> str:
    """The launcher's one ERROR line for ``kind``; no traceback anywhere on stderr."""
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "Event loop is closed" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(lines) == 1 and lines[0].startswith(f"ERROR: {kind}: "), stderr[-3000:]
    return lines[0]


def wait_for(path, proc, timeout=240):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"exited with {proc.returncode} before {path}"
        assert time.time() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.05)


def test_workdir_lock_names_its_holder_and_frees_on_exit(tmp_path):
    """In process: a second lock on a held workdir is refused naming this pid; the probe
    that runs before validation writes nothing; releasing frees it."""
    workdir = str(tmp_path / "run")
    with runtime.WorkdirLock(workdir):
        holder = json.load(open(os.path.join(workdir, ".lock")))
        assert holder["pid"] == os.getpid() and holder["command"] and holder["host"]
        before = tree(workdir)
        for attempt in (lambda: runtime.check_not_busy(workdir),
                        lambda: runtime.WorkdirLock(workdir).__enter__()):
            with pytest.raises(errors.WorkdirBusy) as e:
                attempt()
            assert f"pid {os.getpid()}" in str(e.value) and "another --workdir" in str(e.value)
            assert errors.exit_code(e.value) == 6
        assert tree(workdir) == before
    runtime.check_not_busy(workdir)
    with runtime.WorkdirLock(workdir):
        pass


def test_a_failed_write_names_path_error_and_fix(tmp_path):
    """A real failed write (a folder that vanished) and tensorstore's wrapped ENOSPC both
    become one WriteError paragraph; an error without an OS error behind it passes."""
    gone = tmp_path / "gone"
    gone.mkdir()
    gone.rmdir()
    guard = runtime.WriteGuard(lambda: "The last good checkpoint, step 10 in /x, is kept.")
    with pytest.raises(errors.WriteError) as e:
        with guard(str(gone / "metrics.jsonl")):
            open(gone / "metrics.jsonl", "a").write("{}\n")
    msg = str(e.value)
    assert str(gone / "metrics.jsonl") in msg and "No such file or directory" in msg
    assert "step 10" in msg and "restore the missing folder" in msg and "same command" in msg
    wrapped = ValueError('RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local '
                         'file "/ck/20.orbax-checkpoint-tmp/": Failed to write 9 bytes: No '
                         "space left on device [os_error_code='28']")
    with pytest.raises(errors.WriteError, match="No space left on device .ENOSPC.*free space"):
        with guard("/ck/20"):
            raise RuntimeError("save failed") from wrapped
    with pytest.raises(KeyError):
        with guard("/ck/20"):
            raise KeyError("a bug, not a write")


@pytest.mark.slow
def test_one_training_run_per_workdir(base, tmp_path):
    """A run paused at step 15 holds the workdir: the same command again exits at once
    (code 6) naming its pid and writes nothing; --mode=eval reads the workdir meanwhile;
    the first run then ends with each step once, equal to the uninterrupted run. A run
    SIGKILLed while holding the lock leaves no stale lock: its rerun trains."""
    cache, workdir, pause = _runs.shared_cache(), str(tmp_path / "run"), tmp_path / "pause"
    pause.mkdir()
    first = subprocess.Popen(_runs.command(workdir, driver=True), cwd=_runs.ROOT,
                             env=_runs.env(cache, VAE_JAX_FAULT="pause_after:15",
                                           VAE_JAX_PAUSE_DIR=str(pause)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(pause / "paused", first)
        before = tree(workdir)
        assert json.loads(before[".lock"][3])["pid"] == first.pid
        t0 = time.time()
        r = _runs.run(_runs.command(workdir), _runs.env(cache))
        print(f"busy run refused in {time.time() - t0:.1f} s")
        assert r.returncode == 6, r.stderr[-3000:]
        line = one_paragraph_error(r.stderr, "WorkdirBusy")
        assert f"pid {first.pid}" in line and f"--workdir={workdir}" in line
        assert tree(workdir) == before, "the refused run wrote in the workdir"

        r = _runs.run(_runs.command(workdir, "--mode=eval", "--config.eval.num_test_images=200"),
                      _runs.env(cache))
        assert r.returncode == 0, r.stderr[-3000:]
        assert json.load(open(os.path.join(workdir, "eval.json")))["step"] == 10
    finally:
        (pause / "go").touch()
        out, err = first.communicate(timeout=240)
    assert first.returncode == 0, err[-3000:]
    assert [r["step"] for r in records(workdir, "train")] == [5, 10, 15, 20]
    assert [r["step"] for r in records(workdir, "eval")] == [10, 20]
    _runs.assert_same_state(_runs.final_state(workdir, smoke_config()), base[1])

    # SIGKILL while holding the lock (paused at step 25 of 30), then the same command.
    (pause / "paused").unlink()
    (pause / "go").unlink()
    with subprocess.Popen(_runs.command(workdir, "--config.train.num_steps=30", driver=True),
                          cwd=_runs.ROOT, env=_runs.env(cache, VAE_JAX_FAULT="pause_after:25",
                                                        VAE_JAX_PAUSE_DIR=str(pause)),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as killed:
        wait_for(pause / "paused", killed)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    r = _runs.run(_runs.command(workdir, "--config.train.num_steps=30"), _runs.env(cache))
    assert r.returncode == 0, r.stderr[-3000:]
    assert [r["step"] for r in records(workdir, "train")] == [5, 10, 15, 20, 25, 30]


# -------------------------------------------------------------------------- full disk

@pytest.fixture
def small_filesystem(tmp_path):
    """A real 8 MB filesystem (tmpfs; needs root and mount permission)."""
    folder = tmp_path / "fs"
    folder.mkdir()
    # CI runs as root on a machine that mounts tmpfs: there a missing mount is a failure,
    # never a silent skip; elsewhere (a developer without root) the test is skipped.
    give_up = pytest.fail if os.environ.get("CI") == "true" else pytest.skip
    if os.geteuid() != 0:
        give_up("mounting a size-limited tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        give_up(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.slow
def test_full_disk_stops_with_one_paragraph_and_resumes_bit_identical(base, tmp_path,
                                                                     small_filesystem):
    """The filesystem fills up right after checkpoint 10 (a file takes every free byte):
    the run stops with exit code 7 and one paragraph naming the path, 'No space left on
    device', the last good checkpoint and the fix; checkpoint 10 stays the latest, no
    partial checkpoint is left, metrics.jsonl ends at step 10. Freeing the space and
    rerunning the same command ends bit-identical to the uninterrupted run."""
    cache, workdir = _runs.shared_cache(), str(small_filesystem / "run")
    filler = small_filesystem / "filler"
    r = _runs.run(_runs.command(workdir, driver=True),
                  _runs.env(cache, VAE_JAX_FAULT="fill_disk_after_checkpoint:10",
                            VAE_JAX_FILL=str(filler)))
    assert r.returncode == 7, r.stdout[-2000:] + r.stderr[-3000:]
    line = one_paragraph_error(r.stderr, "WriteError")
    print(line)
    assert f"Cannot write {workdir}" in line and "No space left on device (ENOSPC)" in line
    assert f"The last good checkpoint, step 10 in {workdir}/checkpoints, is kept" in line
    assert "free space on that filesystem, then run the same command again" in line
    assert os.listdir(os.path.join(workdir, "checkpoints")) == ["10"]
    assert max(r["step"] for r in logs.MetricsLog.read(
        os.path.join(workdir, "metrics.jsonl"))) == 10

    filler.unlink()
    r = _runs.run(_runs.command(workdir), _runs.env(cache))
    assert r.returncode == 0, r.stderr[-3000:]
    _runs.assert_same_state(_runs.final_state(workdir, smoke_config()), base[1])
    assert records(workdir, "train") == records(base[0], "train")
    assert records(workdir, "eval") == records(base[0], "eval")


@pytest.mark.slow
def test_a_background_write_that_fails_is_reported_one_save_late(base, tmp_path):
    """Resumed at step 20 (of 40), checkpoint 30's write fails (ENOSPC) in orbax's
    background finalisation after the loop has trained on and logged step 35: the run
    stops with exit code 7 and one paragraph naming checkpoint 30's path and step 20 as
    the last good checkpoint; steps 10 and 20 are intact (20 restores to the uninterrupted
    run's state), 30 leaves no folder, metrics.jsonl ends at step 20."""
    cache, workdir = _runs.shared_cache(), str(tmp_path / "run")
    shutil.copytree(base[0], workdir)
    r = _runs.run(_runs.command(workdir, "--config.train.num_steps=40", driver=True),
                  _runs.env(cache, VAE_JAX_FAULT="fail_checkpoint_write:30"))
    assert r.returncode == errors.EXIT_CODES[errors.WriteError], r.stdout[-2000:] + r.stderr
    assert "failing checkpoint 30's write on thread background after the loop logged step 35" \
        in r.stdout
    line = one_paragraph_error(r.stderr, "WriteError")
    print(line)
    assert f"Cannot write {workdir}/checkpoints/30: No space left on device (ENOSPC)" in line
    assert f"The last good checkpoint, step 20 in {workdir}/checkpoints, is kept" in line
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20"]
    assert max(r["step"] for r in logs.MetricsLog.read(
        os.path.join(workdir, "metrics.jsonl"))) == 20
    assert records(workdir, "train") == records(base[0], "train")
    _runs.assert_same_state(_runs.final_state(workdir, smoke_config()), base[1])


# ----------------------------------------------------------------- errors on the CLI

@pytest.mark.slow
def test_cli_prints_user_errors_as_one_paragraph_with_their_exit_code(base, tmp_path):
    """Each kind of user error through the real launcher: one paragraph on stderr, no
    traceback, its documented exit code, and the workdir unchanged; --traceback shows the
    traceback. --mode=eval/sample on a workdir without a checkpoint create nothing."""
    cache = _runs.shared_cache()
    empty = tmp_path / "empty"
    empty.mkdir()
    tiny = tmp_path / "synthetic_one_test_image.npz"
    np.savez(tiny, train=np.zeros((64, 28, 28), np.uint8), test=np.zeros((1, 28, 28), np.uint8))
    nan_copy = str(tmp_path / "nan")
    shutil.copytree(base[0], nan_copy)
    cases = [  # (workdir, flags, devices, kind, code, message fragments)
        (str(empty), ["--config.train.batch_size=-1"], None, "ConfigError", 2,
         ["config.train.batch_size=-1"]),
        (str(empty), ["--config.data.name=npz", "--config.data.dir=/nonexistent/s.npz"], None,
         "DataError", 3, ["not a file"]),
        (str(empty), ["--config.data.name=npz", f"--config.data.dir={tiny}"], 2,
         "ConfigError", 2, ["1 test images", "fewer than the 2 devices"]),
        (str(empty), ["--mode=eval"], None, "CheckpointError", 4,
         [f"No checkpoint in {empty}/checkpoints", "Train first"]),
        (str(empty), ["--mode=sample"], None, "CheckpointError", 4,
         [f"No checkpoint in {empty}/checkpoints"]),
        (nan_copy, ["--config.train.num_steps=30", f"--config.optim.learning_rate={ABSURD_LR}"],
         None, "NonFiniteLossError", 5, ["The last good checkpoint, step 20"]),
    ]
    for workdir, flags, devices, kind, code, fragments in cases:
        before = tree(workdir)
        r = _runs.run(_runs.command(workdir, *flags), _runs.env(cache, devices=devices))
        assert r.returncode == code, (flags, r.stderr[-3000:])
        line = one_paragraph_error(r.stderr, kind)
        for fragment in fragments:
            assert fragment in line, (fragment, line)
        if kind != "NonFiniteLossError":  # that one trained (and logged) steps 21-25
            assert tree(workdir) == before, f"{flags} changed the workdir"
    assert os.listdir(empty) == []

    r = _runs.run(_runs.command(str(empty), "--config.train.batch_size=-1", "--traceback"),
                  _runs.env(cache))
    assert r.returncode == 2 and "Traceback (most recent call last)" in r.stderr
    assert "ERROR: ConfigError: " in r.stderr
