"""The MLflow tracker: any tracking URI (server, database, or a local directory)."""

from __future__ import annotations

import os
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from lrsearch.errors import TrackingError
from lrsearch.tracking._base import ROLE, Pairs, Tracker, _Point, _RunRecord
from lrsearch.tracking._scrub import redact_url, scrub, without_userinfo
from lrsearch.tracking._writer import ENV, shared_writer
from lrsearch.tracking._writer import main as writer_main


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
    parts = urllib.parse.urlsplit(without_userinfo(uri))  # a raw "/" in a password: still split
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
    # credentials (already taken out) are MLflow's business, not this check's
    url = urllib.parse.urlunsplit(
        (parts.scheme, parts.netloc, parts.path.rstrip("/") + "/health", "", "")
    )
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


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""MLflow 3's experiment tag for which UI an experiment gets: GenAI (traces) or classic ML (runs)."""
ML_EXPERIMENT_KIND = "custom_model_development"
"""The value of :data:`EXPERIMENT_KIND_TAG` that the UI labels "Machine learning"."""


class MlflowTracker(Tracker):
    """A :class:`Tracker` writing through ``MlflowClient`` to any MLflow tracking URI.

    Args:
        tracking_uri: ``http(s)://`` server, database URI (``sqlite:///...``,
            ``postgresql://...``), or a plain directory for the embedded store there
            (see :func:`local_tracking_uri`).
        artifact_root: where new experiments keep artifacts (``<root>/<experiment>``); by default
            ``artifacts/`` beside a SQLite file, and the server's choice otherwise.
        flush_every: points a :class:`TrialRun` buffers before it sends them.
        flush_seconds: at an epoch's end, send what is buffered once the last send is this old.
        timeout_s: how long the reachability check of a server or database may take.
        writer: write through a writer process (see ``lrsearch.tracking._writer``) rather than
            in this process; by default yes, unless the environment has
            ``LRSEARCH_MLFLOW_WRITER=0``. With it a trial run's end goes out in the background
            (:attr:`Tracker.ends_in_background`).

    Raises:
        TrackingError: the store cannot be reached or opened.
    """

    def __init__(
        self,
        tracking_uri: str,
        *,
        artifact_root: str | None = None,
        flush_every: int = 1000,
        flush_seconds: float = 5.0,
        timeout_s: float = 3.0,
        writer: bool | None = None,
    ) -> None:
        super().__init__(flush_every=flush_every, flush_seconds=flush_seconds)
        self.tracking_uri = tracking_uri
        remote = tracking_uri.startswith(("http://", "https://"))
        _preflight(tracking_uri, timeout_s)
        if remote:
            # Otherwise MLflow prints "View run ... at <URI>" to stdout for every ended run: the
            # URI may hold a password, and stdout belongs to the CLI (``--json``).
            os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        with self._errors("opening the store", broad=True):
            self.tracking_uri, default_root = _resolve_uri(tracking_uri)
            self.artifact_root = (artifact_root or default_root or "").rstrip("/") or None
            with _creating(self.tracking_uri):  # two processes at once: one creates it
                try:
                    self._client = _open_client(self.tracking_uri, remote)
                except Exception as exc:
                    if not repair_interrupted_migration(self.tracking_uri, exc):
                        raise
                    self._client = _open_client(self.tracking_uri, remote)
        if writer is None:
            writer = os.environ.get(ENV, "1") != "0"
        self._writer = shared_writer() if writer else None
        self.ends_in_background = self._writer is not None

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

    # Writes: in the writer process where there is one (the *_here methods run there).
    def _create_run(self, experiment_id: str, run_name: str, tags: Mapping[str, Any]) -> str:
        return str(self._through_writer("_create_run_here", experiment_id, run_name, dict(tags)))

    def _write(self, run_id: str, points: Sequence[_Point], params: Pairs, tags: Pairs) -> None:
        self._through_writer("_write_here", run_id, [tuple(p) for p in points], params, tags)

    def _set_status(self, run_id: str, status: str) -> None:
        self._through_writer("_set_status_here", run_id, status)

    def _delete_run(self, run_id: str) -> None:
        self._through_writer("_delete_run_here", run_id)

    def _log_text(self, run_id: str, artifact_file: str, text: str) -> None:
        self._through_writer("_log_text_here", run_id, artifact_file, text)

    def _log_file(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        self._through_writer("_log_file_here", run_id, path, artifact_path)

    def _log_table(
        self, run_id: str, name: str, header: list[str], rows: list[list[float | int | None]]
    ) -> None:
        self._through_writer("_log_table_here", run_id, name, header, rows)

    def _log_table_here(
        self, run_id: str, name: str, header: list[str], rows: list[list[float | int | None]]
    ) -> None:
        Tracker._log_table(self, run_id, name, header, rows)  # formatted here, in the writer

    def _through_writer(self, op: str, *args: Any) -> Any:
        """``op(*args)`` in the writer process, else (none, or it died) here; its result."""
        writer = self._writer
        if writer is not None and writer.pid != os.getpid():  # forked: the parent's pipes
            writer = self._writer = shared_writer()
        if writer is None or writer.dead is not None:  # gone: said once, in one line
            return getattr(self, op)(*args)
        return writer.call((self.tracking_uri, self.artifact_root), op, *args)

    def writer_cpu_seconds(self) -> float | None:
        """CPU seconds the writer process has used so far; None without a live one."""
        writer = self._writer
        if writer is None or writer.dead is not None or writer.pid != os.getpid():
            return None
        return float(writer.call((self.tracking_uri, self.artifact_root), "cpu_seconds"))

    def _create_run_here(self, experiment_id: str, run_name: str, tags: dict[str, Any]) -> str:
        with self._errors(f"creating run {run_name!r}"):
            run = self._client.create_run(experiment_id, tags=tags, run_name=run_name)
        return str(run.info.run_id)

    def _write_here(
        self, run_id: str, points: Sequence[tuple[str, float, int, int]], params: Pairs, tags: Pairs
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        with self._errors(f"logging to run {run_id}"):
            self._client.log_batch(
                run_id,
                metrics=[Metric(key, value, at, step) for key, value, at, step in points],
                params=[Param(k, v) for k, v in params],
                tags=[RunTag(k, v) for k, v in tags],
                synchronous=True,  # async logging would make points_logged a promise, not a count
            )

    def _set_status_here(self, run_id: str, status: str) -> None:
        with self._errors(f"setting run {run_id} {status}"):
            if status == "RUNNING":
                self._client.update_run(run_id, status="RUNNING")
            else:
                self._client.set_terminated(run_id, status=status)

    def _delete_run_here(self, run_id: str) -> None:
        with self._errors(f"deleting run {run_id}"):
            self._client.delete_run(run_id)

    def _log_text_here(self, run_id: str, artifact_file: str, text: str) -> None:
        with self._errors(f"storing {artifact_file} for run {run_id}"):
            self._client.log_text(run_id, text, artifact_file)

    def _log_file_here(self, run_id: str, path: Path, artifact_path: str | None) -> None:
        with self._errors(f"storing {path.name} for run {run_id}"):
            self._client.log_artifact(run_id, str(path), artifact_path)

    def experiment_id(self, name: str) -> str | None:
        """The id of the experiment ``name`` (a study's has the study's name); None if absent.

        Raises:
            TrackingError: the store cannot be read, or the experiment is deleted.
        """
        return self._experiment(name, create=False)

    def mark_machine_learning(self, experiment_id: str) -> bool:
        """Tag an experiment as classic machine learning unless it has a kind; True if tagged.

        MLflow 3 UIs that go by :data:`EXPERIMENT_KIND_TAG` then open the experiment on its runs
        table rather than on GenAI traces, and stop asking which kind of experiment it is. A
        kind someone chose (in the UI or by hand) is left alone.

        Raises:
            TrackingError: the store cannot be read or written.
        """
        with self._errors(f"tagging experiment {experiment_id}"):
            tags = self._client.get_experiment(experiment_id).tags
            if tags.get(EXPERIMENT_KIND_TAG):
                return False
            self._client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND)
        return True


def serve_writer(argv: list[str]) -> None:
    """The writer process's entry point (see ``lrsearch.tracking._writer``)."""
    writer_main(argv, lambda uri, root: MlflowTracker(uri, artifact_root=root, writer=False))


@contextmanager
def _creating(uri: str) -> Iterator[None]:
    """Hold ``<db>.lock`` while a SQLite store is opened: its creation and migration happen
    once, not twice at once (a second process would fail on the first one's half-made schema).
    """
    if not uri.startswith("sqlite:///") or ":memory:" in uri:
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///").partition("?")[0])
    with open(db.with_name(f"{db.name}.lock"), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _open_client(uri: str, remote: bool) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if not remote:
        client.search_experiments(max_results=1)  # creates or migrates the schema
    return client


_LEFTOVER = re.compile(r"table (_alembic_tmp_\w+) already exists")


def repair_interrupted_migration(uri: str, error: BaseException) -> bool:
    """Undo what a schema migration of a SQLite store left when it was killed half-way.

    MLflow migrates SQLite tables by copying each into ``_alembic_tmp_<table>``, dropping the
    original and renaming the copy; a process killed in between (an older lrsearch let Ctrl-C
    through there) leaves the copy behind, and every later open fails with "table
    _alembic_tmp_runs already exists". If the original table is still there the copy is a
    partial duplicate and is dropped; if it is gone the copy holds the data and takes its
    name back. The migration then runs again. Returns whether anything was repaired.
    """
    match = _LEFTOVER.search(str(error))
    if match is None or not uri.startswith("sqlite:///"):
        return False
    import sqlite3

    leftover = match.group(1)
    original = leftover.removeprefix("_alembic_tmp_")
    with closing(sqlite3.connect(uri.removeprefix("sqlite:///"))) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if leftover not in tables:
            return False
        if original in tables:
            db.execute(f'DROP TABLE "{leftover}"')
        else:
            db.execute(f'ALTER TABLE "{leftover}" RENAME TO "{original}"')
        db.commit()
    return True
