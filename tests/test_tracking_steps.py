"""A trial's step record: every step kept for steps.csv, MLflow points every few steps."""

from __future__ import annotations

import csv
import io

import pytest

from lrsearch.config import parse_study_config
from lrsearch.errors import ConfigError
from lrsearch.tracking import MemoryTracker
from lrsearch.tracking._steps import SHARE_ENV, StepSeries, csv_text, share
from lrsearch.tracking.recorder import STEPS_FILE, StudyRecorder
from lrsearch.training import EpochInfo, StepInfo


class _Clock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _feed(series: StepSeries, steps: int, *, clock: _Clock | None = None, dt: float = 0.0):
    """Steps 0..steps-1 with loss = step; the steps that became points, and their losses."""
    points = {}
    for step in range(steps):
        if clock is not None:
            clock.now += dt
        loss = series.add(step, lr=0.1 + step, loss=float(step), momentum=0.9)
        if loss is not None:
            points[step] = loss
    return points


def test_fixed_stride_points_are_window_means_and_every_step_is_kept() -> None:
    series = StepSeries(4, point_seconds=lambda: 1.0)
    points = _feed(series, 10)
    assert list(points) == [0, 4, 8]
    # a point's loss: the mean over the steps since the previous point
    assert points == {0: 0.0, 4: (1 + 2 + 3 + 4) / 4, 8: (5 + 6 + 7 + 8) / 4}
    assert series.last() == (9, 9.1, 9.0, 0.9)  # the last step ends the curve
    assert series.last() is None  # taken: nothing pending
    header, rows = series.table()
    assert header == ["step", "lr", "momentum", "train_loss"]
    assert [row[0] for row in rows] == list(range(10))
    assert rows[3] == [3, 3.1, 0.9, 3.0]


def test_auto_stride_keeps_points_within_their_share_of_the_training_time() -> None:
    clock = _Clock()
    # a point costs 1 ms, 3 points a step-point, 1% share: 0.3 s of training per point
    slow = StepSeries(None, point_seconds=lambda: 1e-3, share=0.01, clock=clock)
    points = _feed(slow, 100, clock=clock, dt=0.5)  # slow steps: every step is a point
    assert list(points) == list(range(100))
    clock = _Clock()
    fast = StepSeries(None, point_seconds=lambda: 1e-3, share=0.01, clock=clock)
    points = _feed(fast, 1000, clock=clock, dt=0.01)  # 30x faster: every 30th step
    strides = [b - a for a, b in zip(list(points), list(points)[1:], strict=False)]
    assert set(strides[1:]) <= {30, 31} and len(points) in (33, 34)  # (float rounding)
    cost = len(points) * 3 * 1e-3
    assert cost <= 0.01 * 1000 * 0.01 + 3e-3  # within the share (one point of slack)
    # a free store (in memory): every step
    free = StepSeries(None, point_seconds=lambda: 0.0, clock=_Clock())
    assert list(_feed(free, 20)) == list(range(20))


def test_auto_stride_follows_steps_that_slow_down() -> None:
    clock = _Clock()
    series = StepSeries(None, point_seconds=lambda: 1e-3, share=0.01, clock=clock)
    first = _feed(series, 300, clock=clock, dt=0.01)
    later = {}
    for step in range(300, 600):
        clock.now += 1.0  # steps 100x slower: the mean step time rises, the stride falls
        if series.add(step, lr=0.1, loss=1.0, momentum=None) is not None:
            later[step] = True
    assert len(first) <= 12
    assert len(later) > 250  # nearly every slow step is a point


