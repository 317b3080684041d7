"""The retrying storage on a real database made unreachable for a while (an SQLite file locked).

An exclusive lock held by another connection makes every call fail with SQLAlchemy's
OperationalError ("database is locked") until it is released: an outage as the storage
sees it. The PostgreSQL and storage-proxy outages under real workers are in test_outage.py.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from lrsearch.errors import ConfigError
from lrsearch.retrying import (
    GRACE_ENV,
    RetryingStorage,
    StorageUnavailable,
    gave_up,
    outage_grace_s,
    retrying,
    settling,
)
from lrsearch.storage import backend_of, open_storage, served_storage


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Path, list[str], optuna.Study]]:
    path = tmp_path / "o.db"
    lines: list[str] = []
    rdb = optuna.storages.RDBStorage(
        f"sqlite:///{path}", engine_kwargs={"connect_args": {"timeout": 0.05}}
    )
    storage = retrying(optuna.storages.get_storage(rdb), label="db", settle_s=5, grace_s=3.0)
    storage._outage.echo = lines.append
    study = optuna.create_study(storage=storage, study_name="s")
    yield path, lines, study
    rdb.engine.dispose()


@contextmanager
def locked(path: Path, seconds: float) -> Iterator[None]:
    """Another connection holds the database's exclusive lock for ``seconds`` (in a thread)."""
    conn = sqlite3.connect(path, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    release = threading.Timer(seconds, lambda: (conn.rollback(), conn.close()))
    release.start()
    try:
        yield
    finally:
        release.join()


def test_calls_wait_out_an_outage_and_say_so_twice(db) -> None:
    path, lines, study = db
    trial = study.ask()
    started = time.monotonic()
    with locked(path, 1.0):
        study.tell(trial, 0.5)  # a trial that finished during the outage
    assert time.monotonic() - started >= 0.9
    assert study.trials[0].state == TrialState.COMPLETE and study.trials[0].value == 0.5
    assert len(lines) == 2
    assert lines[0].startswith("storage unreachable (") and "retrying for 3 s" in lines[0]
    assert lines[1].startswith("storage reachable again after ")
    assert settling(study._storage)  # just back: no trial is judged stale yet


def test_past_the_grace_period_every_call_fails_at_once_in_one_line(db) -> None:
    path, _, study = db
    study._storage._outage.grace_s = 0.3
    with locked(path, 1.0), pytest.raises(StorageUnavailable) as caught:
        study.set_user_attr("k", 1)
    message = str(caught.value)
    assert "\n" not in message and "unreachable for longer than the grace period" in message
    assert GRACE_ENV in message and "run the same command to resume" in message
    assert gave_up(study._storage) is not None
    started = time.monotonic()
    with pytest.raises(StorageUnavailable):
        study.trials
    assert time.monotonic() - started < 0.1


def test_a_heartbeat_in_an_outage_is_missed_not_fatal(db) -> None:
    path, lines, study = db
    trial = study.ask()
    with locked(path, 0.5):
        study._storage.record_heartbeat(trial._trial_id)  # returns: the next beat comes
    assert lines and lines[0].startswith("storage unreachable")


def test_a_study_created_by_a_try_whose_answer_was_lost_is_found(db) -> None:
    """A retried create whose first try went through: the retry's 'duplicate' is this study."""
    _, _, study = db
    storage = study._storage
    attempts = []

    def create() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            storage.inner.create_new_study([optuna.study.StudyDirection.MINIMIZE], "twice")
            raise optuna.exceptions.StorageInternalError("lost") from _operational()
        return storage.inner.create_new_study([optuna.study.StudyDirection.MINIMIZE], "twice")

    def settle(exc: Exception) -> int:
        assert isinstance(exc, optuna.exceptions.DuplicatedStudyError)
        return storage.get_study_id_from_name("twice")

    study_id = storage._call(create, settle)
    assert study_id == storage.get_study_id_from_name("twice") and len(attempts) == 2


def _operational() -> Exception:
    from sqlalchemy.exc import OperationalError

    return OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_open_storage_puts_databases_behind_the_wrapper(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    assert isinstance(storage, RetryingStorage)
    assert isinstance(backend_of(storage), optuna.storages.RDBStorage)
    backend_of(storage).engine.dispose()
    journal = open_storage(f"journal:{tmp_path / 'j.log'}")
    assert not isinstance(journal, RetryingStorage)  # a file: no outage to ride out


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_a_bad_grace_is_one_line_naming_the_variable(monkeypatch, raw: str) -> None:
    monkeypatch.setenv(GRACE_ENV, raw)
    with pytest.raises(ConfigError, match=GRACE_ENV):
        outage_grace_s()


def test_the_grace_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(GRACE_ENV, raising=False)
    assert outage_grace_s() == 300
    monkeypatch.setenv(GRACE_ENV, "20")
    assert outage_grace_s() == 20


def test_a_restarted_proxy_takes_the_parameters_of_a_trial_it_never_saw(tmp_path: Path) -> None:
    """A trial asked for through one proxy process gets its parameters through the next."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    before = served_storage(url)  # the proxy that was killed
    study_id = before.create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
    trial_id = before.create_new_trial(study_id)
    after = served_storage(url)  # its replacement, on the same database
    x = optuna.distributions.FloatDistribution(0.0, 1.0)
    after.set_trial_param(trial_id, "x", 0.25, x)
    after.set_trial_param(trial_id, "x", 0.25, x)  # a client's retry: the same value again
    assert after.get_trial(trial_id).params == {"x": 0.25}
    for storage in (before, after):
        backend_of(storage).engine.dispose()
