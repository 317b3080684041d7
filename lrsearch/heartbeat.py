"""lrsearch's own heartbeat: finds the trials of lost workers on storages without Optuna's.

Optuna's heartbeat (``heartbeat_interval``, ``fail_stale_trials``) is an RDBStorage feature;
through the gRPC storage proxy (``grpc://``) or a journal file nothing would ever notice a worker
whose host was lost, and its trial would stay RUNNING. So, on such storages, :func:`beating`
writes the trial user attribute ``lrsearch.heartbeat`` (``{"trial": number, "at": unix time}``)
every ``HEARTBEAT_S`` seconds from a daemon thread while the trial runs, and :func:`fail_stale`
fails a RUNNING trial whose own heartbeat is older than ``GRACE_S`` and queues its retry, as
Optuna's RetryHeartbeatStaleTrialCallback would (:func:`lrsearch.storage.fail_trial`).

A trial with no heartbeat of its own is left alone, as Optuna's ``fail_stale_trials`` leaves a
trial with no heartbeat row: a worker writing to the database directly (Optuna's heartbeat
watches it), or a retry that has not beaten yet (it inherits its dead trial's attributes, so
the heartbeat names the trial it belongs to).

The times are the workers' clocks: hosts must agree to well within ``GRACE_S`` (NTP does).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import optuna
from optuna.storages import BaseStorage, InMemoryStorage
from optuna.trial import FrozenTrial, TrialState

from lrsearch.retrying import settling
from lrsearch.storage import (
    GRACE_S,
    HEARTBEAT_S,
    fail_trial,
    has_optuna_heartbeat,
    storage_of,
    trial_storage_id,
)
from lrsearch.trials import HEARTBEAT

__all__ = ["KEY", "beating", "fail_stale", "last_beat"]

KEY = HEARTBEAT
STALE_REASON = "worker lost: no heartbeat"


@contextmanager
def beating(trial: optuna.Trial, *, interval_s: float = HEARTBEAT_S) -> Iterator[None]:
    """Keep ``trial``'s heartbeat while the block runs (nothing to do on Optuna's heartbeat).

    The first beat is written before the block starts, so a trial is never without one while
    it waits for its turn or trains.
    """
    storage = trial.storage
    if has_optuna_heartbeat(storage) or isinstance(storage, InMemoryStorage):
        yield  # Optuna's heartbeat watches it, or no other process could ever see it
        return
    trial_id = trial_storage_id(trial)
    _write(storage, trial_id, trial.number)
    stop = threading.Event()
    thread = threading.Thread(
        target=_beat,
        args=(storage, trial_id, trial.number, interval_s, stop),
        name=f"lrsearch-heartbeat-{trial.number}",
        daemon=True,
    )
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=interval_s)  # a beat stuck on a slow storage must not hold the trial


def _write(storage: BaseStorage, trial_id: int, number: int) -> None:
    storage.set_trial_user_attr(trial_id, KEY, {"trial": number, "at": time.time()})


def _beat(
    storage: BaseStorage, trial_id: int, number: int, interval_s: float, stop: threading.Event
) -> None:
    while not stop.wait(interval_s):
        try:
            _write(storage, trial_id, number)
        except optuna.exceptions.UpdateFinishedTrialError:
            return  # the trial was ended elsewhere
        except Exception:
            continue  # the storage may be back by the next beat; GRACE_S allows a few misses


def last_beat(trial: FrozenTrial) -> float | None:
    """When ``trial`` last beat (unix time), or None if it has no heartbeat of its own."""
    beat = trial.user_attrs.get(KEY)
    if not isinstance(beat, dict) or beat.get("trial") != trial.number:
        return None  # none yet, or a retry's copy of its dead trial's
    return float(beat["at"])


def fail_stale(
    study: optuna.Study,
    trials: Sequence[FrozenTrial] | None = None,
    *,
    grace_s: float = GRACE_S,
) -> list[int]:
    """Fail (and queue the retry of) RUNNING trials whose heartbeat is older than ``grace_s``.

    Args:
        study: the study to check.
        trials: its trials when the caller has just read them (saves a read).
        grace_s: how old a heartbeat may be before its worker counts as lost.

    Returns:
        The numbers of the trials this call failed (another worker may fail some first).
    """
    if settling(storage_of(study)):
        return []  # every heartbeat is old right after an outage: give the workers time to beat
    if trials is None:
        trials = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    now = time.time()
    failed = []
    for trial in trials:
        beat = last_beat(trial) if trial.state == TrialState.RUNNING else None
        if beat is None or now - beat <= grace_s:
            continue
        if fail_trial(study, trial, f"{STALE_REASON} for {now - beat:.0f}s"):
            failed.append(trial.number)
    return failed