def test_a_loops_own_metrics_get_window_means_at_the_same_stride() -> None:
    series = StepSeries(3, point_seconds=lambda: 1.0)
    due = [series.add_metrics(step, {"acc": float(step)}) for step in range(7)]
    assert [sorted(d) for d in due] == [["acc"], [], [], ["acc"], [], [], ["acc"]]
    assert due[3]["acc"] == (1 + 2 + 3) / 3
    # logged every 10 steps with a stride of 3: each value is a point of its own
    sparse = StepSeries(3, point_seconds=lambda: 1.0)
    assert [sparse.add_metrics(s, {"bleu": s / 10}) for s in (0, 10, 20)] == [
        {"bleu": 0.0},
        {"bleu": 1.0},
        {"bleu": 2.0},
    ]
    series.add_metrics(7, {"acc": 7.0})
    assert series.last_metrics() == (7, {"acc": 7.0})
    header, rows = series.table()
    assert header == ["step", "lr", "momentum", "train_loss", "acc"]
    assert rows[2] == [2, None, None, None, 2.0]  # no step record, a metric of the loop's


def test_csv_is_exact() -> None:
    header, rows = ["step", "lr"], [[0, 0.1 + 0.2], [1, None]]
    parsed = list(csv.reader(io.StringIO(csv_text(header, rows))))
    assert parsed == [["step", "lr"], ["0", repr(0.1 + 0.2)], ["1", ""]]
    assert float(parsed[1][1]) == 0.1 + 0.2


def test_share_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(SHARE_ENV, raising=False)
    assert share() == 0.01
    monkeypatch.setenv(SHARE_ENV, "1")
    assert share() == 1.0
    for bad in ("x", "0", "-1"):
        monkeypatch.setenv(SHARE_ENV, bad)
        assert share() == 0.01


@pytest.mark.parametrize("every", [5, None])
def test_trial_run_gets_points_every_few_steps_and_steps_csv_every_step(every) -> None:
    tracker = MemoryTracker()
    recorder = StudyRecorder(tracker, "s", None, metric="accuracy", step_every=every)
    recorder.open_parent({}, {})
    from lrsearch.schedules import Constant

    record = recorder.start_trial(
        0, params={"max_lr": 0.1}, tags={}, schedule=Constant(0.1, total_steps=12)
    )
    assert record is not None
    for step in range(12):
        ratio = 0.5 if step % 6 == 0 else None
        record.step(StepInfo(step, 0, 0.1, 0.9, float(step), ratio))
    record.epoch(EpochInfo(1, 12, 1.0, 1.0, 0.5))
    record.end("COMPLETE", final=(12, 0.5))
    tracker.drain()
    run = tracker.runs[record.run_id]
    lr_steps = [s for s, _ in run.metrics["lr"]]
    # in memory a point is free: auto means every step
    assert lr_steps == ([0, 5, 10, 11] if every == 5 else list(range(12)))
    assert [s for s, _ in run.metrics["update_ratio"]] == [0, 6]  # as measured, not thinned
    if every == 5:
        assert run.metrics["train_loss"] == [(0, 0.0), (5, 3.0), (10, 8.0), (11, 11.0)]
    rows = list(csv.DictReader(io.StringIO(str(run.artifacts[STEPS_FILE]))))
    assert [int(r["step"]) for r in rows] == list(range(12))
    assert [float(r["train_loss"]) for r in rows] == [float(s) for s in range(12)]


def test_tracker_times_a_point_on_big_batches() -> None:
    tracker = MemoryTracker()
    assert tracker.point_seconds() == 0.0  # assumed for memory, until timed
    parent = tracker.start_study("s", params={}, tags={})
    run = tracker.start_trial(parent, 0, params={}, tags={})
    run.log_step(0, lr=0.1)  # one point: too few to time
    run.flush()
    assert tracker._point_seconds is None
    tracker.log_series(run.run_id, "x", [(s, 1.0) for s in range(200)])
    assert tracker._point_seconds is not None and 0 < tracker.point_seconds() < 1e-3


def test_step_every_in_the_study_file() -> None:
    base = {"study": {"name": "s", "workload": "digits-mlp"}}
    assert parse_study_config(base).tracking.step_every == "auto"
    assert parse_study_config({**base, "tracking": {"step_every": 4}}).tracking.step_every == 4
    for bad in (0, "sometimes"):
        with pytest.raises(ConfigError, match="step_every"):
            parse_study_config({**base, "tracking": {"step_every": bad}})
