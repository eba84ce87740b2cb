"""Run ``experiments.main`` with one fault injected for real, for tests/test_reliability.py.

    VAE_JAX_FAULT=KIND:STEP python tests/fault_driver.py --config=... --workdir=...

KIND:
  sigkill_in_checkpoint  SIGKILL this process inside orbax's finalisation of checkpoint STEP:
                         the arrays are written to orbax's tmp folder, not yet renamed.
  sigterm_after          send this process a real SIGTERM right after the train metrics of
                         STEP are logged; the real handler must save and exit (code 143).

Not a test module (no ``test_`` prefix); the command line is exactly the launcher's.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _install(kind: str, step: int) -> None:
    if kind == "sigkill_in_checkpoint":
        from orbax.checkpoint._src.path import atomicity

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
    else:
        raise SystemExit(f"unknown VAE_JAX_FAULT kind {kind!r}")


if __name__ == "__main__":
    kind, step = os.environ["VAE_JAX_FAULT"].split(":")
    _install(kind, int(step))
    from absl import app

    from experiments import main

    app.run(main.main)
