"""Recording studies, trials and range tests in MLflow, with batched step metrics.

The search layer talks to a :class:`Tracker` with plain strings, floats and dicts; it never sees
Optuna here and MLflow is imported only when an :class:`MlflowTracker` is built. Each study gets
an experiment of the same name holding one parent run (tag ``lrsearch.role=study``) and one
nested run per trial (``lrsearch.role=trial``, ``lrsearch.trial=<number>``,
``mlflow.parentRunId``). A :class:`TrialRun` buffers per-step metrics and sends them with
``log_batch``, never one call per value. :class:`MemoryTracker` is the in-memory test double.

Every param, tag and text artifact passes through :func:`scrub` first, so a password inside a
storage URL never reaches the tracking store.

Example:
    >>> tracker = MemoryTracker()
    >>> parent = tracker.start_study("demo", params={"n_trials": 8}, tags={})
    >>> with tracker.start_trial(parent, 0, params={"max_lr": 0.1}, tags={}) as run:
    ...     run.log_step(0, lr=0.004, train_loss=2.3)
    >>> tracker.runs[run.run_id].status
    'FINISHED'
"""

from __future__ import annotations

import abc
import itertools
import json
import math
import os
import re
import socket
import ssl
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from lrsearch.errors import TrackingError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "MemoryRun",
    "MemoryTracker",
    "MlflowTracker",
    "Tracker",
    "TrialRun",
    "TrialRunInfo",
    "local_tracking_uri",
    "log_range_test",
    "record_range_test",
    "redact_url",
    "scrub",
]

Status = Literal["FINISHED", "FAILED", "KILLED"]
END_STATUSES: tuple[str, ...] = ("FINISHED", "FAILED", "KILLED")
ROLE, STUDY, TRIAL = "lrsearch.role", "lrsearch.study", "lrsearch.trial"
PARENT = "mlflow.parentRunId"  # MLflow nests runs by this tag

# MLflow's log_batch limits (mlflow.utils.validation): 1000 metrics, 100 params, 100 tags and
# 1000 entities in all per call; longer param/tag values are truncated by the store anyway.
MAX_METRICS_PER_BATCH, MAX_PARAMS_TAGS_PER_BATCH = 1000, 100
MAX_PARAM_LENGTH, MAX_TAG_LENGTH = 6000, 8000

