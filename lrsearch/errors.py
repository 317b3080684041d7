"""The exceptions lrsearch raises on purpose.

Every error a user can cause derives from :class:`LrsearchError`. The CLI turns them into a
one-line message and a non-zero exit in one place (``lrsearch.cli``); anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "LrsearchError",
    "StorageError",
    "TrackingError",
    "WorkloadError",
]


class LrsearchError(Exception):
    """Root of every error lrsearch raises for bad input or an unusable environment.

    Attributes:
        exit_code: the process exit status the CLI uses for this error.
    """

    exit_code: int = 1


class ConfigError(LrsearchError):
    """A study file, option or argument is invalid; the message names the field."""

    exit_code = 2


class WorkloadError(LrsearchError):
    """A workload cannot be found, imported or built."""

    exit_code = 3


class StorageError(LrsearchError):
    """The Optuna storage cannot be reached or holds something unexpected."""

    exit_code = 4


class TrackingError(LrsearchError):
    """The MLflow tracking store cannot be reached or used."""

    exit_code = 5
