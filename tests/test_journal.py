"""The embedded journal after a write cut short: the study stays readable, nothing earlier lost."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner, Result
from optuna.storages.journal import JournalStorage
from optuna.trial import TrialState

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
