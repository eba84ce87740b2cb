"""The exception types a user sees. Each message is one paragraph naming the field (or file),
the value and the fix; the launcher prints it without a traceback (docs/reliability.md)."""

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


class TrainingInterrupted(SystemExit):
    """Raised after a SIGTERM/SIGINT stop has saved a checkpoint; exit code 128 + signal."""
