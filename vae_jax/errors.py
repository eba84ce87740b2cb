"""The exception types a user sees, and the exit code of each. Each message is one paragraph
naming the field (or file), the value and the fix; the launcher prints it without a
traceback (docs/reliability.md, ``runtime.report_errors``)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A config, flag or input that cannot work; the message names the field and the fix."""


class DataError(ValueError):
    """A data set that cannot be found or read; the message says how to fix it."""


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be restored; the message names its path and the fix."""


class CheckpointMismatchError(ValueError):
    """The checkpoint holds another model (shapes / parameter names differ from the config)."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN/Inf; the message names the step and the metric."""


class WorkdirBusy(RuntimeError):
    """Another run holds the workdir's lock; the message names it (pid, host, start, command)."""


class WriteError(RuntimeError):
    """A write failed (full disk, permissions, a vanished folder); the message names the
    path, the OS error, the last good checkpoint and the fix."""


class Interrupted(SystemExit):
    """A SIGTERM/SIGINT stop (``runtime.StopSignal``); exit code 128 + signal. Raised
    between device calls, so that every phase of a run (training, evaluation, pictures)
    stops within one call."""


class TrainingInterrupted(Interrupted):
    """Raised after a SIGTERM/SIGINT stop has saved a checkpoint; exit code 128 + signal."""


# The launcher's exit code for each kind of user-facing error (README, docs/reliability.md).
# 1 stays Python's (and absl's) code for a genuine bug or a bad flag; Interrupted (and
# TrainingInterrupted) exits with 128 + the signal (130 SIGINT, 143 SIGTERM).
EXIT_CODES: dict[type, int] = {
    ConfigError: 2,
    DataError: 3,
    CheckpointError: 4,
    CheckpointMismatchError: 4,
    NonFiniteLossError: 5,
    WorkdirBusy: 6,
    WriteError: 7,
}


def exit_code(error: BaseException) -> int | None:
    """The documented exit code of ``error``, or None for an exception that is a bug."""
    for kind, code in EXIT_CODES.items():
        if isinstance(error, kind):
            return code
    return None
