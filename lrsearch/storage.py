"""Where studies live: storage URLs, opening a storage, redaction, and the Optuna internals we need.

The embedded default is a file under ``$LRSEARCH_HOME``; many hosts share one PostgreSQL
database. Every message that names a storage URL passes through :func:`redact` first.

Optuna has no public API for three things lrsearch must do from outside a trial (a
supervisor failing the trial of a worker it saw die, a retry reading which trial it
repeats, a trial's storage id for the heartbeat); :func:`trial_storage_id`,
:func:`system_attrs` and :func:`storage_of` are the one place that reaches for them.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage, RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from lrsearch.errors import StorageError

__all__ = [
    "GRACE_S",
    "HEARTBEAT_S",
    "MAX_RETRY",
    "default_home",
    "default_storage",
    "fail_trial",
    "list_studies",
    "open_storage",
    "redact",
    "retry_callback",
    "storage_of",
    "system_attrs",
    "trial_storage_id",
]

HEARTBEAT_S = int(os.environ.get("LRSEARCH_HEARTBEAT_S", "10"))
GRACE_S = int(os.environ.get("LRSEARCH_GRACE_S", "30"))
MAX_RETRY = 2  # a trial whose worker died is retried this many times, then left FAIL


def default_home() -> Path:
    """The embedded default's directory: ``$LRSEARCH_HOME`` or ``./lrsearch-runs``."""
    return Path(os.environ.get("LRSEARCH_HOME", "lrsearch-runs")).resolve()


def default_storage(home: Path | None = None) -> str:
    """``--storage``, else ``$LRSEARCH_STORAGE``, else SQLite under the home directory."""
    env = os.environ.get("LRSEARCH_STORAGE")
    if env:
        return env
    home = home or default_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'optuna.db'}"


def redact(url: str | None) -> str:
    """A storage or tracking URL with any password replaced by ``***``."""
    from lrsearch.tracking import redact_url

    return redact_url(url) if url else ""


def retry_callback() -> RetryHeartbeatStaleTrialCallback:
    """What happens to a stale trial: FAIL, then a WAITING copy with the same parameters."""
    return RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def open_storage(url: str) -> BaseStorage:
    """Open an Optuna storage; failures become one line without the password.

    Raises:
        StorageError: an unsupported URL, or one that cannot be opened.
    """
    try:
        if url.startswith(("postgresql", "mysql", "sqlite")):
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
        if url.startswith("journal:"):
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StorageError(
            f"cannot open storage {redact(url)}: {redact(reason)}; check the URL, the server "
            "and the credentials"
        ) from None
    raise StorageError(
        f"unsupported storage URL {redact(url)}; use sqlite:///path, postgresql://..., "
        "or journal:/path/file.log"
    )


def list_studies(storage_url: str) -> list[str]:
    """Names of the studies in a storage."""
    return sorted(s.study_name for s in open_storage(storage_url).get_all_studies())


# The Optuna internals lrsearch needs (no public API covers them as of Optuna 4/5).
def storage_of(study: optuna.Study) -> BaseStorage:
    """The storage behind a study."""
    return study._storage


def trial_storage_id(trial: optuna.Trial | FrozenTrial) -> int:
    """A trial's id in its storage (not its number)."""
    return trial._trial_id


def system_attrs(trial: optuna.Trial) -> dict[str, Any]:
    """A running trial's system attributes (``failed_trial`` on a heartbeat retry)."""
    return dict(trial.storage.get_trial_system_attrs(trial._trial_id))


def fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial whose worker is gone and queue its retry; False if it already ended."""
    storage = storage_of(study)
    trial_id = trial_storage_id(trial)
    try:
        storage.set_trial_user_attr(trial_id, "fail_reason", reason)
        storage.set_trial_state_values(trial_id, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another worker's heartbeat check got there first
    retry_callback()(study, storage.get_trial(trial_id))
    return True
