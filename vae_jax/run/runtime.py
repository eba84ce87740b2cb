"""The run's footprint in its workdir: the workdir check and lock, atomic JSON files, failed
writes and user errors reported as one paragraph, and a graceful stop on SIGTERM / SIGINT.
(The metrics a run writes there: ``vae_jax.run.logs``.)

* ``check_workdir``: runs before any compilation and before anything is created in the
  workdir, so a run that fails validation alters nothing.
* ``WorkdirLock``: one training run per workdir (``fcntl.flock`` on ``workdir/.lock``; the
  kernel drops it when the process dies, so a killed run never blocks its rerun). A second
  run raises ``WorkdirBusy`` naming the holder; ``check_not_busy`` probes without writing.
* ``WriteGuard``: a failed write (a full disk, permissions, a vanished folder; an OSError
  or orbax/tensorstore's wrapped one) becomes a ``WriteError`` naming the path, the OS
  error, the last good checkpoint and the fix; ``check_room`` refuses up front a write
  that cannot fit (a full disk), before the work whose result it would hold.
* ``report_errors``: the commands' wrapper printing a user's error as one paragraph and
  exiting with its code (``errors.EXIT_CODES``); a bug keeps its traceback.
* ``StopSignal``: the first SIGTERM/SIGINT sets a flag that the training loop reads at a
  call boundary (it then saves and exits) and that the evaluations read between their
  device calls (``check``, through ``parallel.check_between_calls``); with ``at_once`` (the
  launcher's modes outside the training loop) it stops the run where it is instead. A
  second signal gets the previous behaviour.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shlex
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from typing import Callable, Optional

import jax
import numpy as np

from vae_jax.errors import ConfigError, Interrupted, WorkdirBusy, WriteError, exit_code
from vae_jax.ops.compile import compiling


# --------------------------------------------------------------------------- workdir

def check_workdir(workdir: str, label: Optional[str] = None) -> None:
    """--workdir must be a writable folder or creatable as one. Creates nothing.
    ``label``: how the messages name the folder (default ``--workdir=<workdir>``)."""
    if not workdir:
        raise ConfigError("--workdir is empty: give a folder for checkpoints and metrics.")
    label = label or f"--workdir={workdir}"
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ConfigError(f"{label} is a file, not a folder. Give a folder path "
                          "(it is created if absent) or move the file away.")
    probe = _existing(path)  # the nearest existing ancestor must be a writable dir
    if not os.path.isdir(probe):
        raise ConfigError(f"{label} cannot be created: {probe} is a file, not a "
                          "folder. Choose another path.")
    if not os.access(probe, os.W_OK | os.X_OK):
        why = ("is on a read-only filesystem" if _read_only(probe) else
               "denies write access to this user")
        raise ConfigError(f"{label} is not writable ({probe} {why}). Choose a folder you "
                          "can write to, or fix its permissions (or remount it writable).")


def _existing(path: str) -> str:
    """``path`` or its nearest existing ancestor."""
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def _read_only(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def free_bytes(path: str) -> int:
    """Bytes this user may still write on ``path``'s filesystem (of its nearest existing
    ancestor); root may use the blocks reserved for it."""
    st = os.statvfs(_existing(os.path.abspath(path)))
    return (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize


def check_room(path: str, need: int, before: str) -> None:
    """A WriteError naming ``path`` when its filesystem has fewer than ``need`` bytes free,
    before the work whose result would be written there (``before``: what is not done,
    e.g. "Nothing was evaluated"). Writes nothing."""
    free = free_bytes(path)
    if free < need:
        raise WriteError(
            f"Cannot write {path}: No space left on device (ENOSPC): {free} bytes free on "
            f"its filesystem, {need} needed. {before}. To go on, free space on that "
            "filesystem, then run the same command again.")


def write_json(path: str, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary file of its own, then
    ``os.replace``), so concurrent writers (an eval beside a training run) never mix."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


# ------------------------------------------------------------------------------ the lock

LOCK_FILE = ".lock"


def _read_holder(path: str) -> dict:
    """The holder's record in a lock file ({} while it is being written or unreadable)."""
    for _ in range(10):  # the holder writes its record right after taking the lock
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.1)
    return {}


