"""Run the ``vae-jax`` command (``vae_jax.cli``) with one fault injected for real, for tests/test_reliability.py.

    VAE_JAX_FAULT=KIND:STEP python tests/fault_driver.py --config=... --workdir=...

KIND:
  sigkill_in_checkpoint  SIGKILL this process inside orbax's finalisation of checkpoint STEP:
                         the arrays are written to orbax's tmp folder, not yet renamed (on
                         orbax's background thread when config.train.async_checkpoint; the
                         line printed names the thread).
  fail_checkpoint_write  the finalisation of checkpoint STEP waits until the loop has logged
                         the train metrics of a later step (at most 30 s), then fails with
                         a real OSError (ENOSPC) naming the step's tmp folder, as a full disk
                         would; the line printed names the thread and the step logged.
  sigterm_after          send this process a real SIGTERM right after the train metrics of
                         STEP are logged; the real handler must save and exit (code 143).
  pause_after            after the train metrics of STEP, finish the checkpoint write in
                         flight, create $VAE_JAX_PAUSE_DIR/paused and wait (holding the workdir's lock) until $VAE_JAX_PAUSE_DIR/go
                         exists.
  fill_disk_after_checkpoint
                         once checkpoint STEP is saved and finished, fill the filesystem
                         with the file $VAE_JAX_FILL until a write fails with ENOSPC: the
                         disk is really full for every later write.
  signal_during_calls    after device call STEP of an evaluation (counted at
                         ``parallel.between_calls``), a thread sends $VAE_JAX_SIGNAL
                         (SIGINT or SIGTERM) to this process 0.2 s later, while the next
                         calls run; at exit the line printed says how many calls were made
                         after the signal was sent.

Not a test module (no ``test_`` prefix); the command line is exactly the launcher's.
"""

import os
import signal
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _thread() -> str:
    import threading

    return "main" if threading.current_thread() is threading.main_thread() else "background"


def _install(kind: str, step: int) -> None:
    if kind == "sigkill_in_checkpoint":
        from orbax.checkpoint.path import atomicity  # orbax's public path API

        original = atomicity.AtomicRenameTemporaryPath.finalize

        async def finalize(self, *args, **kwargs):
            if self.get_final().name == str(step):
                print(f"fault_driver: SIGKILL inside checkpoint {step}'s write, on thread "
                      f"{_thread()}", flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            return await original(self, *args, **kwargs)

        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif kind == "fail_checkpoint_write":
        import errno
        import threading

        from orbax.checkpoint.path import atomicity

        from vae_jax.run import logs

        original, write = atomicity.AtomicRenameTemporaryPath.finalize, logs.MetricsLog.write
        later = []
        logged = threading.Event()

        def write_and_tell(self, s, what, values):
            write(self, s, what, values)
            if s > step and what == "train":
                later.append(s)
                logged.set()

        async def finalize(self, *args, **kwargs):
            if self.get_final().name == str(step):
                logged.wait(timeout=30)
                print(f"fault_driver: failing checkpoint {step}'s write on thread {_thread()} "
                      f"after the loop logged step {later[0] if later else None}", flush=True)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get()))
            return await original(self, *args, **kwargs)

        logs.MetricsLog.write = write_and_tell
        atomicity.AtomicRenameTemporaryPath.finalize = finalize
    elif kind == "sigterm_after":
        from vae_jax.run import logs

        original = logs.MetricsLog.write

        def write(self, s, what, values):
            original(self, s, what, values)
            if s == step and what == "train":
                os.kill(os.getpid(), signal.SIGTERM)

        logs.MetricsLog.write = write
    elif kind == "pause_after":
        import time

        from vae_jax.run import checkpoint, logs

        original, init = logs.MetricsLog.write, checkpoint.TrainingSaves.__init__
        folder = os.environ["VAE_JAX_PAUSE_DIR"]
        saves = []

        def remember(self, *args, **kwargs):
            init(self, *args, **kwargs)
            saves.append(self)

        def write(self, s, what, values):
            original(self, s, what, values)
            if s == step and what == "train":
                for pending in saves:  # the workdir stays as it is while paused
                    pending.finish()
                open(os.path.join(folder, "paused"), "w").close()
                deadline = time.time() + 300
                while not os.path.exists(os.path.join(folder, "go")):
                    assert time.time() < deadline, "fault_driver: never told to go on"
                    time.sleep(0.05)

        logs.MetricsLog.write = write
        checkpoint.TrainingSaves.__init__ = remember
    elif kind == "fill_disk_after_checkpoint":
        import errno

        from vae_jax.run import checkpoint

        original = checkpoint.save

        def save(mngr, s, state, **kw):
            original(mngr, s, state, **kw)
            if s == step:
                checkpoint.finish(mngr, s)  # on disk (an asynchronous save), then the disk fills
                with open(os.environ["VAE_JAX_FILL"], "wb", buffering=0) as f:
                    for size in (1 << 20, 1 << 12, 1):
                        try:
                            while True:
                                f.write(b"\0" * size)
                        except OSError as e:
                            assert e.errno == errno.ENOSPC, e
                print(f"fault_driver: filled the disk after checkpoint {step}", flush=True)

        checkpoint.save = save
    elif kind == "signal_during_calls":
        import atexit
        import threading
        import time

        from vae_jax import parallel

        original = parallel.between_calls
        name = os.environ.get("VAE_JAX_SIGNAL", "SIGINT")
        calls, sent = [0], []

        def send():
            time.sleep(0.2)
            sent.append(calls[0])
            os.kill(os.getpid(), getattr(signal, name))

        def between_calls():
            calls[0] += 1
            if calls[0] == step:
                threading.Thread(target=send, daemon=True).start()
            original()

        parallel.between_calls = between_calls
        atexit.register(lambda: print(
            f"fault_driver: {name} sent after call {sent[0] if sent else None}; "
            f"{calls[0] - sent[0] if sent else None} calls after it", flush=True))
    else:
        raise SystemExit(f"unknown VAE_JAX_FAULT kind {kind!r}")


if __name__ == "__main__":
    kind, step = os.environ["VAE_JAX_FAULT"].split(":")
    _install(kind, int(step))
    from vae_jax import cli

    cli.main()
