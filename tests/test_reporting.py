"""lrsearch.reporting: what a study says about itself (status, best, history, ended trials)."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from lrsearch.config import parse_study_config
from lrsearch.errors import StorageError
from lrsearch.objective import Objective
from lrsearch.prior import LRPrior
from lrsearch.reporting import (
    best_trial,
    dashboard_storage,
    ended_trial_reasons,
    study_history,
    summary,
)
from lrsearch.study import StudyHandle
from lrsearch.tracking.recorder import LOST_REASON
from lrsearch.trials import DIVERGED, FAIL_REASON, SURPLUS
from tests.tiny_workloads import blobs

PRIOR = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=1.0)
CONFIG = {
    "study": {"name": "rep", "workload": "tests.tiny_workloads:blobs", "n_trials": 5},
    "pruner": {"name": "none"},
}


def _handle() -> StudyHandle:
    return StudyHandle.in_memory(parse_study_config(CONFIG), PRIOR, blobs())


def _trial(handle: StudyHandle, value: float | None, **attrs: object):
    """A trial sampled as a worker samples it, ended COMPLETE (value) or FAIL (None)."""
    trial = handle.study.ask()
    Objective(handle).sample(trial)
    for key, attr in attrs.items():
        trial.set_user_attr(key, attr)
    handle.study.tell(trial, value, state=None if value is not None else TrialState.FAIL)
    return handle.study.trials[-1]


def test_a_study_without_a_complete_trial_says_what_to_run() -> None:
    handle = _handle()
    with pytest.raises(StorageError, match=r"no completed trial yet.*'lrsearch worker --study "):
        best_trial(handle)
    assert summary(handle)["best"] is None


def test_summary_counts_leave_surplus_trials_out_and_name_the_best() -> None:
    handle = _handle()
    _trial(handle, 80.0)
    best = _trial(handle, 90.0)
    _trial(handle, None, **{SURPLUS: True})  # a backed-off ask: not a failure
    _trial(handle, None, **{FAIL_REASON: "boom"})
    out = summary(handle)
    assert out["trials"]["COMPLETE"] == 2 and out["trials"]["FAIL"] == 1
    assert out["best"]["number"] == best.number and out["best"]["value"] == 90.0
    assert out["direction"] == "maximize" and out["n_trials_target"] == 5
    assert best_trial(handle).number == best.number


def test_history_has_the_complete_trials_their_schedules_and_counts() -> None:
    handle = _handle()
    _trial(handle, 70.0)
    _trial(handle, 75.0)
    _trial(handle, None, **{DIVERGED: "loss nan at step 3"})
    _trial(handle, None, **{SURPLUS: True})
    history = study_history(handle)
    assert list(history.values) == [70.0, 75.0]
    assert len(history.schedules) == 2 and history.maximize
    assert history.counts == {"COMPLETE": 2, "PRUNED": 0, "FAIL": 1, "DIVERGED": 1}
    assert history.total_steps == handle.plan.total_steps


def test_ended_trials_say_why() -> None:
    handle = _handle()
    done = _trial(handle, 70.0)
    failed = _trial(handle, None, **{FAIL_REASON: "CUDA out of memory"})
    lost = _trial(handle, None)
    running = handle.study.ask()
    reasons = ended_trial_reasons(handle)
    assert reasons[failed.number] == "CUDA out of memory"
    assert reasons[lost.number] == LOST_REASON
    assert "COMPLETE" in reasons[done.number]
    assert running.number not in reasons


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("journal:/home/me/.lrsearch/optuna.journal", "/home/me/.lrsearch/optuna.journal"),
        ("postgresql://u:secret@db:5432/s", "postgresql://u:***@db:5432/s"),
        ("sqlite:///runs/optuna.db", "sqlite:///runs/optuna.db"),
        ("grpc://proxy:13000", None),
    ],
)
def test_dashboard_storage_is_what_optuna_dashboard_opens(url, expected) -> None:
    assert dashboard_storage(url) == expected
