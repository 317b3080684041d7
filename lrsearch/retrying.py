"""Riding out a storage outage: a storage whose every call waits for the storage to come back.

A PostgreSQL restart or a storage proxy killed and restarted makes every call fail for a
while. :class:`RetryingStorage` sits in front of the storage Optuna uses (``open_storage``
puts it there) and retries a call that failed because the storage was unreachable, with
backoff, for up to a grace period (``LRSEARCH_STORAGE_GRACE`` seconds, default 300; ``lrsearch
run``/``worker --storage-grace``). One line says when the storage became unreachable and one
when it is back. A trial that finished meanwhile has its result written when it returns.
Past the grace period every call raises :class:`StorageUnavailable` (one line) at once.

Reads are retried as they are. A write is retried too; where the first attempt may have been
done after all (its answer lost with the connection), the retry's refusal is checked against
what the storage holds: a study already created under that name is the one this call created,
a trial already in the state and values it was given was ended by this call.

Optuna's heartbeat thread calls :meth:`record_heartbeat`: it is tried once (a beat missed in
an outage is made up by the next), so it never dies on a database error. After an outage every
worker's heartbeat is old; for ``settle_s`` after one, this process fails no trial as stale.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Container, Sequence
from typing import Any, TypeVar

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy
from optuna.trial import FrozenTrial, TrialState

from lrsearch.errors import ConfigError, StorageError

__all__ = [
    "GRACE_ENV",
    "RetryingStorage",
    "StorageUnavailable",
    "gave_up",
    "is_outage",
    "outage_grace_s",
    "retrying",
    "settling",
    "waiting_out",
]

GRACE_ENV = "LRSEARCH_STORAGE_GRACE"
DEFAULT_GRACE_S = 300.0
FIRST_WAIT_S, LONGEST_WAIT_S = 0.25, 4.0  # backoff between tries: doubles up to the longest

T = TypeVar("T")


class StorageUnavailable(StorageError):
    """The storage stayed unreachable for longer than the grace period."""


def outage_grace_s() -> float:
    """How long a storage call waits for an unreachable storage: ``$LRSEARCH_STORAGE_GRACE``.

    Raises:
        ConfigError: the variable is not a number of seconds >= 0.
    """
    raw = os.environ.get(GRACE_ENV, "").strip()
    if not raw:
        return DEFAULT_GRACE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN included
        raise ConfigError(
            f"{GRACE_ENV}={raw!r}: expected the seconds a storage outage is waited out, e.g. 300"
        )
    return value


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage is unreachable (not that the call was wrong)."""
    import grpc
    from sqlalchemy import exc as sa

    if isinstance(exc, optuna.exceptions.StorageInternalError) and exc.__cause__ is not None:
        exc = exc.__cause__  # Optuna wraps what failed at commit
    if isinstance(exc, grpc.RpcError):
        code = exc.code() if callable(getattr(exc, "code", None)) else None
        return code in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.UNKNOWN,  # the proxy's own database call failed
            grpc.StatusCode.INTERNAL,
            grpc.StatusCode.DEADLINE_EXCEEDED,
            grpc.StatusCode.CANCELLED,
        )
    if isinstance(exc, sa.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, (sa.OperationalError, sa.InterfaceError, sa.DisconnectionError))


