"""Run ``experiments.main`` with one fault injected for real, for tests/test_reliability.py.

    VAE_JAX_FAULT=KIND:STEP python tests/fault_driver.py --config=... --workdir=...

KIND:
  sigkill_in_checkpoint  SIGKILL this process inside orbax's finalisation of checkpoint STEP:
                         the arrays are written to orbax's tmp folder, not yet renamed.
  sigterm_after          send this process a real SIGTERM right after the train metrics of
                         STEP are logged; the real handler must save and exit (code 143).
  pause_after            after the train metrics of STEP, create $VAE_JAX_PAUSE_DIR/paused
                         and wait (holding the workdir's lock) until $VAE_JAX_PAUSE_DIR/go
                         exists.
  fill_disk_after_checkpoint
                         once checkpoint STEP is saved, fill the filesystem with the file
                         $VAE_JAX_FILL until a write fails with ENOSPC: the disk is really
                         full for every later write.

Not a test module (no ``test_`` prefix); the command line is exactly the launcher's.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _install(kind: str, step: int) -> None:
    if kind == "sigkill_in_checkpoint":
        from orbax.checkpoint.path import atomicity  # orbax's public path API

        original = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self):
            if self._final_path.name == str(step):
                print(f"fault_driver: SIGKILL inside checkpoint {step}'s write", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return await original(self)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif kind == "sigterm_after":
        from vae_jax import runtime

        original = runtime.MetricsLog.write

        def write(self, s, what, values):
            original(self, s, what, values)
            if s == step and what == "train":
                os.kill(os.getpid(), signal.SIGTERM)

        runtime.MetricsLog.write = write
    elif kind == "pause_after":
        import time

        from vae_jax import runtime

        original = runtime.MetricsLog.write
        folder = os.environ["VAE_JAX_PAUSE_DIR"]

        def write(self, s, what, values):
            original(self, s, what, values)
            if s == step and what == "train":
                open(os.path.join(folder, "paused"), "w").close()
                deadline = time.time() + 300
                while not os.path.exists(os.path.join(folder, "go")):
                    assert time.time() < deadline, "fault_driver: never told to go on"
                    time.sleep(0.05)

        runtime.MetricsLog.write = write
    elif kind == "fill_disk_after_checkpoint":
        import errno

        from vae_jax import checkpoint

        original = checkpoint.save

        def save(mngr, s, state, **kw):
            original(mngr, s, state, **kw)
            if s == step:
                with open(os.environ["VAE_JAX_FILL"], "wb", buffering=0) as f:
                    for size in (1 << 20, 1 << 12, 1):
                        try:
                            while True:
                                f.write(b"\0" * size)
                        except OSError as e:
                            assert e.errno == errno.ENOSPC, e
                print(f"fault_driver: filled the disk after checkpoint {step}", flush=True)

        checkpoint.save = save
    else:
        raise SystemExit(f"unknown VAE_JAX_FAULT kind {kind!r}")


if __name__ == "__main__":
    kind, step = os.environ["VAE_JAX_FAULT"].split(":")
    _install(kind, int(step))
    from absl import app

    from experiments import main

    app.run(main.main)
