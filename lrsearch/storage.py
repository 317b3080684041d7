"""Where studies live: storage URLs, opening a storage, redaction, and the Optuna internals we need.

The embedded default is a file under ``$LRSEARCH_HOME``; many hosts share one PostgreSQL
database, directly or through Optuna's gRPC storage proxy (``grpc://host:port``, served by
``lrsearch storage-proxy``). Every message that names a storage URL passes through
:func:`redact` first.

Optuna has no public API for five things lrsearch must do from outside a trial (a
supervisor failing the trial of a worker it saw die, a retry reading which trial it
repeats, a trial's storage id for the heartbeat, whether a storage has Optuna's heartbeat,
one read of the trial list that a trial's budget check and its sampler share);
:func:`trial_storage_id`, :func:`system_attrs`, :func:`storage_of`,
:func:`has_optuna_heartbeat` and :func:`read_trials` are the one place that reaches for them.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import SQLAlchemyError

from lrsearch.errors import LrsearchError, StorageError
from lrsearch.paths import check_writable
from lrsearch.trials import FAIL_REASON

__all__ = [
    "GRACE_S",
    "HEARTBEAT_S",
    "MAX_RETRY",
    "STORAGE_ERRORS",
    "backend_of",
    "check_storage_writable",
    "check_tracking_writable",
    "default_home",
    "default_storage",
    "fail_trial",
    "has_optuna_heartbeat",
    "list_studies",
    "open_rdb_storage",
    "open_storage",
    "opening_lock",
    "read_trials",
    "redact",
    "requeue_trial",
    "retry_callback",
    "served_storage",
    "storage_of",
    "system_attrs",
    "trial_storage_id",
    "trusted_tracking_uri",
]

# A storage that went away mid-study: the database (SQLAlchemy) or the gRPC storage proxy.
STORAGE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, grpc.RpcError)
HEARTBEAT_S = int(os.environ.get("LRSEARCH_HEARTBEAT_S", "10"))
GRACE_S = int(os.environ.get("LRSEARCH_GRACE_S", "30"))
MAX_RETRY = 2  # a trial whose worker died is retried this many times, then left FAIL
PROXY_CONNECT_S = 10.0  # how long opening grpc://host:port waits for the proxy to answer


def default_home() -> Path:
    """The embedded default's directory: ``$LRSEARCH_HOME`` or ``./lrsearch-runs``."""
    return Path(os.environ.get("LRSEARCH_HOME", "lrsearch-runs")).resolve()


def default_storage(home: Path | None = None) -> str:
    """``$LRSEARCH_STORAGE``, else the embedded storage under the home directory.

    The embedded storage is Optuna's journal file (``optuna.journal``): one host's worker
    processes append to it under a file lock, with no database to lock. Measured with
    ``python -m lrsearch.harness.storage_choice`` (docs/benchmarks.md): an lrsearch trial's
    storage traffic took 0.19 s on the journal vs 1.15 s on SQLite with one worker, and
    0.12 s vs 6.0 s per trial with four, on this 2-core machine under load. A home that
    already holds an ``optuna.db`` (SQLite, from earlier versions) keeps using it.
    """
    env = os.environ.get("LRSEARCH_STORAGE")
    if env:
        return env
    home = home or default_home()
    if not home.is_dir():  # a read-only home that exists still serves status and best
        check_writable(home, what="the lrsearch home", fix=_HOME_FIX, error=StorageError)
    if (home / "optuna.db").exists():
        return f"sqlite:///{home / 'optuna.db'}"
    return f"journal:{home / 'optuna.journal'}"


def redact(url: str | None) -> str:
    """A storage or tracking URL (or a text holding some) with any password replaced by ``***``."""
    from lrsearch.tracking import redact_url

    return redact_url(url) if url else ""


_HOME_FIX = "set LRSEARCH_HOME to a writable directory (or --storage to another storage)"


