"""lrsearch: hyperparameter search for learning-rate policies.

The public surface is listed in ``__all__``. Importing ``lrsearch`` stays light: the pure
schedule and prior math load at once, the torch parts only when first used.
"""

from __future__ import annotations

import importlib
from typing import Any

from lrsearch.errors import (
    ConfigError,
    LrsearchError,
    StorageError,
    TrackingError,
    WorkloadError,
)

__version__ = "0.1.0"

# name -> module that defines it; loaded on first attribute access so that
# `import lrsearch` does not pull in torch, optuna or mlflow.
_LAZY = {
    "Constant": "lrsearch.schedules",
    "Cyclic": "lrsearch.schedules",
    "ExpRamp": "lrsearch.schedules",
    "LinearRamp": "lrsearch.schedules",
    "OneCycle": "lrsearch.schedules",
    "PlateauDecay": "lrsearch.schedules",
    "Schedule": "lrsearch.schedules",
    "schedule_from_dict": "lrsearch.schedules",
    "LRPrior": "lrsearch.prior",
    "ScheduleDriver": "lrsearch.torch_schedule",
    "TrainResult": "lrsearch.training",
    "TrialContext": "lrsearch.trainers",
    "train": "lrsearch.training",
    "Workload": "lrsearch.workloads",
    "get_workload": "lrsearch.workloads",
}

__all__ = [  # noqa: PLE0604 - the lazy names are strings too
    "ConfigError",
    "LrsearchError",
    "StorageError",
    "TrackingError",
    "WorkloadError",
    "__version__",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrsearch' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(__all__)


def _quiet_third_party_logs() -> None:
    # MLflow logs schema migrations at INFO on every new store; users need none of it.
    import logging
    import os

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    logging.getLogger("alembic").setLevel(logging.WARNING)


_quiet_third_party_logs()
