"""The tracker contract: runs, batched step metrics, resume of a study's parent run."""

from __future__ import annotations

import abc
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from lrsearch.errors import TrackingError
from lrsearch.tracking._scrub import as_text, scrub

if TYPE_CHECKING:
    from types import TracebackType

Status = Literal["FINISHED", "FAILED", "KILLED"]
END_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")
ROLE, STUDY, TRIAL = "lrsearch.role", "lrsearch.study", "lrsearch.trial"
PARENT = "mlflow.parentRunId"  # MLflow nests runs by this tag

# MLflow's log_batch limits (mlflow.utils.validation): 1000 metrics, 100 params, 100 tags and
# 1000 entities in all per call; longer param/tag values are truncated by the store anyway.
MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH = 1000, 100
MAX_PARAM_LENGTH, MAX_TAG_LENGTH = 6000, 8000
_TIMED_BATCH = 100  # batches this big or bigger time the cost of a point (Tracker.point_seconds)


def _check_status(status: str) -> None:
    if status not in END_STATUSES:
        raise ValueError(f"status must be one of {list(END_STATUSES)}, got {status=}")


Pairs = list[tuple[str, str]]
_SENDER = "lrsearch-mlflow"  # the sender thread's name


class _Point(NamedTuple):
    key: str
    value: float
    timestamp: int  # milliseconds, as MLflow stores them
    step: int


@dataclass(frozen=True)
class TrialRunInfo:
    """What :meth:`Tracker.find_trial_runs` reports about one trial's run."""

    run_id: str
    trial_number: int
    status: str  # RUNNING, FINISHED, FAILED, KILLED (or SCHEDULED)


@dataclass(frozen=True)
class _RunRecord:
    run_id: str
    status: str
    start_time: int
    tags: dict[str, str]