def check_storage_writable(url: str) -> None:
    """Before a study starts or resumes: a file storage's file and directory take writes.

    Raises:
        StorageError: one line naming the path and the fix.
    """
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
    elif url.startswith("sqlite:///") and ":memory:" not in url:
        path = Path(url.removeprefix("sqlite:///").partition("?")[0])
    else:
        return  # a database server or the storage proxy: their own errors say it
    path = path.expanduser().absolute()
    check_writable(
        path.parent, what="the study storage", files=(path.name,), fix=_HOME_FIX, error=StorageError
    )


def check_tracking_writable(uri: str) -> str | None:
    """Before a study starts: a local MLflow store's directory and database take writes.

    Returns a warning (one line, naming the path) when only its artifacts directory does
    not: the study can run and record its runs without their files and plots.

    Raises:
        TrackingError: one line naming the path and the fix.
    """
    from lrsearch.errors import TrackingError

    path = _local_store_path(uri)
    if path is None:
        return None  # a server or a database: MLflow's own errors say it
    sqlite = uri.startswith("sqlite:")
    root, files = (path.parent, (path.name,)) if sqlite else (path, ("mlflow.db",))
    fix = "make it writable, or pass --tracking-uri elsewhere (or --no-tracking)"
    check_writable(root, what="the MLflow store", files=files, fix=fix, error=TrackingError)
    try:
        check_writable(root / "artifacts", what="MLflow artifacts", fix="")
    except LrsearchError as exc:
        return (
            f"{str(exc).rstrip('; ')}; the study runs without its plots and files "
            "(make the directory writable to keep them)"
        )
    return None


def trusted_tracking_uri(uri: str | None) -> str | None:
    """A tracking URI read from a study's storage, if this process may use it.

    Whoever can write the storage chooses it, and MLflow creates a store (files, a
    database) wherever it points. So it is used only if it is a server
    (``http(s)://``) or a local store under ``$LRSEARCH_HOME``; anything else needs the
    operator's own ``--tracking-uri``.

    Raises:
        TrackingError: the stored URI is neither.
    """
    from lrsearch.errors import TrackingError

    if uri is None or uri.startswith(("http://", "https://")):
        return uri
    path = _local_store_path(uri)
    home = default_home()
    if path is not None and path.is_relative_to(home):
        return uri
    raise TrackingError(
        f"the study's stored tracking URI {redact(uri)} is neither an http(s) server nor under "
        f"$LRSEARCH_HOME ({home}); pass --tracking-uri with the store this worker should "
        "record to (the same URI if you trust it)"
    )


def _local_store_path(uri: str) -> Path | None:
    """The file or directory a local tracking URI names (a path, sqlite:///, file:), else None."""
    if uri.startswith("sqlite:///"):
        text = uri.removeprefix("sqlite:///").partition("?")[0]
    elif uri.startswith("file:"):
        text = urlsplit(uri).path
    elif ":" not in uri:
        text = uri
    else:
        return None
    if not text or ":memory:" in text:
        return None
    return Path(text).expanduser().resolve()


