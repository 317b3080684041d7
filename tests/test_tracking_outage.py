"""The tracking store goes down for a while: trials go on, and nothing is lost silently."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from lrsearch.config import parse_study_config
from lrsearch.errors import TrackingError
from lrsearch.study import open_study
from lrsearch.tracking import MemoryTracker
from lrsearch.tracking.recorder import StudyRecorder
from lrsearch.workers import run_trials


class FlakyTracker(MemoryTracker):
    """An in-memory store that refuses every write while ``down`` is set."""

    down = False

    def _write(self, run_id, points, params, tags):
        if self.down:
            raise TrackingError("tracking store unreachable (simulated outage)")
        super()._write(run_id, points, params, tags)

    def _set_status(self, run_id, status):
        if self.down:
            raise TrackingError("tracking store unreachable (simulated outage)")
        super()._set_status(run_id, status)


@pytest.fixture
def handle(tmp_path):
    config = parse_study_config(
        {
            "study": {
                "name": "outage",
                "workload": "tests.tiny_workloads:blobs",
                "n_trials": 3,
                "epochs": 4,
            },
            "range_test": {"repeats": 1, "num_iter": 40},
            "prior": {"startup": "prior"},  # every trial trains: no probe a decade out
            "pruner": {"name": "none"},
            "tracking": {"update_ratio_every": 0},
        }
    )
    return open_study(config, f"sqlite:///{tmp_path / 'optuna.db'}", tracking_uri=None)


def _run(handle, tracker, *, down_at_epoch: int, up_at_epoch: int | None):
    recorder = StudyRecorder(tracker, handle.name, None)
    handle.set_parent_run(recorder.open_parent({}, {}))

    def on_epoch(number: int, epoch: int, epochs: int) -> None:
        if number == 1 and epoch == down_at_epoch:
            tracker.down = True
        if number == 1 and epoch == up_at_epoch:
            tracker.down = False

    run_trials(handle, n_trials=3, recorder=recorder, on_epoch=on_epoch, echo=lambda s: None)
    return handle.study.trials


def test_a_short_outage_loses_no_point(handle) -> None:
    tracker = FlakyTracker(flush_every=5)
    trials = _run(handle, tracker, down_at_epoch=1, up_at_epoch=3)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    epochs, steps_per_epoch = handle.plan.epochs, handle.plan.steps_per_epoch
    for t in trials:
        run = tracker.runs[t.user_attrs["mlflow_run_id"]]
        assert len(run.metrics["lr"]) == epochs * steps_per_epoch  # buffered, then sent
        assert run.status == "FINISHED"


def test_an_outage_past_the_end_is_said_and_the_study_goes_on(handle, capsys) -> None:
    tracker = FlakyTracker(flush_every=5)
    trials = _run(handle, tracker, down_at_epoch=1, up_at_epoch=None)
    tracker.down = False
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3  # training never stopped
    troubled = [
        t
        for t in trials
        if "tracking_error" in t.user_attrs or "metrics_not_logged" in t.user_attrs
    ]
    assert troubled, [t.user_attrs for t in trials]
    assert "could not" in capsys.readouterr().err
    assert optuna.trial.TrialState.RUNNING not in {t.state for t in trials}
