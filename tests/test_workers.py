"""lrsearch.workers: trials run in this process until the study holds its budget."""

from __future__ import annotations

import pytest
from optuna.trial import TrialState

from lrsearch.config import parse_study_config
from lrsearch.errors import WorkloadError
from lrsearch.prior import LRPrior
from lrsearch.study import StudyHandle
from lrsearch.workers import run_trials
from tests.tiny_workloads import blobs, fails_eval

PRIOR = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=1.0)


def _handle(workload) -> StudyHandle:
    config = parse_study_config(
        {
            "study": {"name": "w", "workload": "tests.tiny_workloads:blobs", "epochs": 1},
            "pruner": {"name": "none"},
        }
    )
    return StudyHandle.in_memory(config, PRIOR, workload)


def test_trials_run_until_the_budget_and_no_further() -> None:
    handle, seen = _handle(blobs()), []
    run_trials(handle, n_trials=2, on_trial=lambda t: seen.append(t.number), echo=print)
    states = [t.state for t in handle.study.get_trials()]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE] and seen == [0, 1]
    run_trials(handle, n_trials=2, echo=print)  # full already: nothing runs
    assert len(handle.study.get_trials()) == 2
    run_trials(handle, n_trials=3, echo=print)  # a larger budget: one more
    assert handle.n_finished() == 3


def test_a_worker_whose_trials_keep_failing_stops_saying_why() -> None:
    handle, lines = _handle(fails_eval()), []
    with pytest.raises(WorkloadError, match=r"3 trials in a row failed; last: .*--debug"):
        run_trials(handle, n_trials=10, echo=lines.append)
    assert len(handle.study.get_trials()) == 3  # stopped, not 10 failures
    assert [line.split(":")[0] for line in lines] == [f"trial {n} failed" for n in range(3)]