_URL = re.compile(r"\b(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^\s/?#]*)")
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password|passwd|pwd)=(?!\*\*\*)[^\s&;,'\"]+")


def _redact_authority(match: re.Match[str]) -> str:
    userinfo, at, host = match["authority"].rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not (at and colon and password) or password == "***":
        return match[0]
    return f"{match['scheme']}{user}:***@{host}"


def redact_url(url: str) -> str:
    """Replace the password of a URL with ``***``; a URL without one comes back unchanged.

    >>> redact_url("postgresql+psycopg2://optuna:hunter2@db:5432/studies")
    'postgresql+psycopg2://optuna:***@db:5432/studies'
    """
    return _URL.sub(_redact_authority, url)


def scrub(value: str) -> str:
    """Redact every URL password and every ``password=...`` pair anywhere in ``value``."""
    return _KEYWORD_PASSWORD.sub(r"\1=***", redact_url(value))


def _as_text(value: Any) -> str:
    if isinstance(value, Mapping | list | tuple):
        return scrub(json.dumps(value, sort_keys=True, default=str))
    return scrub(str(value))  # str, not repr: numpy scalars print as plain numbers


def _check_status(status: str) -> None:
    if status not in END_STATUSES:
        raise ValueError(f"status must be one of {list(END_STATUSES)}, got {status=}")


Pairs = list[tuple[str, str]]


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
        """Record validation metrics; they go out (in the background) with everything before."""
        self._add(step, metrics)
        self._send_in_background()

    def _send_in_background(self) -> None:
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

    def log_file(self, path: Path | str, artifact_path: str | None = None) -> None:
        """Upload a local file as it is (not scrubbed)."""
        self._tracker.log_artifact_file(self.run_id, path, artifact_path)

    def end(self, status: str, *, tags: Mapping[str, Any] | None = None) -> None:
        """Flush, set ``tags``, then mark the run ``status``; a second call does nothing."""
        _check_status(status)
        if self._ended:
            return
        try:
            self.flush()
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
        if tags:
            self.set_tags(tags)
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
        points_logged: metric points sent by this tracker, over all runs.
    """

    def __init__(self, *, flush_every: int = 1000) -> None:
        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every=}")
        self.flush_every = flush_every
        self.points_logged = 0
        self._open: dict[str, TrialRun] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _sender(self) -> ThreadPoolExecutor:
        """One background thread per tracker: step metrics go out in order, off the hot loop."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lrsearch-mlflow")
        return self._executor

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
        experiment_id, parent_tags = self._run_context(parent_run_id)
        marks = {ROLE: "trial", TRIAL: str(trial_number), PARENT: parent_run_id}
        if STUDY in parent_tags:
            marks[STUDY] = parent_tags[STUDY]
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

    def log_artifact_text(
        self, run_id: str, name: str, text: str, artifact_path: str | None = None
    ) -> None:
        """Store ``text``, scrubbed, as the artifact ``[artifact_path/]name``."""
        self._log_text(run_id, f"{artifact_path}/{name}" if artifact_path else name, scrub(text))

    def log_artifact_file(
        self, run_id: str, path: Path | str, artifact_path: str | None = None
    ) -> None:
        """Upload a local file as it is (not scrubbed) under ``artifact_path``."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"artifact file {path} does not exist")
        self._log_file(run_id, path, artifact_path)

    def end_run(self, run_id: str, status: Status) -> None:
        """Flush the run's open recorder if it has one, then mark the run ``status``."""
        _check_status(status)
        recorder = self._open.get(run_id)
        if recorder is not None:
            recorder.end(status)
        else:
            self._set_status(run_id, status)

    def find_trial_runs(self, study_name: str) -> list[TrialRunInfo]:
        """Every trial run of the study, ordered by trial number, then start time."""
        experiment_id = self._experiment(study_name, create=False)
        if experiment_id is None:
            return []
        records = [r for r in self._find_runs(experiment_id, "trial") if TRIAL in r.tags]
        records.sort(key=lambda r: (int(r.tags[TRIAL]), r.start_time, r.run_id))
        return [TrialRunInfo(r.run_id, int(r.tags[TRIAL]), r.status) for r in records]

    def flush(self) -> None:
        """Send what every open :class:`TrialRun` still buffers."""
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
        """Write in chunks within MLflow's per-batch limits."""
        param_items = _texts(params or {}, MAX_PARAM_LENGTH)
        tag_items = _texts(tags or {}, MAX_TAG_LENGTH)
        for start in range(0, len(points), MAX_METRICS_PER_BATCH):
            chunk = points[start : start + MAX_METRICS_PER_BATCH]
            self._write(run_id, chunk, [], [])
            with self._lock:  # the sender thread and the caller both count here
                self.points_logged += len(chunk)
        for start in range(0, max(len(param_items), len(tag_items)), MAX_PARAMS_TAGS_PER_BATCH):
            end = start + MAX_PARAMS_TAGS_PER_BATCH
            self._write(run_id, [], param_items[start:end], tag_items[start:end])

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
    return [(key, _as_text(value)[:limit]) for key, value in items.items()]


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

    def __init__(self, *, flush_every: int = 1000) -> None:
        super().__init__(flush_every=flush_every)
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


def local_tracking_uri(root_dir: Path) -> tuple[str, str]:
    """The embedded store in ``root_dir``: ``(tracking URI, artifact location)``.

    MLflow 3 refuses its old file store unless told otherwise, so runs go to SQLite
    (``root_dir/mlflow.db``) and artifacts to ``root_dir/artifacts/<experiment>/``.
    """
    root = Path(root_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def _resolve_uri(tracking_uri: str) -> tuple[str, str | None]:
    """A plain directory means the embedded store there; a SQLite file gets artifacts beside it."""
    if ":" not in tracking_uri and tracking_uri != "databricks":
        return local_tracking_uri(Path(tracking_uri))
    allow_files = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1")
    if tracking_uri.startswith("file:") and not allow_files:
        raise TrackingError(
            f"{tracking_uri} names MLflow's retired file store; pass the directory itself "
            "(lrsearch keeps an SQLite store there) or a sqlite:/// URI"
        )
    if tracking_uri.startswith("sqlite:///") and ":memory:" not in tracking_uri:
        db = Path(tracking_uri.removeprefix("sqlite:///").partition("?")[0]).expanduser()
        db.parent.mkdir(parents=True, exist_ok=True)
        return tracking_uri, (db.resolve().parent / "artifacts").as_uri()
    return tracking_uri, None


_DB_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}


def _preflight(uri: str, timeout_s: float) -> None:
    """Fail fast when nothing answers at ``uri``; MLflow itself retries for minutes."""
    parts = urllib.parse.urlsplit(uri)
    scheme = parts.scheme.partition("+")[0]
    try:
        if scheme in ("http", "https"):
            _get_health(parts, timeout_s)
        elif scheme in _DB_PORTS and parts.hostname:  # no host: a local Unix socket
            address = (parts.hostname, parts.port or _DB_PORTS[scheme])
            socket.create_connection(address, timeout=timeout_s).close()
    except ValueError:  # a malformed port: MLflow's own error says more
        return
    except OSError as exc:
        reason = getattr(exc, "reason", exc)
        why = getattr(reason, "strerror", None) or str(reason) or type(reason).__name__
        kind = "server" if scheme.startswith("http") else "database"
        raise TrackingError(
            f"MLflow tracking {kind} at {redact_url(uri)} is unreachable ({why}); "
            "start it or pass --no-tracking"
        ) from exc