def _busy(workdir: str, holder: dict) -> WorkdirBusy:
    who = (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
           f"{holder.get('started', '?')}, command: {holder.get('command', '?')}"
           if holder else "a process whose details are not written yet")
    return WorkdirBusy(
        f"--workdir={workdir} is in use by another training run ({who}). Only one run may "
        "train in a workdir at a time: two would race on its checkpoints and metrics. Wait "
        "for that run to finish, or stop it (kill -TERM "
        f"{holder.get('pid', 'PID')} on {holder.get('host', 'its host')} saves a checkpoint "
        "and exits) and rerun this command to resume; or give this run another --workdir. "
        "--mode=eval and --mode=sample may read a workdir while it trains.")


def check_not_busy(workdir: str) -> None:
    """Raise WorkdirBusy if a run holds ``workdir``'s lock. Writes nothing (a shared probe
    on an existing lock file), so it can run before validation."""
    path = os.path.join(workdir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # no lock file (or unreadable): WorkdirLock decides
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(workdir, _read_holder(path)) from None
    finally:
        os.close(fd)


class WorkdirLock:
    """Context manager: hold ``workdir``'s exclusive lock for a training run.

    ``fcntl.flock`` on ``workdir/.lock``; the file then records the holder (pid, host,
    start time, command line) as JSON for the message another run gets. The kernel
    releases the lock when the process exits or is killed, so no stale lock survives a
    SIGKILL. Creating the workdir and this file is the run's first write. Multi-process,
    process 0 holds it (``enabled``) and every process learns whether it was free.
    """

    def __init__(self, workdir: str, *, enabled: bool = True):
        self.workdir, self.enabled = workdir, enabled
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: Optional[int] = None

    def __enter__(self) -> "WorkdirLock":
        busy = None
        if self.enabled:
            with WriteGuard()(self.path):
                os.makedirs(self.workdir, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                busy = _busy(self.workdir, _read_holder(self.path))
            else:
                self._fd = fd
                record = {"pid": os.getpid(), "host": socket.gethostname(),
                          "started": time.strftime("%Y-%m-%d %H:%M:%S %z"),
                          "command": shlex.join([sys.executable] + sys.argv)}
                try:
                    with WriteGuard()(self.path):
                        os.ftruncate(fd, 0)
                        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
                        os.fsync(fd)
                except BaseException:
                    self.__exit__()
                    raise
        if jax.process_count() > 1:  # every process stops if process 0 found it busy
            from jax.experimental import multihost_utils

            flags = multihost_utils.process_allgather(np.int32(busy is not None))
            if busy is None and np.any(flags):
                busy = WorkdirBusy(f"--workdir={self.workdir} is in use by another training "
                                   "run (process 0 names it). Rerun when it has finished.")
        if busy is not None:
            raise busy
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)  # free: no holder to name
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------ failed writes

_TS_ERRNO = re.compile(r"os_error_code='?(\d+)")
_TS_PATH = re.compile(r'"(/[^"]+)"')  # the first absolute path tensorstore names


def os_error(error: BaseException) -> Optional[tuple[int, str, Optional[str]]]:
    """(errno, strerror, path or None) of the OS error behind ``error``: an OSError in its
    cause/context chain, or tensorstore's ``[os_error_code=N]`` (orbax wraps those in a
    ValueError). None when no OS error is behind it."""
    seen, e = set(), error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno:
            return e.errno, e.strerror or os.strerror(e.errno), e.filename
        match = _TS_ERRNO.search(str(e))
        if match:
            code = int(match.group(1))
            path = _TS_PATH.search(str(e))
            return code, os.strerror(code), path.group(1) if path else None
        e = e.__cause__ or e.__context__
    return None


_FIXES = {errno.ENOSPC: "free space on that filesystem", errno.EDQUOT: "free space (a quota)",
          errno.EACCES: "fix the permissions", errno.EPERM: "fix the permissions",
          errno.EROFS: "remount it writable", errno.ENOENT: "restore the missing folder"}


class WriteGuard:
    """``with guard(path):`` turns a failed write under it into a WriteError naming
    ``path`` (or the file the OS error names), the error, ``last_good()`` (the last good
    checkpoint, a sentence) and the fix. Other exceptions pass unchanged."""

    def __init__(self, last_good: Callable[[], str] = lambda: "",
                 again: str = ": it resumes from the last good checkpoint"):
        self.last_good, self.again = last_good, again

    @contextlib.contextmanager
    def __call__(self, path: str):
        try:
            yield
        except WriteError:
            raise
        except Exception as e:
            found = os_error(e)
            if found is None:
                raise
            raise self.error(path, *found) from e

    def error(self, path: str, code: int, strerror: str, os_path: Optional[str]) -> WriteError:
        where = path if not os_path or os_path.startswith(path) else f"{path} ({os_path})"
        fix = _FIXES.get(code, "fix the cause")
        last = self.last_good()
        return WriteError(
            f"Cannot write {where}: {strerror} ({errno.errorcode.get(code, code)}). "
            + (last + " " if last else "")
            + f"To go on, {fix}, then run the same command again{self.again}.")


# ------------------------------------------------------------------------ the commands

def current_folder_importable() -> None:
    """Config files may import modules under the current folder, as under ``python -m``
    (a console script's sys.path starts with its own folder instead)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def list_flags_in_help(usage: str, names: list[str]) -> None:
    """``--help`` shows ``usage`` and these flags, one line each (absl lists the key flags
    of the program's main module, and a console script's wrapper defines none)."""
    from absl import flags

    sys.modules["__main__"].__doc__ = usage
    for name in names:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])


def report_errors(fn: Callable, *args, show_traceback: bool = False, **kwargs):
    """Call ``fn``; a user's error (``errors.EXIT_CODES``) is printed to stderr as one
    paragraph (after its traceback only with ``show_traceback``) and exits with its code.
    Other exceptions (bugs) propagate with their traceback."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:
        code = exit_code(e)
        if code is None:
            raise
        if show_traceback:
            traceback.print_exc()
        hint = "" if show_traceback else " (--traceback shows where it was raised.)"
        print(f"ERROR: {type(e).__name__}: {' '.join(str(e).split())}{hint}",
              file=sys.stderr, flush=True)
        raise SystemExit(code) from None


# ------------------------------------------------------------------------------ signals

class StopSignal:
    """Context manager: while active, SIGTERM/SIGINT set ``signum`` instead of killing.

    The first signal restores the previous handler, so a second Ctrl-C acts at once.
    ``check()`` (run between device calls) raises ``Interrupted(128 + signum)`` once a
    signal has come; the handler raises it itself while a program compiles
    (``ops.compile.compiling()``: nothing is running to finish). ``at_once``: the handler
    always raises it, wherever the main thread is (a run with nothing to save: an
    evaluation, pictures, the start of a training run);
    a wait inside a device call ends first, so those calls are kept short. ``message``:
    printed when the first signal arrives (None: nothing). Only installs in the main
    thread (Python's rule); elsewhere it is inert.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)
    TRAINING = ("Received {name}: finishing the current call, then saving a checkpoint and "
                "exiting (send it again to stop at once).")

    def __init__(self, *, at_once: bool = False, message: Optional[str] = TRAINING):
        self.signum: Optional[int] = None
        self.at_once, self.message = at_once, message
        self._old: dict = {}

    def _handle(self, signum, frame):
        del frame
        self.signum = signum
        signal.signal(signum, self._old.get(signum, signal.SIG_DFL))
        if self.message:
            print(self.message.format(name=signal.Signals(signum).name), flush=True)
        if self.at_once or compiling():  # (nothing runs during a compilation)
            raise Interrupted(128 + signum)

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        self._old = {}

    def check(self) -> None:
        """Raise ``Interrupted(128 + signal)`` if a stop was asked (``requested``)."""
        if self.requested():
            raise Interrupted(128 + self.signum)

    def requested(self) -> bool:
        """Whether any process got a signal. Multi-process, all must agree (one tiny
        all-gather per call; single-process runs pay nothing)."""
        if jax.process_count() == 1:
            return self.signum is not None
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
        if self.signum is None and np.any(flags):
            self.signum = int(np.max(flags))
        return bool(np.any(flags))
