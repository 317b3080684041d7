"""Recording studies, trials and range tests in MLflow, with batched step metrics.

The search layer talks to a :class:`Tracker` with plain strings, floats and dicts; it never sees
Optuna here and MLflow is imported only when an :class:`MlflowTracker` is built. Each study gets
an experiment of the same name holding one parent run (tag ``lrsearch.role=study``) and one
nested run per trial (``lrsearch.role=trial``, ``lrsearch.trial=<number>``,
``mlflow.parentRunId``). A :class:`TrialRun` buffers per-step metrics and sends them with
``log_batch``, never one call per value. :class:`MemoryTracker` is the in-memory test double.

Every param, tag and text artifact passes through :func:`scrub` first, so a password inside a
storage URL never reaches the tracking store.

Example:
    >>> tracker = MemoryTracker()
    >>> parent = tracker.start_study("demo", params={"n_trials": 8}, tags={})
    >>> with tracker.start_trial(parent, 0, params={"max_lr": 0.1}, tags={}) as run:
    ...     run.log_step(0, lr=0.004, train_loss=2.3)
    >>> tracker.runs[run.run_id].status
    'FINISHED'
"""

from __future__ import annotations

from lrsearch.tracking._base import END_STATUSES, Status, Tracker, TrialRun, TrialRunInfo
from lrsearch.tracking._memory import MemoryRun, MemoryTracker
from lrsearch.tracking._mlflow import MlflowTracker, local_tracking_uri
from lrsearch.tracking._range_test import RANGE_TEST_FILES, log_range_test, record_range_test
from lrsearch.tracking._scrub import redact_url, scrub, without_userinfo

__all__ = [
    "END_STATUSES",
    "RANGE_TEST_FILES",
    "MemoryRun",
    "MemoryTracker",
    "MlflowTracker",
    "Status",
    "Tracker",
    "TrialRun",
    "TrialRunInfo",
    "local_tracking_uri",
    "log_range_test",
    "record_range_test",
    "redact_url",
    "scrub",
    "without_userinfo",
]
