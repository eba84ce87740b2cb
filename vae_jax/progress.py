"""A one-line progress report for long commands: done/total, loss, rate, ETA; and
``Waiting``, a line that says what a long step without progress of its own waits for and
for how long ("compiling the train step ... 12.3 s").

On a terminal the line is redrawn in place with ``\\r`` (at most ``tty_interval_s`` apart).
When the stream is not a terminal (CI logs, files, pipes) it prints whole lines, at most one
every ``log_interval_s`` seconds plus the last one, so logs get no carriage-return spam.

Quiet (prints nothing) when any of:
  * ``quiet=True`` is passed;
  * the environment sets ``VAE_JAX_PROGRESS=0`` (also ``off``/``false``/``no``);
    ``set_enabled(False)`` sets it, so subprocesses (sweep points) inherit it; the launchers'
    ``--noprogress`` flag calls it;
  * absl logging has been turned down below warnings (``--verbosity=-2`` or lower), the
    launchers' way of asking for a silent run.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Optional, TextIO

ENV_VAR = "VAE_JAX_PROGRESS"
_OFF = {"0", "off", "false", "no", "quiet"}


def set_enabled(enabled: bool) -> None:
    """Turn progress reports on/off for this process and the subprocesses it starts."""
    os.environ[ENV_VAR] = "1" if enabled else "0"


def enabled() -> bool:
    """False when the environment or absl's verbosity asks for silence (see module doc)."""
    if os.environ.get(ENV_VAR, "").strip().lower() in _OFF:
        return False
    try:
        from absl import logging as absl_logging
        if absl_logging.get_verbosity() < absl_logging.WARNING:
            return False
    except Exception:  # absl missing or its flags unparsed: no opinion
        pass
    return True


def hms(seconds: float) -> str:
    """Seconds -> 'H:MM:SS'."""
    seconds = int(round(max(seconds, 0.0)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Progress:
    """``update(done, epoch=, loss=, rate=, **extra)`` reports progress towards ``total``.

    ``rate`` (units/s) is measured from the first update when not given. The arguments keep
    the positional order ``(step, epoch, loss, steps_per_s)`` of the training loop's calls.
    """

    def __init__(self, total: int, *, unit: str = "step", stream: Optional[TextIO] = None,
                 quiet: Optional[bool] = None, log_interval_s: float = 30.0,
                 tty_interval_s: float = 0.1, clock=time.monotonic):
        self.total, self.unit = int(total), unit
        self.stream = stream or sys.stdout
        self.quiet = (not enabled()) if quiet is None else bool(quiet)
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = tty_interval_s if self.tty else log_interval_s
        self.clock = clock
        self._start: Optional[float] = None
        self._start_done = 0
        self._last_print: Optional[float] = None
        self._pending_cr = False  # a \r line is on screen without its newline

    def _line(self, done: int, epoch, loss, rate, extra: dict) -> str:
        parts = [f"{self.unit} {done}/{self.total}"]
        if epoch is not None:
            parts.append(f"epoch {epoch:.2f}")
        if loss is not None:
            parts.append(f"loss {loss:.3f}")
        parts += [f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                  for k, v in extra.items()]
        if rate is not None and rate > 0:
            speed = f"{rate:.1f} {self.unit}s/s" if rate >= 1 else f"{1 / rate:.1f} s/{self.unit}"
            parts.append(f"{speed} ETA {hms((self.total - done) / rate)}")
        return " ".join(parts)

    def update(self, done: int, epoch: Optional[float] = None, loss: Optional[float] = None,
               rate: Optional[float] = None, *, force: bool = False, **extra) -> None:
        """Report ``done`` of ``total``; printed when due (see module doc), forced, or final."""
        now = self.clock()
        if self._start is None:
            self._start, self._start_done = now, done
        if rate is None and now > self._start and done > self._start_done:
            rate = (done - self._start_done) / (now - self._start)
        if self.quiet:
            return
        final = done >= self.total
        due = self._last_print is None or now - self._last_print >= self.interval
        if not (due or final or force):
            return
        self._last_print = now
        line = self._line(done, epoch, loss, rate, extra)
        if self.tty:
            self.stream.write("\r" + line.ljust(90))
            self._pending_cr = not final
            if final:
                self.stream.write("\n")
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def newline(self) -> None:
        """End an in-place line before other output (e.g. an evaluation's report)."""
        if self._pending_cr and not self.quiet:
            self.stream.write("\n")
            self.stream.flush()
        self._pending_cr = False

    def close(self) -> None:
        self.newline()


# A wait shorter than this prints nothing (a program loaded from the compilation cache).
WAITING_DELAY_S = 0.5


class Waiting:
    """Context manager: while its block runs, a line ``"<what> ... 12.3 s"`` says for how
    long, once the block has taken ``delay_s``. On a terminal the line is redrawn in place
    (every ``tty_interval_s``) and ended when the block ends; off a terminal it prints a
    line when the delay has passed, at most one every ``log_interval_s``, and one with the
    total when the block ends. Quiet as ``Progress`` is (``enabled()``).

    For steps that report nothing while they run: compiling a program (``ops.compile``).
    """

    def __init__(self, what: str, *, stream: Optional[TextIO] = None,
                 quiet: Optional[bool] = None, delay_s: Optional[float] = None,
                 log_interval_s: float = 10.0, tty_interval_s: float = 0.2):
        self.what = what
        self.stream = stream or sys.stdout
        self.quiet = (not enabled()) if quiet is None else bool(quiet)
        self.delay = WAITING_DELAY_S if delay_s is None else delay_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = tty_interval_s if self.tty else log_interval_s
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._printed = False
        self._thread: Optional[threading.Thread] = None
        self._start = 0.0

    def _write(self, final: bool) -> None:
        with self._lock:
            line = f"{self.what} ... {time.monotonic() - self._start:.1f} s"
            if self.tty:
                self.stream.write("\r" + line.ljust(60) + ("\n" if final else ""))
            else:
                self.stream.write(line + "\n")
            self.stream.flush()
            self._printed = True

    def _tick(self) -> None:
        if self._done.wait(self.delay):
            return
        self._write(final=False)
        while not self._done.wait(self.interval):
            self._write(final=False)

    def __enter__(self) -> "Waiting":
        self._start = time.monotonic()
        if self.quiet:
            return self
        if self.delay <= 0:
            self._write(final=False)
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        if self._printed:
            self._write(final=True)