def _get_health(parts: urllib.parse.SplitResult, timeout_s: float) -> None:
    host = parts.netloc.rpartition("@")[2]  # credentials are MLflow's business, not this check's
    url = urllib.parse.urlunsplit((parts.scheme, host, parts.path.rstrip("/") + "/health", "", ""))
    try:
        with urllib.request.urlopen(url, timeout=timeout_s):
            return
    except urllib.error.HTTPError as exc:
        exc.close()  # any HTTP answer means the server is there
    except urllib.error.URLError as exc:
        if not isinstance(exc.reason, ssl.SSLError | ssl.CertificateError):
            raise  # TLS trouble is left to MLflow, which applies MLFLOW_TRACKING_INSECURE_TLS


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "experiment"


class MlflowTracker(Tracker):
    """A :class:`Tracker` writing through ``MlflowClient`` to any MLflow tracking URI.

    Args:
        tracking_uri: ``http(s)://`` server, database URI (``sqlite:///...``,
            ``postgresql://...``), or a plain directory for the embedded store there
            (see :func:`local_tracking_uri`).
        artifact_root: where new experiments keep artifacts (``<root>/<experiment>``); by default
            ``artifacts/`` beside a SQLite file, and the server's choice otherwise.
        flush_every: points a :class:`TrialRun` buffers before it sends them.
        timeout_s: how long the reachability check of a server or database may take.

    Raises:
        TrackingError: the store cannot be reached or opened.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        artifact_root: str | None = None,
        flush_every: int = 1000,
        timeout_s: float = 3.0,
    ) -> None:
        super().__init__(flush_every=flush_every)
        self.tracking_uri = tracking_uri
        remote = tracking_uri.startswith(("http://", "https://"))
        _preflight(tracking_uri, timeout_s)
        if remote:
            # Otherwise MLflow prints "View run ... at <URI>" to stdout for every ended run: the
            # URI may hold a password, and stdout belongs to the CLI (``--json``).
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow import MlflowClient

        with self._errors("opening the store", broad=True):
            self.tracking_uri, default_root = _resolve_uri(tracking_uri)
            self.artifact_root = (artifact_root or default_root or "").rstrip("/") or None
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
            if not remote:
                self._client.search_experiments(max_results=1)  # creates or migrates the schema

    def __repr__(self) -> str:
        return f"MlflowTracker({redact_url(self.tracking_uri)!r})"

    @contextmanager
    def _errors(self, action: str, *, broad: bool = False) -> Iterator[None]:
        """MLflow and network failures become a one-line :class:`TrackingError`."""
        from mlflow.exceptions import MlflowException

        # Opening a SQL store raises the driver's own errors, hence ``broad`` there.
        caught: tuple[type[Exception], ...] = (Exception,) if broad else (MlflowException, OSError)
        try:
            yield
        except TrackingError:
            raise
        except caught as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            if isinstance(exc, ModuleNotFoundError):
                first += " (a database driver: install it, or name one in the URI)"
            where = redact_url(self.tracking_uri)
            raise TrackingError(scrub(f"MLflow store {where}: {action} failed: {first}")) from exc

    def _experiment(self, name: str, *, create: bool) -> str | None:
        from mlflow.exceptions import MlflowException

        with self._errors(f"getting experiment {name!r}"):
            found = self._client.get_experiment_by_name(name)
            if found is None and create:
                location = f"{self.artifact_root}/{_slug(name)}" if self.artifact_root else None
                try:
                    return self._client.create_experiment(name, artifact_location=location)
                except MlflowException as exc:
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # lost a race: fine
                        raise
                    found = self._client.get_experiment_by_name(name)
        if found is None:
            return None
        if found.lifecycle_stage == "deleted":
            raise TrackingError(
                f"MLflow experiment {name!r} is deleted; restore it with `mlflow experiments "
                f"restore --experiment-id {found.experiment_id}` or use another name"
            )
        return str(found.experiment_id)

    def _create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, Any]) -> str:
        with self._errors(f"creating run {run_name!r}"):
            run = self._client.create_run(experiment_id, tags=dict(tags), run_name=run_name)
        return str(run.info.run_id)

    def _run_context(self, run_id: str) -> tuple[str, dict[str, str]]:
        with self._errors(f"reading run {run_id}"):
            run = self._client.get_run(run_id)
        return str(run.info.experiment_id), dict(run.data.tags)

    def _find_runs(self, experiment_id: str, role: str) -> list[_RunRecord]:
        records: list[_RunRecord] = []
        token: str | None = None
        with self._errors("searching runs"):
            while True:
                page = self._client.search_runs(
                    [experiment_id], f"tags.`{ROLE}` = '{role}'", max_results=1000, page_token=token
                )
                records += [
                    _RunRecord(r.info.run_id, r.info.status, r.info.start_time, dict(r.data.tags))
                    for r in page
                ]
                token = page.token
                if not token:
                    return records

    def _params(self, run_id: str) -> dict[str, str]:
        with self._errors(f"reading run {run_id}"):
            return dict(self._client.get_run(run_id).data.params)

    def _write(self, run_id: str, points: Sequence[_Point], params: Pairs, tags: Pairs) -> None:
        from mlflow.entities import Metric, Param, RunTag

        with self._errors(f"logging to run {run_id}"):
            self._client.log_batch(
                run_id,
                metrics=[Metric(p.key, p.value, p.timestamp, p.step) for p in points],
                params=[Param(k, v) for k, v in params],
                tags=[RunTag(k, v) for k, v in tags],
                synchronous=True,  # async logging would make points_logged a promise, not a count
            )

    def _set_status(self, run_id: str, status: str) -> None:
        with self._errors(f"setting run {run_id} {status}"):
            if status == "RUNNING":
                self._client.update_run(run_id, status="RUNNING")
            else:
                self._client.set_terminated(run_id, status=status)

    def _delete_run(self, run_id: str) -> None:
        with self._errors(f"deleting run {run_id}"):
            self._client.delete_run(run_id)

    def _log_text(self, run_id: str, artifact_file: str, text: str) -> None:
        with self._errors(f"storing {artifact_file} for run {run_id}"):
            self._client.log_text(run_id, text, artifact_file)

    def _log_file(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        with self._errors(f"storing {path.name} for run {run_id}"):
            self._client.log_artifact(run_id, str(path), artifact_path)


RANGE_TEST_FILES = ("range_test.json", "range_test.csv", "range_test.png")


def record_range_test(run: TrialRun, result: Any, out_dir: Path | None = None) -> None:
    """Record a range-test result in ``run`` (a standalone run or a study's parent run).

    Each repeat ``r`` (from 0) becomes the step metrics ``lr_r{r}``, ``loss_r{r}`` and
    ``smoothed_loss_r{r}`` over its iterations, so repeats overlay in one MLflow chart. Each
    suggestion gives ``<name>_median`` (and ``<name>_spread_decades``), the prior
    ``prior_<field>`` metrics and a ``prior`` JSON param; ``result.settings`` become params.
    The files in :data:`RANGE_TEST_FILES` found in ``out_dir`` are uploaded.

    Args:
        run: where to record.
        result: a ``RangeTestResult`` or anything shaped like one (``curves`` with ``lrs``,
            ``losses``, ``smoothed``; ``summary`` of objects with ``median``; ``prior`` with
            ``to_dict()``; ``settings``).
        out_dir: the directory holding the range test's JSON/CSV/PNG, if any.
    """
    for r, curve in enumerate(result.curves):
        rows = zip(curve.lrs, curve.losses, curve.smoothed, strict=True)
        for step, (lr, loss, sm) in enumerate(rows):
            run.log_step(step, **{f"lr_r{r}": lr, f"loss_r{r}": loss, f"smoothed_loss_r{r}": sm})
    summary: dict[str, float] = {}
    for name, suggestion in result.summary.items():
        summary[f"{name}_median"] = suggestion.median
        if getattr(suggestion, "spread_decades", None) is not None:
            summary[f"{name}_spread_decades"] = suggestion.spread_decades
    prior = result.prior.to_dict()
    summary.update({f"prior_{key}": value for key, value in prior.items()})
    run.log_epoch(0, **summary)
    run.log_params({**result.settings, "prior": prior})
    for path in [out_dir / name for name in RANGE_TEST_FILES] if out_dir else []:
        if path.is_file():
            run.log_file(path)


def log_range_test(
    result: Any,
    out_dir: Path,
    *,
    tracking_uri: str,
    workload: str,
    experiment: str = "lrsearch-range-tests",
) -> str:
    """Log a range test as one run ``range-test-<workload>`` in ``experiment``; its run id.

    See :func:`record_range_test` for what the run holds.

    Raises:
        TrackingError: the tracking store cannot be reached or used.
    """
    tracker = MlflowTracker(tracking_uri)
    tags = {ROLE: "range_test", "lrsearch.workload": workload}
    run = tracker.start_run(
        experiment, run_name=f"range-test-{workload}", params={"workload": workload}, tags=tags
    )
    with run:
        record_range_test(run, result, Path(out_dir))
    return run.run_id
