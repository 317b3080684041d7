"""The MLflow writer process: the store's writes leave the training process, nothing else changes."""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from lrsearch.errors import TrackingError
from lrsearch.schedules import Constant
from lrsearch.tracking import MlflowTracker, local_tracking_uri
from lrsearch.tracking._writer import POLL_SECONDS, Writer
from lrsearch.tracking.recorder import StudyRecorder


@pytest.fixture
def uri(tmp_path: Path, mlflow_db_template: Path) -> str:
    root = tmp_path / "store"
    root.mkdir()
    shutil.copy(mlflow_db_template, root / "mlflow.db")
    return local_tracking_uri(root)[0]


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def _no_writes_here(tracker: MlflowTracker, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("written in the training process")

    for name in ("log_batch", "set_terminated"):
        monkeypatch.setattr(tracker._client, name, refuse)


def test_the_writer_process_writes_every_point_sent_in_order_then_ends_the_run(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(uri, flush_every=500)
    assert tracker.ends_in_background and tracker._writer is not None
    recorder = StudyRecorder(tracker, "w", None, metric="acc")
    recorder.open_parent({}, {})
    record = recorder.start_trial(0, params={"max_lr": 0.1}, tags={}, schedule=Constant(lr=0.1))
    assert record is not None
    _no_writes_here(tracker, monkeypatch)
    cpu_before = tracker.writer_cpu_seconds()
    steps = 700  # 2,100 points: four batches on the sender thread, the rest at the end
    for step in range(steps):
        record._run.log_step_values(step, 0.001 * step, 2.0 - 0.001 * step, 0.9, None)
    record._run.log_epoch(steps - 1, val_acc=0.5)
    assert record.end("COMPLETE", final=(steps - 1, 0.5)) == {}  # handed over, not waited for
    tracker.drain()
    client = _client(uri)
    history = {k: client.get_metric_history(record.run_id, k) for k in ("lr", "train_loss")}
    assert [(m.step, m.value) for m in history["lr"]] == [(s, 0.001 * s) for s in range(steps)]
    assert [m.value for m in history["train_loss"]] == [2.0 - 0.001 * s for s in range(steps)]
    assert len(client.get_metric_history(record.run_id, "momentum")) == steps
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["final_val_acc"] == 0.5
    assert run.data.params["max_lr"] == "0.1" and "duration_s" in run.data.params
    assert run.data.tags["lrsearch.state"] == "COMPLETE"
    assert max(m.timestamp for m in history["lr"]) <= run.info.end_time  # closed after them
    cpu_after = tracker.writer_cpu_seconds()
    assert cpu_before is not None and cpu_after is not None and cpu_after > cpu_before


def test_a_killed_writer_is_one_line_and_the_run_still_ends_whole(
    uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = MlflowTracker(uri, flush_every=100, writer=False)
    writer = tracker._writer = Writer()  # its own, not the one other tests share
    trial = tracker.start_trial(tracker.start_study("k", params={}, tags={}), 0, params={}, tags={})
    for step in range(50):
        trial.log_step(step, lr=0.1)
    trial.flush()  # through the writer
    os.kill(writer.process.pid, signal.SIGKILL)
    writer.process.wait()
    for step in range(50, 100):
        trial.log_step(step, lr=0.1)
    started = time.monotonic()
    with pytest.raises(TrackingError, match=r"^MLflow writer process \d+ died \(exit code -9\)"):
        trial.flush()
    assert time.monotonic() - started < 5 * POLL_SECONDS  # said at once, no hang
    trial.end("FINISHED")  # in this process now; the points that failed go out again
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and "writer process" in err[0] and "died" in err[0]
    run = _client(uri).get_run(trial.run_id)
    assert run.info.status == "FINISHED"
    assert len(_client(uri).get_metric_history(trial.run_id, "lr")) == 100


def test_runs_are_created_by_the_writer_process_and_here_once_it_died(
    uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracker = MlflowTracker(uri, writer=False)
    writer = tracker._writer = Writer()  # its own: this test kills it
    asked: list[str] = []
    created_here: list[str] = []
    call, create_run = writer.call, tracker._client.create_run

    def asking(key: Any, op: str, *args: Any) -> Any:
        asked.append(op)
        return call(key, op, *args)

    def creating_here(*args: Any, **kwargs: Any) -> Any:
        created_here.append(kwargs["run_name"])
        return create_run(*args, **kwargs)

    monkeypatch.setattr(writer, "call", asking)  # both still do the work: observed only
    monkeypatch.setattr(tracker._client, "create_run", creating_here)
    parent = tracker.start_study("c", params={}, tags={"owner": "me"})
    trial = tracker.start_trial(parent, 0, params={}, tags={"lrsearch.trial": "0"})
    assert asked.count("_create_run_here") == 2 and created_here == []
    client = _client(uri)
    assert client.get_run(parent).data.tags["owner"] == "me"
    run = client.get_run(trial.run_id)
    assert run.data.tags["lrsearch.trial"] == "0"
    assert run.data.tags["mlflow.parentRunId"] == parent

    os.kill(writer.process.pid, signal.SIGKILL)
    writer.process.wait()
    with pytest.raises(TrackingError, match="died"):
        tracker.start_trial(parent, 1, params={}, tags={})  # the call that finds it dead
    again = tracker.start_trial(parent, 1, params={}, tags={})  # then written here
    assert len(created_here) == 1 and client.get_run(again.run_id).info.status == "RUNNING"
    trial.end("FINISHED")
    again.end("FINISHED")
