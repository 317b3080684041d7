"""A trial's step metrics: every step kept for the run's ``steps.csv``, MLflow points thinned.

MLflow's SQL store costs ~0.08 ms of CPU per metric point (``lrsearch bench --sections
overhead``), three points a step (``lr``, ``momentum``, ``train_loss``): a quarter of a 1 ms
step. So a trial run gets a point every ``every`` steps (and the last step's), and its
``steps.csv`` artifact, written once at the run's end, holds every step exactly.

``every = None`` (``[tracking] step_every = "auto"``) picks the stride that keeps the points'
cost within :data:`DEFAULT_SHARE` of the training time, from the trial's own time per step and
the tracker's measured seconds per point: every step for steps of ~25 ms and more (a GPU model
of any size), one in ten or so for the toy models of a CPU test. The stride is set again at
each point, so a trial whose steps slow down gets more points.

A point's ``train_loss`` (and any metric a loop logs with ``ctx.log``) is the mean over the
steps since the previous point, so no step's loss is left out of the curve; ``lr`` and
``momentum`` are the values at the point's step (the schedule is exact in ``schedule.json``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping

__all__ = ["DEFAULT_SHARE", "SHARE_ENV", "StepSeries", "csv_text", "share"]

SHARE_ENV = "LRSEARCH_TRACKING_SHARE"
"""Environment override of :data:`DEFAULT_SHARE` (e.g. ``1`` for a point every step)."""
DEFAULT_SHARE = 0.01
"""Step points may cost at most this share of the training time (stride ``"auto"``)."""


def share() -> float:
    """The share step points may take: :data:`SHARE_ENV`, else :data:`DEFAULT_SHARE`."""
    raw = os.environ.get(SHARE_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_SHARE
    except ValueError:
        value = DEFAULT_SHARE
    return value if value > 0 else DEFAULT_SHARE


class _Window:
    """One measured metric between two points: the mean of what was logged since the last."""

    __slots__ = ("count", "sent", "total")

    def __init__(self) -> None:
        self.total, self.count, self.sent = 0.0, 0, -1

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def take(self, step: int) -> float:
        mean = self.total / self.count
        self.total, self.count, self.sent = 0.0, 0, step
        return mean


class StepSeries:
    """Every step of one trial, and which of them become MLflow points.

    Args:
        every: a point every this many steps; None: the stride that keeps the points within
            ``share`` of the training time (see the module docstring).
        point_seconds: the tracker's current cost of one point (seconds).
        share: see :func:`share`.
        clock: seconds now (the trial's time per step is measured on it).

    Attributes:
        columns: ``step``, ``lr``, ``momentum``, ``train_loss`` per step, for ``steps.csv``;
            a loop's own metrics (``ctx.log``) as ``(step, value)`` pairs in ``extra``.
    """

    def __init__(
        self,
        every: int | None,
        *,
        point_seconds: Callable[[], float],
        share: float = DEFAULT_SHARE,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if every is not None and every < 1:
            raise ValueError(f"every must be >= 1 or None (auto), got {every=}")
        self.every = every
        self.share = share
        self.steps: list[int] = []
        self.lrs: list[float] = []
        self.momenta: list[float | None] = []
        self.losses: list[float] = []
        self.extra: dict[str, list[tuple[int, float]]] = {}
        self._point_seconds = point_seconds
        self._stride = every or 1
        self._loss = _Window()
        self._windows: dict[str, _Window] = {}
        self._clock = clock
        self._started = clock()

    def add(self, step: int, lr: float, loss: float, momentum: float | None) -> float | None:
        """Keep one step; the point's ``train_loss`` (window mean) when the step is a point."""
        self.steps.append(step)
        self.lrs.append(lr)
        self.momenta.append(momentum)
        self.losses.append(loss)
        window = self._loss
        window.add(loss)
        if window.sent >= 0 and step - window.sent < self._stride:
            return None
        if self.every is None:
            per_point = 2 + (momentum is not None)
            self._stride = self._auto(per_point)
        return window.take(step)

    def add_metrics(self, step: int, values: Mapping[str, float]) -> dict[str, float]:
        """Keep a loop's own metrics at ``step``; those that are due as points (window means)."""
        due: dict[str, float] = {}
        for name, value in values.items():
            self.extra.setdefault(name, []).append((step, value))
            window = self._windows.get(name)
            if window is None:
                window = self._windows[name] = _Window()
            window.add(value)
            if window.sent < 0 or step - window.sent >= self._stride:
                due[name] = window.take(step)
        return due

    def last(self) -> tuple[int, float, float, float | None] | None:
        """The last step as a point (step, lr, window-mean loss, momentum) if it is not one yet."""
        if not self.steps or self._loss.count == 0:
            return None
        return self.steps[-1], self.lrs[-1], self._loss.take(self.steps[-1]), self.momenta[-1]

    def last_metrics(self) -> tuple[int, dict[str, float]] | None:
        """A loop's own metrics still in their windows, at the last step logged."""
        pending = {k: w for k, w in self._windows.items() if w.count}
        if not pending:
            return None
        step = max(self.extra[k][-1][0] for k in pending)
        return step, {k: w.take(step) for k, w in pending.items()}

    def table(self) -> tuple[list[str], list[list[float | int | None]]]:
        """``steps.csv``'s header and rows: a row per step, a loop's own metrics where logged."""
        names = sorted(self.extra)
        header = ["step", "lr", "momentum", "train_loss", *names]
        rows: dict[int, list[float | int | None]] = {}
        for i, step in enumerate(self.steps):
            rows[step] = [step, self.lrs[i], self.momenta[i], self.losses[i], *[None] * len(names)]
        for column, name in enumerate(names, start=4):
            for step, value in self.extra[name]:
                row = rows.setdefault(step, [step, None, None, None, *[None] * len(names)])
                row[column] = value
        return header, [rows[step] for step in sorted(rows)]

    def _auto(self, per_point: int) -> int:
        """The stride whose points cost ``share`` of the time a step has taken so far."""
        seconds_per_step = (self._clock() - self._started) / len(self.steps)
        cost = per_point * self._point_seconds()
        if seconds_per_step <= 0:
            return self._stride
        return max(1, math.ceil(cost / (self.share * seconds_per_step)))


def csv_text(header: list[str], rows: list[list[float | int | None]]) -> str:
    """CSV of ``rows`` (``None`` as an empty cell; floats as ``repr`` writes them: exact)."""

    def cell(value: float | int | None) -> str:
        return "" if value is None else repr(value)

    lines = [",".join(header)]
    lines += [",".join(cell(v) for v in row) for row in rows]
    return "\n".join(lines) + "\n"
