"""Asynchronous checkpoint saves (``saves.TrainingSaves`` on an orbax manager with
``async_save=True``), in process on small states: the save returns before its step is
finalised, the checkpoint holds the arrays as passed even though the caller donates them at
once, and a write failing in the background is a WriteError naming its step at the next
save or at ``finish``, with the earlier steps intact. The whole loop's async saves, kills
inside their background finalisation and failed writes through the launcher are in
tests/test_reliability.py.
"""

from __future__ import annotations

import errno
import os
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint.path import atomicity

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _runs  # noqa: E402
from vae_jax import errors  # noqa: E402
from vae_jax.run import checkpoint, runtime


def _state(seed):
    k = jax.random.key(seed)
    return {"params": {"w": jax.random.normal(k, (256, 256)), "b": jnp.arange(8.0) + seed},
            "step": jnp.asarray(seed, jnp.int32)}


def _guard():
    return runtime.WriteGuard(lambda: "LAST GOOD.")


@pytest.fixture
def finalize_hook(monkeypatch):
    """``hook[0](step)`` runs inside orbax's finalisation (before the rename) of each step,
    on whatever thread orbax finalises it."""
    original = atomicity.AtomicRenameTemporaryPath.finalize
    hook = [lambda step: None]

    async def finalize(self, *args, **kwargs):
        if self.get_final().name.isdigit():  # (items' folders are finalised too)
            hook[0](int(self.get_final().name))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", finalize)
    return hook


@pytest.mark.parametrize("asynchronous", [True, False])
def test_save_returns_before_the_write_is_finalised_only_when_async(tmp_path, finalize_hook,
                                                                    asynchronous):
    """Async: ``save`` returns while orbax's finalisation of the step is held back on its
    own thread (the step's folder is still a tmp folder), and ``finish`` completes it.
    Sync (async_checkpoint=False): the step is finalised, on this thread, before ``save``
    returns."""
    returned, seen = threading.Event(), []

    def hold(step):
        seen.append((step, threading.current_thread() is threading.main_thread()))
        if asynchronous:
            assert returned.wait(timeout=30), "save never returned while its write was held"

    finalize_hook[0] = hold
    mngr = checkpoint.manager(str(tmp_path / "ckpt"), async_save=asynchronous)
    saves = checkpoint.TrainingSaves(mngr, _guard())
    saves.save(10, _state(10))
    names = os.listdir(tmp_path / "ckpt")
    # Async: the write's tmp folder is made on orbax's thread, which a loaded machine may not
    # have run yet when ``save`` returns; its finalisation is held, so wait for the folder.
    deadline = time.monotonic() + 30
    while asynchronous and not any(n.startswith("10.orbax-checkpoint-tmp") for n in names) \
            and time.monotonic() < deadline:
        time.sleep(0.01)
        names = os.listdir(tmp_path / "ckpt")
    returned.set()
    if asynchronous:
        assert "10" not in names and any(n.startswith("10.orbax-checkpoint-tmp") for n in names)
        assert saves.pending == 10 and saves.finished is None
    else:
        assert names == ["10"] and seen == [(10, True)]
    saves.finish()
    assert saves.pending is None and saves.finished == 10 and saves.latest == 10
    assert os.listdir(tmp_path / "ckpt") == ["10"]
    assert seen == [(10, not asynchronous)]
    _runs.assert_same_state(checkpoint.restore(mngr, _state(0), 10), _state(10))
    mngr.close()


def test_async_checkpoint_holds_the_state_as_saved_though_it_was_donated_at_once(tmp_path):
    """The caller donates the saved arrays to its next jitted call right after ``save``
    (as the train loop does) and runs more calls while the write goes on: the checkpoint
    and its checksum are those of the arrays as they were when saved."""
    step = jax.jit(lambda s: jax.tree.map(lambda x: x * 3 + 1, s), donate_argnums=0)
    state = step(_state(1))
    # host copies of a device copy: reading ``state`` itself on the host here would keep
    # its buffers from being donated (a CPU array read on the host is a view of them)
    want = jax.tree.map(lambda x: np.array(jnp.copy(x)), state)
    mngr = checkpoint.manager(str(tmp_path / "ckpt"), async_save=True)
    saves = checkpoint.TrainingSaves(mngr, _guard())
    saves.save(10, state)
    for _ in range(3):
        state = step(state)
    jax.block_until_ready(state)
    saves.finish()
    _runs.assert_same_state(checkpoint.restore(mngr, _state(0), 10), want)  # checksummed
    assert not np.array_equal(np.asarray(state["params"]["w"]), want["params"]["w"])
    mngr.close()


@pytest.mark.parametrize("surfaces_at", ["finish", "next save"])
def test_a_failed_background_write_is_a_write_error_naming_its_step(tmp_path, finalize_hook,
                                                                    surfaces_at):
    """Step 20's write fails in orbax's background finalisation (ENOSPC): ``save(20)``
    returns; the failure is raised by the next ``save`` or ``finish`` as the WriteError of
    step 20 (not of the step being saved); step 20 leaves nothing behind, step 10 stays
    the latest and restores."""
    def fail(step):
        if step == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), f"{step}.tmp")

    finalize_hook[0] = fail
    mngr = checkpoint.manager(str(tmp_path / "ckpt"), async_save=True)
    saves = checkpoint.TrainingSaves(mngr, _guard())
    saves.save(10, _state(10))
    saves.save(20, _state(20))  # returns: the write fails later, on orbax's thread
    with pytest.raises(errors.WriteError) as e:
        saves.save(30, _state(30)) if surfaces_at == "next save" else saves.finish()
    msg = str(e.value)
    assert msg.startswith(f"Cannot write {checkpoint.step_path(mngr, 20)}")
    assert "No space left on device (ENOSPC)" in msg and "LAST GOOD." in msg
    assert errors.exit_code(e.value) == 7
    assert saves.finished == 10 and saves.pending is None
    assert os.listdir(tmp_path / "ckpt") == ["10"]  # no 20, no tmp folder, 30 never begun
    mngr.reload()
    assert mngr.all_steps() == [10]
    _runs.assert_same_state(checkpoint.restore(mngr, _state(0)), _state(10))
    mngr.close()


def test_async_checkpoint_must_be_a_bool():
    from experiments.configs import smoke
    from vae_jax import config as config_lib

    config = smoke.get_config()
    assert config_lib.with_defaults(config).train.async_checkpoint is True  # the default
    del config.train["async_checkpoint"]  # a config file of its own, setting it to an int
    config.train.async_checkpoint = 1
    with pytest.raises(errors.ConfigError, match=r"config.train.async_checkpoint=1 must be True"):
        config_lib.resolve(config)
