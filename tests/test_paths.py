"""lrsearch.paths: a place is tried the way it will be written, root included."""

from __future__ import annotations

import pytest

from lrsearch.errors import StorageError
from lrsearch.paths import check_writable

FIX = "set LRSEARCH_HOME to a writable directory"


def test_a_missing_directory_is_made(tmp_path) -> None:
    target = tmp_path / "a" / "b"
    check_writable(target, what="the study storage", fix=FIX)
    assert target.is_dir()


def test_a_path_under_a_file_names_the_file_and_the_fix(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageError) as caught:
        check_writable(blocker / "home", what="the study storage", fix=FIX, error=StorageError)
    assert str(caught.value) == (
        f"cannot write the study storage at {blocker} (Not a directory); {FIX}"
    )


def test_an_existing_file_must_open_for_appending(tmp_path) -> None:
    (tmp_path / "optuna.journal").mkdir()  # a directory where the journal file should be
    with pytest.raises(StorageError, match=r"optuna\.journal \(Is a directory\)"):
        check_writable(
            tmp_path, what="the journal", fix=FIX, files=("optuna.journal",), error=StorageError
        )
    check_writable(tmp_path, what="the journal", fix=FIX, files=("absent.journal",))
