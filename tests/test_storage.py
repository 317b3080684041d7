"""lrsearch.storage: which storage, opening it, and failing a lost worker's trial."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from lrsearch.errors import StorageError
from lrsearch.storage import (
    MAX_RETRY,
    check_storage_writable,
    default_storage,
    fail_trial,
    list_studies,
    open_storage,
    read_trials,
)
from lrsearch.trials import FAIL_REASON


def test_the_default_is_a_journal_under_the_home(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LRSEARCH_STORAGE", raising=False)
    assert default_storage(tmp_path) == f"journal:{tmp_path / 'optuna.journal'}"
    (tmp_path / "optuna.db").touch()  # an earlier version's SQLite home keeps its database
    assert default_storage(tmp_path) == f"sqlite:///{tmp_path / 'optuna.db'}"
    monkeypatch.setenv("LRSEARCH_STORAGE", "postgresql://db/x")
    assert default_storage(tmp_path) == "postgresql://db/x"


def test_a_home_that_cannot_be_made_is_one_line(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("LRSEARCH_STORAGE", raising=False)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(StorageError, match="LRSEARCH_HOME"):
        default_storage(blocker / "home")
    with pytest.raises(StorageError, match="study storage"):
        check_storage_writable(f"journal:{blocker / 'optuna.journal'}")
    check_storage_writable("postgresql://u:p@db/x")  # a server: its own errors say it


def test_an_unsupported_url_names_the_forms_and_hides_the_password() -> None:
    with pytest.raises(StorageError) as caught:
        open_storage("redis://user:hunter2@cache:6379")
    message = str(caught.value)
    assert "hunter2" not in message and "journal:/path" in message and "\n" not in message


def test_a_journal_opens_and_lists_its_studies(tmp_path) -> None:
    url = f"journal:{tmp_path / 'optuna.journal'}"
    for name in ("b", "a"):
        optuna.create_study(study_name=name, storage=open_storage(url))
    assert list_studies(url) == ["a", "b"]


def test_failing_a_lost_trial_queues_its_retry_once(tmp_path) -> None:
    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    study = optuna.create_study(study_name="s", storage=storage)
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    frozen = read_trials(study)[0]
    assert fail_trial(study, frozen, "worker lost") is True
    trials = study.get_trials()
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs[FAIL_REASON] == "worker lost"
    retry = trials[1]
    assert retry.state == TrialState.WAITING
    assert retry.system_attrs["failed_trial"] == trial.number
    assert retry.params == trials[0].params
    assert fail_trial(study, frozen, "again") is False  # it has ended: nothing to do
    assert len(study.get_trials()) == 2 and MAX_RETRY >= 1