def requeue_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    """Queue the retry of a trial this worker is stopping (preempted): a WAITING copy with the
    same parameters and ``failed_trial`` set, as the heartbeat queues a lost trial's."""
    storage = storage_of(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        retry_callback()(study, storage.get_trial(trial_storage_id(trial)))


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """What happens to a stale trial: FAIL, then a WAITING copy with the same parameters."""
    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def open_storage(url: str, *, wait: bool = False) -> BaseStorage:
    """Open an Optuna storage; failures become one line without the password.

    A database or a storage proxy is put behind a :class:`~lrsearch.retrying.RetryingStorage`:
    its calls ride out an outage of up to ``$LRSEARCH_STORAGE_GRACE`` seconds. With ``wait``
    (a worker whose supervisor has opened this storage already: the URL is right), opening
    waits out an outage too; otherwise an unreachable storage fails at once.

    Raises:
        StorageError: an unsupported URL, or one that cannot be opened.
    """
    from lrsearch.retrying import retrying, waiting_out

    label = redact(url)
    if url.startswith("grpc://"):
        proxy = waiting_out(lambda: _open_grpc_proxy(url), label=label, wait=wait)
        return retrying(proxy, label=label, settle_s=GRACE_S + HEARTBEAT_S)
    if url.startswith(("postgresql", "mysql", "sqlite")):
        rdb = waiting_out(lambda: _open_rdb(url), label=label, wait=wait)
        cached = optuna.storages.get_storage(rdb)  # Optuna's cache in front of it
        return retrying(cached, label=label, settle_s=GRACE_S + HEARTBEAT_S)
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalStorage

        from lrsearch.journal import SafeJournalFile

        try:
            return JournalStorage(SafeJournalFile(url.removeprefix("journal:")))
        except StorageError:
            raise  # a journal with an unreadable record: its own message says what to do
        except Exception as exc:
            raise _cannot_open(url, exc) from None
    raise StorageError(
        f"unsupported storage URL {redact(url)}; use sqlite:///path, postgresql://..., "
        "journal:/path/file.log or grpc://host:port (lrsearch storage-proxy)"
    )


def _cannot_open(url: str, exc: Exception) -> StorageError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return StorageError(
        f"cannot open storage {redact(url)}: {redact(reason)}; check the URL, the server "
        "and the credentials"
    )


def _open_rdb(url: str) -> optuna.storages.RDBStorage:
    try:
        with warnings.catch_warnings():
            # Heartbeats are the standard crash recovery, but still flagged experimental.
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
                heartbeat_stale_trial_callback=retry_callback(),
                engine_kwargs=None if url.startswith("sqlite") else {"pool_pre_ping": True},
            )
    except Exception as exc:
        raise _cannot_open(url, exc) from exc  # the cause: for waiting_out to judge


def open_rdb_storage(url: str) -> optuna.storages.RDBStorage:
    """Open a database storage (what ``lrsearch storage-proxy`` serves), as it is.

    Raises:
        StorageError: the URL is not a database's, or cannot be opened.
    """
    if not url.startswith(("postgresql", "mysql", "sqlite")):
        raise StorageError(
            f"{redact(url)} is not a database URL; the storage proxy serves postgresql://..., "
            "mysql://... or sqlite:///path"
        )
    return _open_rdb(url)


def served_storage(url: str) -> BaseStorage:
    """What ``lrsearch storage-proxy`` serves: the database behind Optuna's cache.

    Optuna's cache sets a trial's parameter only for a trial it holds; a proxy restarted
    mid-study (killed, say) never saw the trials its workers asked for before, and would
    refuse their parameters (``KeyError``), failing the trial. Here such a call goes to the
    database directly, which checks the same things.

    Raises:
        StorageError: the URL is not a database's, or cannot be opened.
    """
    from optuna.storages._cached_storage import _CachedStorage

    class _ForgivingCache(_CachedStorage):
        def set_trial_param(
            self, trial_id: int, name: str, value: float, distribution: Any
        ) -> None:
            with self._lock:
                known = trial_id in self._trial_id_to_study_id_and_number
            if not known:  # created through another proxy process
                self._backend.set_trial_param(trial_id, name, value, distribution)
                return
            super().set_trial_param(trial_id, name, value, distribution)

    return _ForgivingCache(open_rdb_storage(url))


def backend_of(storage: BaseStorage) -> BaseStorage:
    """The storage behind lrsearch's retrying wrapper and Optuna's cache (an RDBStorage, say)."""
    from lrsearch.retrying import RetryingStorage

    if isinstance(storage, RetryingStorage):
        storage = storage.inner
    return getattr(storage, "_backend", storage)


