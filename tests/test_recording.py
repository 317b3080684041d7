"""lrsearch.recording: a study's trials and their MLflow runs, joined (in-memory tracker)."""

from __future__ import annotations

from optuna.trial import TrialState

from lrsearch.config import parse_study_config
from lrsearch.prior import LRPrior
from lrsearch.recording import DIED_REASON, close_study, fail_study, open_recorder, recover_worker
from lrsearch.schedules import Constant
from lrsearch.study import StudyHandle
from lrsearch.tracking import MemoryTracker
from lrsearch.trials import MLFLOW_RUN_ID, WORKER
from lrsearch.workers import run_trials
from tests.tiny_workloads import blobs

PRIOR = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=1.0)
CONFIG = {
    "study": {"name": "rec", "workload": "tests.tiny_workloads:blobs", "epochs": 2},
    "pruner": {"name": "none"},
}


def _study():
    handle = StudyHandle.in_memory(parse_study_config(CONFIG), PRIOR, blobs())
    tracker = MemoryTracker()
    return handle, tracker, open_recorder(handle, tracker, log_parent=True)


def _trial_runs(tracker: MemoryTracker) -> list:
    return [r for r in tracker.runs.values() if r.tags.get("lrsearch.role") == "trial"]


def test_each_trial_gets_a_run_with_its_params_steps_and_epochs() -> None:
    handle, tracker, recorder = _study()
    run_trials(handle, n_trials=2, recorder=recorder, echo=print)
    recorder.tracker.flush()
    for trial in handle.study.get_trials():
        run = tracker.runs[trial.user_attrs[MLFLOW_RUN_ID]]
        assert run.status == "FINISHED"
        assert float(run.params["max_lr"]) == trial.params["max_lr"]
        per_epoch = handle.plan.steps_per_epoch  # epoch metrics sit at the epoch's last step
        assert [s for s, _ in run.metrics["val_metric"]] == [per_epoch, 2 * per_epoch]
        assert len(run.metrics["lr"]) == handle.plan.total_steps
    assert handle.parent_run_id in tracker.runs


def test_a_dead_workers_trial_fails_and_its_run_closes() -> None:
    handle, tracker, recorder = _study()
    run_trials(handle, n_trials=1, recorder=recorder, echo=print)
    mine, theirs = handle.study.ask(), handle.study.ask()
    mine.set_user_attr(WORKER, "host:1")
    theirs.set_user_attr(WORKER, "host:2")
    record = recorder.start_trial(mine.number, params={}, tags={}, schedule=Constant(lr=0.1))
    mine.set_user_attr(MLFLOW_RUN_ID, record.run_id)
    assert recover_worker(handle, "host:1", recorder) == [mine.number]
    trials = handle.study.get_trials()
    assert trials[mine.number].state == TrialState.FAIL
    assert trials[theirs.number].state == TrialState.RUNNING
    assert tracker.runs[record.run_id].status == "FAILED"
    assert DIED_REASON in str(tracker.runs[record.run_id].tags)


def test_closing_the_study_ends_every_run() -> None:
    handle, tracker, recorder = _study()
    run_trials(handle, n_trials=1, recorder=recorder, echo=print)
    close_study(handle, recorder, interrupted=False)
    assert tracker.runs[handle.parent_run_id].status == "FINISHED"
    assert {r.status for r in _trial_runs(tracker)} == {"FINISHED"}


def test_a_failed_study_still_closes_its_parent_run() -> None:
    handle, tracker, recorder = _study()
    fail_study(handle, recorder, interrupted=False)
    assert tracker.runs[handle.parent_run_id].status == "FAILED"
    handle, tracker, recorder = _study()
    fail_study(handle, recorder, interrupted=True)
    assert tracker.runs[handle.parent_run_id].status == "KILLED"
