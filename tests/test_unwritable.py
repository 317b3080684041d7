"""Unwritable places: one line naming the path and the fix, before anything long starts;
nothing left RUNNING; a study whose only loss is its artifacts finishes with a warning.

Tests run as root here, whom permission bits do not stop: read-only places are made with
``chattr +i`` (immutable; needs a file system that has it), else, for another user, by
removing write permission; otherwise the test is skipped with the reason. A path under a
regular file needs neither.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import subprocess
import time

import pytest
from mlflow import MlflowClient

from lrsearch.storage import list_studies
from lrsearch.tracking import local_tracking_uri
from tests.test_exit_paths import _one_line, _runs
from tests.test_hardening import STUDY, _invoke


@contextlib.contextmanager
def read_only(*paths):
    """``paths`` (and everything in them) read-only, even for root; restored afterwards."""
    if _chattr("+i", paths):
        try:
            yield
        finally:
            _chattr("-i", paths)
        return
    if os.geteuid() == 0:
        pytest.skip("no read-only place can be made: chattr +i fails here and root ignores modes")
    modes = {p: p.stat().st_mode for path in paths for p in [path, *path.rglob("*")]}
    for p, mode in modes.items():
        p.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        yield
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def _chattr(flag: str, paths) -> bool:
    try:
        command = ["chattr", "-R", flag, *map(str, paths)]
        done = subprocess.run(command, check=False, capture_output=True)
    except OSError:
        return False
    return done.returncode == 0


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A home holding the finished study "s"."""
    home = tmp_path_factory.mktemp("home")
    (home / "s.toml").write_text(STUDY.format(name="s"))
    result = _invoke(["run", home / "s.toml", "--devices", "cpu"], {"LRSEARCH_HOME": str(home)})
    assert result.exit_code == 0, result.output
    return home


def _quick_one_line(args, env, needle: str) -> str:
    started = time.perf_counter()
    line = _one_line(_invoke(args, env), needle)
    assert time.perf_counter() - started < 20  # no range test, no MLflow retrying for minutes
    return line


def test_a_read_only_home_with_a_study(home) -> None:
    env = {"LRSEARCH_HOME": str(home)}
    journal = hashlib.sha256((home / "optuna.journal").read_bytes()).hexdigest()
    with read_only(home):
        line = _quick_one_line(
            ["run", home / "s.toml", "--devices", "cpu", "--n-trials", "3"], env, "cannot write"
        )
        assert f"the study storage at {home}" in line and "set LRSEARCH_HOME" in line
        worker = ["worker", "--study", "s", "--devices", "cpu", "--allow-workload", "tests.*"]
        _quick_one_line(worker, env, f"cannot write the study storage at {home}")
        status = _invoke(["status", "--study", "s", "--json"], env)  # reading still works
        assert status.exit_code == 0, status.output
    assert hashlib.sha256((home / "optuna.journal").read_bytes()).hexdigest() == journal


@pytest.mark.parametrize("under", ["read-only directory", "regular file"])
def test_a_home_that_cannot_be_created(tmp_path, under) -> None:
    parent = tmp_path / "parent"
    if under == "regular file":
        parent.write_text("not a directory")
        context = contextlib.nullcontext()
    else:
        parent.mkdir()
        context = read_only(parent)
    (tmp_path / "s.toml").write_text(STUDY.format(name="s"))
    env = {"LRSEARCH_HOME": str(parent / "sub")}
    with context:
        for args in (["run", tmp_path / "s.toml", "--devices", "cpu"], ["status"]):
            line = _quick_one_line(args, env, "cannot write the lrsearch home at")
            assert "set LRSEARCH_HOME to a writable directory" in line
            assert str(parent / "sub" if under != "regular file" else parent) in line


def test_an_empty_read_only_home_fails_at_once(tmp_path) -> None:
    """Once 108 s of MLflow retrying to create its database; now one line at once."""
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "s.toml").write_text(STUDY.format(name="s"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"  # writable: the MLflow store is what fails
    env = {"LRSEARCH_HOME": str(empty), "LRSEARCH_STORAGE": storage}
    with read_only(empty):
        line = _quick_one_line(
            ["run", tmp_path / "s.toml", "--devices", "cpu"], env, "cannot write the MLflow store"
        )
        assert str(empty) in line and "--tracking-uri" in line
        _quick_one_line(  # the default: storage and store both in the home
            ["run", tmp_path / "s.toml", "--devices", "cpu"],
            {"LRSEARCH_HOME": str(empty)},
            f"cannot write the study storage at {empty}",
        )
    assert not (tmp_path / "optuna.db").exists() or list_studies(storage) == []


def test_unwritable_artifacts_are_a_warning(tmp_path) -> None:
    (tmp_path / "s.toml").write_text(STUDY.format(name="s"))
    (tmp_path / "artifacts").mkdir()
    with read_only(tmp_path / "artifacts"):
        result = _invoke(
            ["run", tmp_path / "s.toml", "--devices", "cpu"], {"LRSEARCH_HOME": str(tmp_path)}
        )
    assert result.exit_code == 0, result.output
    assert f"warning: cannot write MLflow artifacts at {tmp_path / 'artifacts'}" in result.output
    assert "study 's': 2 complete" in result.output
    by_role, runs = _runs(tmp_path)
    assert by_role["study"].info.status == "FINISHED"
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_artifacts_unwritable_during_a_study(home) -> None:
    """The study's own artifact directory refuses writes (as if made read-only mid-study):
    its trials finish, the parent run is closed, and the command exits 0 with a warning."""
    client = MlflowClient(local_tracking_uri(home)[0])
    location = client.get_experiment_by_name("s").artifact_location
    with read_only(home / "artifacts" / location.rstrip("/").rpartition("/")[2]):
        result = _invoke(
            ["run", home / "s.toml", "--devices", "cpu", "--n-trials", "3"],
            {"LRSEARCH_HOME": str(home)},
        )
    assert result.exit_code == 0, result.output
    assert "warning: the study's summary and plots were not recorded" in result.output
    assert "study 's': 3 complete" in result.output
    by_role, runs = _runs(home)
    assert by_role["study"].info.status == "FINISHED"
    assert not [r for r in runs if r.info.status == "RUNNING"] and len(runs) == 1 + 3