class TrialRun:
    """Records one run: step metrics buffered and sent in batches, the rest sent at once.

    Built by :meth:`Tracker.start_trial` or :meth:`Tracker.start_run`; one per thread. As a
    context manager it ends the run FINISHED, or FAILED (KILLED on ``KeyboardInterrupt``) when an
    exception escapes, unless :meth:`end` was already called.

    Attributes:
        run_id: the tracking store's id of the run.
        points_logged: metric points this recorder has sent so far (buffered ones excluded).
    """

    def __init__(self, tracker: Tracker, run_id: str) -> None:
        self.run_id = run_id
        self.points_logged = 0
        self.points_unsent = 0
        self._tracker = tracker
        self._buffer: list[_Point] = []
        self._pending: list[tuple[list[_Point], Future[None]]] = []
        self._ended = False
        self._last_send = time.monotonic()
        tracker._open[run_id] = self

    @property
    def ended(self) -> bool:
        return self._ended

    def log_step(self, step: int, **metrics: float) -> None:
        """Buffer per-step values (``lr``, ``momentum``, ``train_loss``, ...).

        NaN is stored as NaN; MLflow's SQL stores keep ``±inf`` as ``±1.797e308``. A full
        buffer goes out on the tracker's sender thread, so training does not wait for the
        store.
        """
        self._add(step, metrics)
        if len(self._buffer) >= self._tracker.flush_every:
            self._send_in_background()

    def log_epoch(self, step: int, **metrics: float) -> None:
        """Record validation metrics; they travel with the step buffer, in order.

        They go out (in the background, with everything before them) once the last send is
        ``flush_seconds`` old, so the MLflow UI is at most that far behind, and a short trial
        sends one batch instead of one per epoch: each batch costs the store ~17 ms of CPU.
        """
        self._add(step, metrics)
        if time.monotonic() - self._last_send >= self._tracker.flush_seconds:
            self._send_in_background()

    def _send_in_background(self) -> None:
        self._last_send = time.monotonic()
        self._collect(block=False)
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            del self._buffer[: len(chunk)]
            future = self._tracker._sender().submit(self._tracker._send, self.run_id, points=chunk)
            self._pending.append((chunk, future))

    def _collect(self, *, block: bool) -> list[_Point]:
        """Account for finished background sends; returns the points of failed ones."""
        failed: list[_Point] = []
        still: list[tuple[list[_Point], Future[None]]] = []
        for chunk, future in self._pending:
            if not block and not future.done():
                still.append((chunk, future))
            elif future.exception() is None:
                self.points_logged += len(chunk)
            else:
                failed += chunk
        self._pending = still
        if failed:  # keep them, in order, for the next try
            self._buffer[:0] = failed
        return failed

    def flush(self) -> None:
        """Wait for background sends, then send what is buffered (failed sends included).

        Raises:
            TrackingError: the store still refuses; the points stay buffered for a later try.
        """
        self._collect(block=True)
        while self._buffer:
            chunk = self._buffer[:MAX_METRICS_PER_BATCH]
            self._tracker._send(self.run_id, points=chunk)
            del self._buffer[: len(chunk)]
            self.points_logged += len(chunk)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._tracker.log_params(self.run_id, params)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._tracker.set_tags(self.run_id, tags)

    def log_text(self, name: str, text: str) -> None:
        """Store ``text`` (scrubbed) as the artifact ``name``, e.g. ``"schedule.json"``."""
        self._tracker.log_artifact_text(self.run_id, name, text)

    def log_table(self, name: str, header: list[str], rows: list[list[float | int | None]]) -> None:
        """Store ``rows`` as the CSV artifact ``name`` (see :meth:`Tracker.log_artifact_table`)."""
        self._tracker.log_artifact_table(self.run_id, name, header, rows)

    def log_file(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Upload a local file as it is (not scrubbed)."""
        self._tracker.log_artifact_file(self.run_id, path, artifact_path)

    def log_step_values(
        self,
        step: int,
        lr: float | None,
        loss: float | None,
        momentum: float | None,
        ratio: float | None,
    ) -> None:
        """:meth:`log_step` of one training step's values (None: not at this step), without
        building a dict."""
        if self._ended:
            raise RuntimeError(f"run {self.run_id} has ended; no more metrics can be logged")
        now = int(time.time() * 1000)
        add = self._buffer.append
        if lr is not None:
            add(_Point("lr", float(lr), now, step))
        if loss is not None:
            add(_Point("train_loss", float(loss), now, step))
        if momentum is not None:
            add(_Point("momentum", float(momentum), now, step))
        if ratio is not None:
            add(_Point("update_ratio", float(ratio), now, step))
        if len(self._buffer) >= self._tracker.flush_every:
            self._send_in_background()

    def end(
        self,
        status: str,
        *,
        tags: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        """Flush, log ``params``, set ``tags``, then mark the run ``status``; a second call
        does nothing. The last points, the params and the tags go in one batch where they fit
        (each batch is a round trip, and a commit, in the store)."""
        _check_status(status)
        if self._ended:
            return
        try:
            self._collect(block=True)
            while len(self._buffer) > MAX_METRICS_PER_BATCH:
                chunk = self._buffer[:MAX_METRICS_PER_BATCH]
                self._tracker._send(self.run_id, points=chunk)
                del self._buffer[: len(chunk)]
                self.points_logged += len(chunk)
            last = list(self._buffer)
            self._tracker._send(self.run_id, points=last, params=params, tags=tags)
            self._buffer.clear()
            self.points_logged += len(last)
            tags = params = None  # sent
        except TrackingError:
            # The store is down: the run still ends truthfully where possible, and says how
            # many points it could not record instead of losing them silently.
            self.points_unsent = len(self._buffer)
            self._buffer.clear()
            tags = {**(tags or {}), "lrsearch.metrics_not_logged": str(self.points_unsent)}
            print(
                f"warning: run {self.run_id}: {self.points_unsent} metric points could not be "
                "logged (tracking store unreachable)",
                file=sys.stderr,
            )
        if tags or params:
            self._tracker._send(self.run_id, params=params, tags=tags)
        self._tracker._set_status(self.run_id, status)
        self._ended = True
        self._tracker._open.pop(self.run_id, None)

    def _add(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._ended:
            raise RuntimeError(f"run {self.run_id} has ended; no more metrics can be logged")
        now = int(time.time() * 1000)
        self._buffer.extend(_Point(k, float(v), now, int(step)) for k, v in metrics.items())

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.end("FINISHED")
        else:
            self.end("FAILED" if issubclass(kind, Exception) else "KILLED")


class Tracker(abc.ABC):
    """Where studies, trials and range tests are recorded.

    The public methods hold the logic (resume, batching, scrubbing, limits); subclasses provide
    the storage primitives. Params are write-once: logging a different value for a key a run
    already has raises :class:`TrackingError`.

    Attributes:
        flush_every: a :class:`TrialRun` sends its buffer once it holds this many points.
        flush_seconds: ... or, at an epoch's end, once its last send is this many seconds old.
        points_logged: metric points sent by this tracker, over all runs.
        ends_in_background: a trial run's end (its last points, then its status) goes out on
            the sender thread, after the points already handed to it, while training goes on;
            :meth:`drain` waits for it (reads of runs and :meth:`end_run` do).
    """

    ends_in_background = False
    assumed_point_seconds = 1e-4
    """What one metric point is taken to cost until a batch has been timed (MLflow's SQLite
    store: 0.074-0.09 ms of CPU, ``lrsearch bench --sections overhead``)."""

    def __init__(self, *, flush_every: int = 1000, flush_seconds: float = 5.0) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every=}")
        if flush_seconds < 0:
            raise ValueError(f"flush_seconds must be >= 0, got {flush_seconds=}")
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self.points_logged = 0
        self.artifacts = True  # False: files cannot be stored here; artifact calls do nothing
        self._open: dict[str, TrialRun] = {}
        self._parents: dict[str, tuple[str, str | None]] = {}  # run id -> experiment, study
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._point_seconds: float | None = None  # measured: see point_seconds()

    def point_seconds(self) -> float:
        """Seconds one metric point costs to write: timed on batches of 100 points or more
        (a running mean), :attr:`assumed_point_seconds` before the first."""
        measured = self._point_seconds
        return self.assumed_point_seconds if measured is None else measured

    def _sender(self) -> ThreadPoolExecutor:
        """One background thread per tracker: step metrics go out in order, off the hot loop."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_SENDER)
        return self._executor

    def drain(self) -> None:
        """Wait until everything handed to the sender thread so far is written (or failed)."""
        on_sender = threading.current_thread().name.startswith(_SENDER)
        if self._executor is not None and not on_sender:  # (there, all before it is done)
            self._executor.submit(lambda: None).result()

    def start_study(
        self, study_name: str, *, params: Mapping[str, Any], tags: Mapping[str, Any]
    ) -> str:
        """The study's parent run id, created on the first call and reused on every later one.

        On reuse the run is marked RUNNING again, new params are added, and a param whose value
        changed keeps its first value, the new one going to the tag ``lrsearch.resumed.<key>``.
        """
        experiment_id = self._experiment(study_name, create=True)
        assert experiment_id is not None
        marks = {ROLE: "study", STUDY: study_name}
        parent = self._find_parent(experiment_id, study_name)
        if parent is None:
            created = self._new_run(experiment_id, study_name, {**tags, **marks})
            # Workers racing to create the parent all settle on the oldest one.
            parent = self._find_parent(experiment_id, study_name) or created
            if parent != created:
                self._delete_run(created)
        else:
            self._set_status(parent, "RUNNING")
        new, old = dict(_texts(params, MAX_PARAM_LENGTH)), self._params(parent)
        self.log_params(parent, {k: v for k, v in new.items() if k not in old})
        resumed = {f"lrsearch.resumed.{k}": v for k, v in new.items() if old.get(k, v) != v}
        self.set_tags(parent, {**tags, **marks, **resumed})
        return parent

    def start_trial(
        self,
        parent_run_id: str,
        trial_number: int,
        *,
        params: Mapping[str, Any],
        tags: Mapping[str, Any],
    ) -> TrialRun:
        """A nested run ``trial-<n>`` under the study's parent run."""
        if parent_run_id not in self._parents:  # read once: a parent's experiment and study
            experiment_id, parent_tags = self._run_context(parent_run_id)  # never change
            self._parents[parent_run_id] = (experiment_id, parent_tags.get(STUDY))
        experiment_id, study = self._parents[parent_run_id]
        marks = {ROLE: "trial", TRIAL: str(trial_number), PARENT: parent_run_id}
        if study is not None:
            marks[STUDY] = study
        run_id = self._new_run(experiment_id, f"trial-{trial_number}", {**tags, **marks})
        self.log_params(run_id, params)
        return TrialRun(self, run_id)

    def start_run(
        self, experiment: str, *, run_name: str, params: Mapping[str, Any], tags: Mapping[str, Any]
    ) -> TrialRun:
        """A top-level run in ``experiment`` (created if needed), e.g. a standalone range test."""
        experiment_id = self._experiment(experiment, create=True)
        assert experiment_id is not None
        run_id = self._new_run(experiment_id, run_name, tags)
        self.log_params(run_id, params)
        return TrialRun(self, run_id)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        self._send(run_id, params=params)

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self._send(run_id, tags=tags)

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        """Send ``metrics`` at once (one batch), at ``step`` (0 when not given)."""
        now = int(time.time() * 1000)
        self._send(run_id, points=[_Point(k, float(v), now, step or 0) for k, v in metrics.items()])

    def log_series(self, run_id: str, key: str, points: Sequence[tuple[int, float]]) -> None:
        """Send one metric's ``(step, value)`` points at once, in as few batches as allowed."""
        now = int(time.time() * 1000)
        self._send(run_id, points=[_Point(key, float(v), now, int(s)) for s, v in points])

    def log_artifact_text(
        self, run_id: str, name: str, text: str, artifact_path: str | None = None
    ) -> None:
        """Store ``text``, scrubbed, as the artifact ``[artifact_path/]name``."""
        if not self.artifacts:
            return
        self._log_text(run_id, f"{artifact_path}/{name}" if artifact_path else name, scrub(text))

    def log_artifact_table(
        self, run_id: str, name: str, header: list[str], rows: list[list[float | int | None]]
    ) -> None:
        """Store ``rows`` under ``header`` as the CSV artifact ``name`` (numbers: not scrubbed;
        a writer process formats it, where there is one)."""
        if self.artifacts:
            self._log_table(run_id, name, header, rows)

    def _log_table(
        self, run_id: str, name: str, header: list[str], rows: list[list[float | int | None]]
    ) -> None:
        from lrsearch.tracking._steps import csv_text

        self._log_text(run_id, name, csv_text(header, rows))

    def log_artifact_file(
        self, run_id: str, path: Path | str, artifact_path: str | None = None
    ) -> None:
        """Upload a local file as it is (not scrubbed) under ``artifact_path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"artifact file {path} does not exist")
        if self.artifacts:
            self._log_file(run_id, path, artifact_path)

    def end_run(self, run_id: str, status: Status) -> None:
        """Flush the run's open recorder if it has one, then mark the run ``status``."""
        _check_status(status)
        self.drain()  # a trial's end still on its way: after it, not before
        recorder = self._open.get(run_id)
        if recorder is not None:
            recorder.end(status)
        else:
            self._set_status(run_id, status)

    def find_trial_runs(self, study_name: str) -> list[TrialRunInfo]:
        """Every trial run of the study, ordered by trial number, then start time."""
        self.drain()  # the runs as they will be, trial ends still on the sender included
        experiment_id = self._experiment(study_name, create=False)
        if experiment_id is None:
            return []
        records = [r for r in self._find_runs(experiment_id, "trial") if TRIAL in r.tags]
        records.sort(key=lambda r: (int(r.tags[TRIAL]), r.start_time, r.run_id))
        return [TrialRunInfo(r.run_id, int(r.tags[TRIAL]), r.status) for r in records]

    def flush(self) -> None:
        """Send what every open :class:`TrialRun` still buffers, and wait for trial ends."""
        self.drain()
        for recorder in list(self._open.values()):
            recorder.flush()

    def _new_run(self, experiment_id: str, run_name: str, tags: Mapping[str, Any]) -> str:
        return self._create_run(experiment_id, scrub(run_name), dict(_texts(tags, MAX_TAG_LENGTH)))

    def _find_parent(self, experiment_id: str, study_name: str) -> str | None:
        runs = self._find_runs(experiment_id, "study")
        found = [r for r in runs if r.tags.get(STUDY) == study_name]
        return min(found, key=lambda r: (r.start_time, r.run_id)).run_id if found else None

    def _send(
        self,
        run_id: str,
        *,
        points: Sequence[_Point] = (),
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, Any] | None = None,
    ) -> None:
        """Write in chunks within MLflow's per-batch limits (the last points with the first
        params and tags: one round trip fewer)."""
        param_items = _texts(params or {}, MAX_PARAM_LENGTH)
        tag_items = _texts(tags or {}, MAX_TAG_LENGTH)
        extras = [
            (
                param_items[start : start + MAX_PARAMS_TAGS_PER_BATCH],
                tag_items[start : start + MAX_PARAMS_TAGS_PER_BATCH],
            )
            for start in range(0, max(len(param_items), len(tag_items)), MAX_PARAMS_TAGS_PER_BATCH)
        ]
        starts = range(0, len(points), MAX_METRICS_PER_BATCH)
        for start in starts:
            chunk = points[start : start + MAX_METRICS_PER_BATCH]
            with_extras = extras.pop(0) if start == starts[-1] and extras else ([], [])
            began = time.perf_counter()
            self._write(run_id, chunk, *with_extras)
            with self._lock:  # the sender thread and the caller both count here
                self.points_logged += len(chunk)
                if len(chunk) >= _TIMED_BATCH:
                    self._timed(time.perf_counter() - began, len(chunk))
        for some_params, some_tags in extras:
            self._write(run_id, [], some_params, some_tags)

    def _timed(self, seconds: float, points: int) -> None:
        per_point = seconds / points
        old = self._point_seconds
        self._point_seconds = per_point if old is None else (old + per_point) / 2

    # Storage primitives.
    @abc.abstractmethod
    def _experiment(self, name: str, *, create: bool) -> str | None: ...

    @abc.abstractmethod
    def _create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, Any]) -> str: ...

    @abc.abstractmethod
    def _run_context(self, run_id: str) -> tuple[str, dict[str, str]]:
        """The run's experiment id and tags."""

    @abc.abstractmethod
    def _find_runs(self, experiment_id: str, role: str) -> list[_RunRecord]: ...

    @abc.abstractmethod
    def _params(self, run_id: str) -> dict[str, str]: ...

    @abc.abstractmethod
    def _write(self, run_id: str, points: Sequence[_Point], params: Pairs, tags: Pairs) -> None: ...

    @abc.abstractmethod
    def _set_status(self, run_id: str, status: str) -> None: ...

    @abc.abstractmethod
    def _delete_run(self, run_id: str) -> None: ...

    @abc.abstractmethod
    def _log_text(self, run_id: str, artifact_file: str, text: str) -> None: ...

    @abc.abstractmethod
    def _log_file(self, run_id: str, path: Path, artifact_path: str | None) -> None: ...


def _texts(items: Mapping[str, Any], limit: int) -> list[tuple[str, str]]:
    return [(key, as_text(value)[:limit]) for key, value in items.items()]
