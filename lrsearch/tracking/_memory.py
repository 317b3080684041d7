"""An in-memory tracker: the test double that behaves like MLflow's SQL stores."""

from __future__ import annotations

import itertools
import math
import sys
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lrsearch.errors import TrackingError
from lrsearch.tracking._base import ROLE, Pairs, Tracker, _Point, _RunRecord


@dataclass
class MemoryRun:
    """One run as :class:`MemoryTracker` keeps it; ``metrics`` maps a key to its (step, value)s."""

    run_id: str
    experiment: str
    name: str
    start_time: int
    status: str = "RUNNING"
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[str, str | bytes] = field(default_factory=dict)
    deleted: bool = False


class MemoryTracker(Tracker):
    """An in-memory :class:`Tracker` for tests: no MLflow, same behaviour.

    It mirrors what MLflow's SQL stores do where callers could notice: params are write-once,
    ``±inf`` comes back as ``±1.797e308``, runs carry ``mlflow.runName``.

    Attributes:
        runs: run id -> :class:`MemoryRun`, in creation order.
        experiments: experiment name -> id.
        metric_batches: how many metric batches were written (what ``log_batch`` calls would be).
    """

    assumed_point_seconds = 0.0  # in memory: a point costs next to nothing

    def __init__(self, *, flush_every: int = 1000, flush_seconds: float = 5.0) -> None:
        super().__init__(flush_every=flush_every, flush_seconds=flush_seconds)
        self.runs: dict[str, MemoryRun] = {}
        self.experiments: dict[str, str] = {}
        self.metric_batches = 0
        self._clock = itertools.count()

    def _get(self, run_id: str) -> MemoryRun:
        run = self.runs.get(run_id)
        if run is None or run.deleted:
            raise TrackingError(f"run {run_id!r} not found in the in-memory tracker")
        return run

    def _experiment(self, name: str, *, create: bool) -> str | None:
        if name not in self.experiments and create:
            self.experiments[name] = str(len(self.experiments) + 1)
        return self.experiments.get(name)

    def _create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, Any]) -> str:
        run_id = uuid.uuid4().hex
        tags = {**tags, "mlflow.runName": run_name}
        self.runs[run_id] = MemoryRun(run_id, experiment_id, run_name, next(self._clock), tags=tags)
        return run_id

    def _run_context(self, run_id: str) -> tuple[str, dict[str, str]]:
        run = self._get(run_id)
        return run.experiment, dict(run.tags)

    def _find_runs(self, experiment_id: str, role: str) -> list[_RunRecord]:
        return [
            _RunRecord(r.run_id, r.status, r.start_time, dict(r.tags))
            for r in self.runs.values()
            if r.experiment == experiment_id and not r.deleted and r.tags.get(ROLE) == role
        ]

    def _params(self, run_id: str) -> dict[str, str]:
        return dict(self._get(run_id).params)

    def _write(self, run_id: str, points: Sequence[_Point], params: Pairs, tags: Pairs) -> None:
        run = self._get(run_id)
        for key, text in params:
            if run.params.get(key, text) != text:
                raise TrackingError(
                    f"param {key!r} of run {run_id} is {run.params[key]!r}; "
                    f"changing it to {text!r} is not allowed"
                )
        run.params.update(params)
        run.tags.update(tags)
        for p in points:
            value = math.copysign(sys.float_info.max, p.value) if math.isinf(p.value) else p.value
            run.metrics.setdefault(p.key, []).append((p.step, value))
        self.metric_batches += bool(points)

    def _set_status(self, run_id: str, status: str) -> None:
        self._get(run_id).status = status

    def _delete_run(self, run_id: str) -> None:
        self._get(run_id).deleted = True

    def _log_text(self, run_id: str, artifact_file: str, text: str) -> None:
        self._get(run_id).artifacts[artifact_file] = text

    def _log_file(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        name = f"{artifact_path}/{path.name}" if artifact_path else path.name
        self._get(run_id).artifacts[name] = path.read_bytes()