def _open_grpc_proxy(url: str) -> BaseStorage:
    """A client of ``lrsearch storage-proxy`` at ``grpc://host:port``, checked to answer."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port or 13000
    except ValueError:  # a port that is not a number
        host, port = None, 0
    if not host or parts.path not in ("", "/"):
        raise StorageError(f"bad storage proxy URL {redact(url)}; use grpc://host:port")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            proxy = optuna.storages.GrpcStorageProxy(host=host, port=port)
        proxy.wait_server_ready(timeout=PROXY_CONNECT_S)
    except ImportError:
        raise StorageError(
            "grpc:// storage needs grpcio and protobuf: pip install grpcio protobuf"
        ) from None
    except ConnectionError as exc:
        raise StorageError(
            f"no storage proxy answers at {redact(url)} within {PROXY_CONNECT_S:.0f}s; start "
            "one with 'lrsearch storage-proxy --storage URL' and check the host and port"
        ) from exc
    return proxy


@contextmanager
def opening_lock(url: str, echo: Callable[[str], None] | None = None) -> Iterator[None]:
    """One process at a time opens (creates, range-tests) studies in a local storage file.

    Two ``lrsearch run`` started at once on one home would both find the study without a
    range test and both run one; the second waits here (told so through ``echo``) and then
    finds the first one's result. A file lock (``<storage file>.open.lock``), so for the
    embedded storages only: a database or a storage proxy is left as it is.
    """
    path = _local_file(url)
    if path is None:
        yield
        return
    import fcntl

    with open(path.with_name(f"{path.name}.open.lock"), "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if echo is not None:
                echo("another lrsearch is opening a study in this storage; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _local_file(url: str) -> Path | None:
    """The file of a journal or SQLite storage URL (None for anything else)."""
    if url.startswith("journal:"):
        return Path(url.removeprefix("journal:"))
    if url.startswith("sqlite:///") and ":memory:" not in url:
        return Path(url.removeprefix("sqlite:///").partition("?")[0])
    return None


def list_studies(storage_url: str) -> list[str]:
    """Names of the studies in a storage."""
    return sorted(s.study_name for s in open_storage(storage_url).get_all_studies())


# The Optuna internals lrsearch needs (no public API covers them as of Optuna 4/5).
def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage behind a study."""
    return study._storage


def has_optuna_heartbeat(storage: BaseStorage) -> bool:
    """Whether Optuna's own heartbeat finds this storage's lost trials (RDB storages only)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(storage)


def trial_storage_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage (not its number)."""
    return trial._trial_id


def system_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """A running trial's system attributes as they were when it started (no storage read).

    ``failed_trial`` (a heartbeat retry's) is set when the retry is queued, so it is there:
    Optuna read the trial when ``ask()`` handed it out.
    """
    cached = getattr(trial, "_cached_frozen_trial", None)
    if cached is None:  # an Optuna that keeps no copy: read them
        return dict(trial.storage.get_trial_system_attrs(trial._trial_id))
    return dict(cached.system_attrs)


def read_trials(study: optuna.Study, *, fresh: bool = True) -> list[FrozenTrial]:
    """The study's trials, read once for the running trial and its sampler (no deep copy).

    Optuna keeps one read of the trial list per trial (per thread; ``ask()`` and ``tell()``
    drop it) for its samplers. ``fresh`` reads it now and leaves it there, so the sampler
    that samples next reuses this read instead of making its own round trip; ``fresh=False``
    reuses the kept read if there is one.
    """
    local: Any = getattr(study, "_thread_local", None)
    if not hasattr(local, "cached_all_trials"):  # an Optuna without that cache: a read each
        return study.get_trials(deepcopy=False)
    if fresh:
        local.cached_all_trials = None
    return study._get_trials(deepcopy=False, use_cache=True)


def fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial whose worker is gone and queue its retry; False if it already ended."""
    storage = storage_of(study)
    trial_id = trial_storage_id(trial)
    try:
        storage.set_trial_user_attr(trial_id, FAIL_REASON, reason)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another worker's heartbeat check got there first
    retry_callback()(study, storage.get_trial(trial_id))
    return True
