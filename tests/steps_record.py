"""Reading a trial run's step record: every step in ``steps.csv``, MLflow points every few."""

from __future__ import annotations

import csv
from collections.abc import Sequence

import pytest
from mlflow import MlflowClient


def steps_csv(client: MlflowClient, run_id: str) -> list[dict[str, str]]:
    """The run's ``steps.csv`` as one dict per row (empty string: not logged at that step)."""
    path = client.download_artifacts(run_id, "steps.csv")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_steps(
    client: MlflowClient, run_id: str, total: int, expected_lr: Sequence[float] | None = None
) -> list[int]:
    """``steps.csv`` holds steps 0..total-1 (their ``lr`` equal to ``expected_lr`` where given),
    each with a loss; MLflow's ``lr``, ``momentum`` and ``train_loss`` points start at step 0
    and end at the last step, at the same steps, with ``lr`` equal to the record's. Returns the
    points' steps."""
    rows = steps_csv(client, run_id)
    assert [int(row["step"]) for row in rows] == list(range(total))
    assert all(row["train_loss"] for row in rows)
    lrs = [float(row["lr"]) for row in rows]
    if expected_lr is not None:
        assert lrs == pytest.approx(list(expected_lr), rel=1e-9)
    history = sorted(client.get_metric_history(run_id, "lr"), key=lambda m: m.step)
    points = [m.step for m in history]
    assert points[0] == 0 and points[-1] == total - 1 and points == sorted(set(points))
    assert [m.value for m in history] == pytest.approx([lrs[s] for s in points], rel=1e-12)
    for key in ("train_loss", "momentum"):
        got = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert got == points, key
    return points
