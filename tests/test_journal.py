"""The embedded journal after a write cut short: the study stays readable, nothing earlier lost."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.storages.journal import JournalStorage
from optuna.trial import TrialState

from lrsearch import journal as journal_module
from lrsearch.cli import cli
from lrsearch.errors import StorageError
from lrsearch.journal import SafeJournalFile
from lrsearch.storage import open_storage

TINY = """
[study]
name = "cut"
workload = "tests.tiny_workloads:blobs"
n_trials = {n}
epochs = 1
[range_test]
repeats = 1
num_iter = 20
[prior]
n_startup_trials = 2
[tracking]
enabled = false
"""


def _lrsearch(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), obj={}, env={"LRSEARCH_HOME": str(home)})


def _finished(journal: Path) -> dict[int, object]:
    """Finished trials: a complete one's value, a pruned one's state (a startup probe that
    diverged is pruned)."""
    storage = JournalStorage(SafeJournalFile(str(journal)))
    study = optuna.load_study(study_name="cut", storage=storage)
    return {
        t.number: t.value if t.state == TrialState.COMPLETE else t.state
        for t in study.trials
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
    }


def _cut_last_record(journal: Path) -> bytes:
    """A copy of the last record cut halfway, appended as a crash mid-write would leave it."""
    last = journal.read_bytes().splitlines()[-1]
    return last[: len(last) // 2]


@pytest.fixture(scope="module")
def two_trials(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    (home / "cut.toml").write_text(TINY.format(n=2))
    out = _lrsearch(home, "run", str(home / "cut.toml"))
    assert out.exit_code == 0, out.output
    return home


@pytest.mark.parametrize(
    "tail",
    [_cut_last_record, lambda journal: b'{"op_code": 5, "worker_id": "x", "tri\x00\x00\n'],
    ids=["cut-mid-write", "garbage-line"],
)
def test_a_bad_last_record_is_set_aside_and_the_study_finishes(two_trials, tmp_path, tail) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "cut.toml").write_text(TINY.format(n=3))
    journal = home / "optuna.journal"
    journal.write_bytes((two_trials / "optuna.journal").read_bytes())
    before = _finished(journal)
    bad = tail(journal)
    with journal.open("ab") as f:
        f.write(bad)

    out = _lrsearch(home, "run", str(home / "cut.toml"))
    assert out.exit_code == 0, out.output
    assert "Traceback" not in out.stderr
    (aside,) = home.glob("optuna.journal.corrupt-*")
    assert aside.read_bytes() == bad
    assert f"set aside in {aside}" in out.stderr
    assert journal.read_bytes().endswith(b"\n")
    after = _finished(journal)
    assert len(after) == 3 and {n: after[n] for n in before} == before

    status = _lrsearch(home, "status", "--study", "cut", "--json")
    assert status.exit_code == 0, status.output
    trials = json.loads(status.stdout)["trials"]
    assert trials["COMPLETE"] + trials["PRUNED"] == 3


def test_a_bad_record_in_the_middle_is_one_line_naming_the_file(two_trials, tmp_path) -> None:
    journal = tmp_path / "optuna.journal"
    lines = (two_trials / "optuna.journal").read_bytes().splitlines(keepends=True)
    lines[3] = lines[3][:10] + b"\n"
    journal.write_bytes(b"".join(lines))
    with pytest.raises(StorageError) as caught:
        open_storage(f"journal:{journal}")
    message = str(caught.value)
    assert str(journal) in message and "line 4" in message and "head -n 3" in message
    assert "credentials" not in message
    assert journal.read_bytes() == b"".join(lines)  # nothing was changed
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_an_append_after_another_process_died_mid_write_starts_a_fresh_line(tmp_path) -> None:
    journal = tmp_path / "j.log"
    storage = JournalStorage(SafeJournalFile(str(journal)))
    study = optuna.create_study(storage=storage, study_name="s")
    with journal.open("ab") as f:  # another process, killed mid-write after this one opened
        f.write(b'{"op_code": 4, "wor')
    study.set_user_attr("after", 1)
    again = JournalStorage(SafeJournalFile(str(journal)))
    assert optuna.load_study(study_name="s", storage=again).user_attrs == {"after": 1}
    (aside,) = tmp_path.glob("j.log.corrupt-*")
    assert aside.read_bytes() == b'{"op_code": 4, "wor'


def test_a_journal_that_is_all_tail_becomes_empty(tmp_path) -> None:
    journal = tmp_path / "j.log"
    journal.write_bytes(b"\x00" * 100)  # a full disk can leave zeros
    storage = JournalStorage(SafeJournalFile(str(journal)))
    assert storage.get_all_studies() == [] and journal.read_bytes() == b""


def test_a_long_last_record_is_found_across_chunks(tmp_path) -> None:
    journal = tmp_path / "j.log"
    storage = JournalStorage(SafeJournalFile(str(journal)))
    study = optuna.create_study(storage=storage, study_name="s")
    study.set_user_attr("big", "x" * 300_000)  # longer than one chunk of the backward search
    whole = journal.read_bytes()
    with journal.open("ab") as f:
        f.write(b"x" * 200_000)
    JournalStorage(SafeJournalFile(str(journal)))
    assert journal.read_bytes() == whole


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every os.fsync call from now on, by the thread that made it (the real fsync runs)."""
    calls: list[str] = []
    real = os.fsync

    def counting(fd: int) -> None:
        real(fd)
        calls.append(threading.current_thread().name)

    monkeypatch.setattr(os, "fsync", counting)
    return calls


def test_epoch_values_are_read_at_once_and_fsynced_with_the_next_state(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(journal_module, "LAZY_SYNC_S", 60.0)
    journal = tmp_path / "j.log"
    study = optuna.create_study(storage=JournalStorage(SafeJournalFile(str(journal))))
    trial = study.ask()
    fsyncs = _count_fsyncs(monkeypatch)

    for epoch in range(3):
        trial.report(1.0 / (epoch + 1), epoch)
        trial.set_user_attr("epoch", epoch)
    assert fsyncs == []
    other = JournalStorage(SafeJournalFile(str(journal)))  # another worker, reading now
    (seen,) = optuna.load_study(study_name=study.study_name, storage=other).trials
    assert seen.intermediate_values == {0: 1.0, 1: 0.5, 2: 1 / 3}
    assert seen.user_attrs == {"epoch": 2}

    study.tell(trial, 0.25)
    assert len(fsyncs) == 1  # the state record, and the whole file with it


def test_epoch_values_are_fsynced_in_the_background_once_the_last_fsync_is_old(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(journal_module, "LAZY_SYNC_S", 0.0)
    study = optuna.create_study(storage=JournalStorage(SafeJournalFile(str(tmp_path / "j"))))
    trial = study.ask()
    fsyncs = _count_fsyncs(monkeypatch)
    trial.report(0.5, 1)
    deadline = time.monotonic() + 10
    while not fsyncs and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fsyncs == ["lrsearch-journal-fsync"]  # not the trial's thread: it did not wait
    trial.report(0.4, 2)  # asked again: synced again
    while len(fsyncs) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fsyncs == ["lrsearch-journal-fsync"] * 2
    study.tell(trial, 0.25)
    assert fsyncs[-1] == threading.current_thread().name  # a state: on the spot