class _Outage:
    """One process's view of its storage's reachability, shared by its threads."""

    def __init__(self, label: str, grace_s: float, echo: Callable[[str], None]) -> None:
        self.label = label
        self.grace_s = grace_s
        self.echo = echo
        self.lock = threading.Lock()
        self.since: float | None = None  # monotonic time the current outage began
        self.ended: float | None = None  # monotonic time the last outage ended
        self.gave_up = False

    def error(self) -> StorageUnavailable:
        return StorageUnavailable(
            f"the storage {self.label} was unreachable for longer than the grace period "
            f"({self.grace_s:.0f} s; --storage-grace or {GRACE_ENV}); finished trials are "
            "kept; when it is back, run the same command to resume"
        )

    def failed(self, exc: BaseException) -> float:
        """A call failed on an outage: seconds left to wait (raises past the grace period)."""
        now = time.monotonic()
        with self.lock:
            if self.since is None:
                self.since = now
                self.echo(
                    f"storage unreachable ({type(exc).__name__}), retrying for {self.grace_s:.0f} s"
                )
            left = self.since + self.grace_s - now
            if left <= 0:
                self.gave_up = True
        if left <= 0:
            raise self.error() from None
        return left

    def reached(self) -> None:
        if self.since is None:  # unlocked fast path: no outage
            return
        with self.lock:
            if self.since is not None:
                now = time.monotonic()
                self.echo(f"storage reachable again after {now - self.since:.0f} s")
                self.since, self.ended = None, now

    def settling(self, settle_s: float) -> bool:
        """Whether an outage ended less than ``settle_s`` ago (or is still on)."""
        return self.since is not None or (
            self.ended is not None and time.monotonic() - self.ended < settle_s
        )


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class RetryingStorage(BaseStorage):
    """A storage whose calls wait out an outage of up to the grace period (see the module)."""

    def __init__(
        self,
        inner: BaseStorage,
        *,
        label: str,
        grace_s: float | None = None,
        settle_s: float = 0.0,
        echo: Callable[[str], None] = _say,
    ) -> None:
        self.inner = inner
        self.settle_s = settle_s
        self._outage = _Outage(label, outage_grace_s() if grace_s is None else grace_s, echo)

    @property
    def gave_up(self) -> bool:
        """Whether an outage outlasted the grace period (every call now fails at once)."""
        return self._outage.gave_up

    def unavailable(self) -> StorageUnavailable:
        """The one-line error for an outage past the grace period."""
        return self._outage.error()

    def _call(
        self,
        call: Callable[[], T],
        settle: Callable[[Exception], T] | None = None,
    ) -> T:
        """``call()`` until the storage answers; ``settle`` judges a retry's refusal."""
        wait, retried = FIRST_WAIT_S, False
        while True:
            if self._outage.gave_up:
                raise self._outage.error()
            try:
                result = call()
            except Exception as exc:
                if is_outage(exc):
                    left = self._outage.failed(exc)
                    time.sleep(min(wait, left))
                    wait, retried = min(2 * wait, LONGEST_WAIT_S), True
                    continue
                if retried and settle is not None:
                    self._outage.reached()
                    return settle(exc)
                raise
            self._outage.reached()
            return result

    # Studies.
    def create_new_study(
        self, directions: Sequence[StudyDirection], study_name: str | None = None
    ) -> int:
        def settle(exc: Exception) -> int:
            if isinstance(exc, optuna.exceptions.DuplicatedStudyError) and study_name:
                return self.get_study_id_from_name(study_name)  # the lost answer's study
            raise exc

        return self._call(lambda: self.inner.create_new_study(directions, study_name), settle)

    def delete_study(self, study_id: int) -> None:
        def settle(exc: Exception) -> None:
            if not isinstance(exc, KeyError):  # KeyError: the first try deleted it
                raise exc

        self._call(lambda: self.inner.delete_study(study_id), settle)

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(lambda: self.inner.set_study_user_attr(study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: Any) -> None:
        self._call(lambda: self.inner.set_study_system_attr(study_id, key, value))

    def get_study_id_from_name(self, study_name: str) -> int:
        return self._call(lambda: self.inner.get_study_id_from_name(study_name))

    def get_study_name_from_id(self, study_id: int) -> str:
        return self._call(lambda: self.inner.get_study_name_from_id(study_id))

    def get_study_directions(self, study_id: int) -> list[StudyDirection]:
        return self._call(lambda: self.inner.get_study_directions(study_id))

    def get_study_user_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(lambda: self.inner.get_study_user_attrs(study_id))

    def get_study_system_attrs(self, study_id: int) -> dict[str, Any]:
        return self._call(lambda: self.inner.get_study_system_attrs(study_id))

    def get_all_studies(self) -> list[FrozenStudy]:
        return self._call(self.inner.get_all_studies)

    # Trials.
    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        return self._call(lambda: self.inner.create_new_trial(study_id, template_trial))

    def set_trial_param(
        self,
        trial_id: int,
        param_name: str,
        param_value_internal: float,
        distribution: optuna.distributions.BaseDistribution,
    ) -> None:
        self._call(
            lambda: self.inner.set_trial_param(
                trial_id, param_name, param_value_internal, distribution
            )
        )

    def get_trial_id_from_study_id_trial_number(self, study_id: int, trial_number: int) -> int:
        return self._call(
            lambda: self.inner.get_trial_id_from_study_id_trial_number(study_id, trial_number)
        )

    def set_trial_state_values(
        self, trial_id: int, state: TrialState, values: Sequence[float] | None = None
    ) -> bool:
        def settle(exc: Exception) -> bool:
            if isinstance(exc, optuna.exceptions.UpdateFinishedTrialError):
                stored = self.get_trial(trial_id)  # did the lost answer's try end it as asked?
                if stored.state == state and (values is None or stored.values == list(values)):
                    return True
            raise exc

        return self._call(
            lambda: self.inner.set_trial_state_values(trial_id, state, values), settle
        )

    def set_trial_intermediate_value(
        self, trial_id: int, step: int, intermediate_value: float
    ) -> None:
        self._call(
            lambda: self.inner.set_trial_intermediate_value(trial_id, step, intermediate_value)
        )

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(lambda: self.inner.set_trial_user_attr(trial_id, key, value))

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        self._call(lambda: self.inner.set_trial_system_attr(trial_id, key, value))

    def get_trial(self, trial_id: int) -> FrozenTrial:
        return self._call(lambda: self.inner.get_trial(trial_id))

    def get_all_trials(
        self,
        study_id: int,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self._call(lambda: self.inner.get_all_trials(study_id, deepcopy, states))

    def get_best_trial(self, study_id: int) -> FrozenTrial:
        return self._call(lambda: self.inner.get_best_trial(study_id))

    def remove_session(self) -> None:
        self.inner.remove_session()

    def check_trial_is_updatable(self, trial_id: int, trial_state: TrialState) -> None:
        self.inner.check_trial_is_updatable(trial_id, trial_state)


class _RetryingHeartbeatStorage(RetryingStorage, BaseHeartbeat):
    """A :class:`RetryingStorage` in front of a storage with Optuna's heartbeat."""

    inner: Any  # a BaseStorage that is also a BaseHeartbeat

    def record_heartbeat(self, trial_id: int) -> None:
        """One try: Optuna's heartbeat thread dies on an exception, and the next beat comes."""
        try:
            self.inner.record_heartbeat(trial_id)
        except Exception as exc:
            if not is_outage(exc):
                raise
            try:
                self._outage.failed(exc)
            except StorageUnavailable:
                return  # the trial's own storage calls say it
        else:
            self._outage.reached()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = self._call(lambda: self.inner._get_stale_trial_ids(study_id))
        return [] if self._outage.settling(self.settle_s) else stale

    def get_heartbeat_interval(self) -> int | None:
        return self.inner.get_heartbeat_interval()  # type: ignore[no-any-return]

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.inner.get_heartbeat_stale_trial_callback()  # type: ignore[no-any-return]


def retrying(
    inner: BaseStorage, *, label: str, settle_s: float, grace_s: float | None = None
) -> RetryingStorage:
    """``inner`` behind a :class:`RetryingStorage` (one that keeps Optuna's heartbeat if it has one)."""
    cls = _RetryingHeartbeatStorage if isinstance(inner, BaseHeartbeat) else RetryingStorage
    return cls(inner, label=label, grace_s=grace_s, settle_s=settle_s)


def waiting_out(open_: Callable[[], T], *, label: str, wait: bool) -> T:
    """``open_()``; with ``wait``, retried while the storage is unreachable, within the grace.

    ``open_`` raises a :class:`StorageError` whose ``__cause__`` says why.
    """
    if not wait:
        return open_()
    outage = _Outage(label, outage_grace_s(), _say)
    delay = FIRST_WAIT_S
    while True:
        try:
            storage = open_()
        except StorageError as exc:
            cause = exc.__cause__
            if cause is None or not (is_outage(cause) or isinstance(cause, ConnectionError)):
                raise
            time.sleep(min(delay, outage.failed(cause)))
            delay = min(2 * delay, LONGEST_WAIT_S)
            continue
        outage.reached()
        return storage


def gave_up(storage: BaseStorage) -> StorageUnavailable | None:
    """The error to raise if ``storage`` stayed unreachable past its grace period, else None."""
    if isinstance(storage, RetryingStorage) and storage.gave_up:
        return storage.unavailable()
    return None


def settling(storage: BaseStorage) -> bool:
    """Whether ``storage`` came back from an outage too recently to judge heartbeats by."""
    return isinstance(storage, RetryingStorage) and storage._outage.settling(storage.settle_s)
