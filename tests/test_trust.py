"""The trust model: a study's storage can be rewritten by anyone with its URL, so nothing it
names is imported, and no store it names is created, unless this process trusts it.

The attack is the issue's: the stored config rewritten in a real storage (journal, SQLite) to
``workload = "subprocess:run"`` with options ``{args = ["touch", F]}``.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from lrsearch.errors import TrackingError
from lrsearch.storage import open_storage, trusted_tracking_uri
from lrsearch.study import KEY_CONFIG, KEY_TRACKING
from tests.test_hardening import STUDY as HARDENING_STUDY
from tests.test_hardening import _invoke

STUDY = HARDENING_STUDY.format(name="base")


def _one_line_error(result, needle: str) -> None:
    out = result.output.strip()
    assert result.exit_code != 0, out
    assert len(out.splitlines()) == 1 and out.startswith("error: "), out
    assert needle in out, out
    assert "Traceback" not in out


@pytest.fixture(scope="module", params=["journal", "sqlite"])
def recorded(request, tmp_path_factory):
    """A home with the finished study "base" in a journal or a SQLite storage."""
    home = tmp_path_factory.mktemp(request.param)
    url = (
        f"journal:{home / 'optuna.journal'}"
        if request.param == "journal"
        else f"sqlite:///{home / 'optuna.db'}"
    )
    (home / "base.toml").write_text(STUDY)
    env = {"LRSEARCH_HOME": str(home), "LRSEARCH_STORAGE": url, "LRSEARCH_ALLOW_WORKLOAD": ""}
    result = _invoke(["run", home / "base.toml", "--devices", "cpu"], env)
    assert result.exit_code == 0, result.output
    return home, url, env


def _set_attr(url: str, key: str, value) -> None:
    storage = open_storage(url)
    storage.set_study_user_attr(storage.get_study_id_from_name("base"), key, value)


@contextlib.contextmanager
def rewritten(url: str, key: str, change):
    """The stored attribute ``key`` of study "base" rewritten by ``change``; put back after."""
    storage = open_storage(url)
    original = storage.get_study_user_attrs(storage.get_study_id_from_name("base"))[key]
    _set_attr(url, key, change(original))
    try:
        yield
    finally:
        _set_attr(url, key, original)


def _study_changed(**changes):
    """A ``change`` for :func:`rewritten`: the stored config's ``[study]`` updated."""

    def change(text: str) -> str:
        config = json.loads(text)
        config["study"].update(changes)
        return json.dumps(config)

    return change


@pytest.fixture
def tampered(recorded, tmp_path):
    """The stored config rewritten to run ``touch F``; put back afterwards."""
    home, url, env = recorded
    flag = tmp_path / "pwned"
    attack = _study_changed(
        workload="subprocess:run", workload_options={"args": ["touch", str(flag)]}
    )
    with rewritten(url, KEY_CONFIG, attack):
        yield home, env, flag


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--from-study", "base"],
        ["best", "--study", "base"],
        ["best", "--study", "base", "--format", "python"],
        ["worker", "--study", "base", "--devices", "cpu"],
    ],
    ids=["train-from-study", "best-json", "best-python", "worker"],
)
def test_a_tampered_study_runs_nothing(tampered, args) -> None:
    _home, env, flag = tampered
    _one_line_error(_invoke(args, env), "'subprocess:run', which this process does not trust")
    assert not flag.exists()


def test_status_reads_a_tampered_study_without_building_it(tampered) -> None:
    _home, env, flag = tampered
    result = _invoke(["status", "--study", "base", "--json"], env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["trials"]["COMPLETE"] >= 1
    assert not flag.exists()


def test_the_attack_is_real_when_trusted(tampered) -> None:
    # The control: told to trust it, `best` does import and call what the storage names.
    _home, env, flag = tampered
    result = _invoke(["best", "--study", "base", "--allow-workload", "subprocess:*"], env)
    _one_line_error(result, "expected lrsearch.Workload")
    assert flag.exists()


def test_run_refuses_a_stored_study_that_trains_other_code(tampered) -> None:
    home, env, flag = tampered
    result = _invoke(["run", home / "base.toml", "--devices", "cpu", "--n-trials", "3"], env)
    _one_line_error(result, "trains 'subprocess:run', not what the study file names")
    assert "--study-name NEW" in result.output and "lrsearch worker" in result.output
    assert not flag.exists()


def test_run_compares_the_stored_config_not_its_fingerprint(recorded) -> None:
    # The stored config names another workload with a matching fingerprint attribute: only
    # the comparison of the configs themselves catches it.
    home, url, env = recorded
    with rewritten(
        url, KEY_CONFIG, _study_changed(workload="tests.tiny_workloads:blobs_with_test")
    ):
        result = _invoke(["run", home / "base.toml", "--devices", "cpu", "--n-trials", "3"], env)
    _one_line_error(result, "trains 'tests.tiny_workloads:blobs_with_test'")


def test_a_stored_tracking_uri_elsewhere_is_not_used(recorded, tmp_path) -> None:
    home, url, env = recorded
    elsewhere = tmp_path / "elsewhere"
    worker = ["worker", "--study", "base", "--devices", "cpu", "--allow-workload", "tests.*"]
    with rewritten(url, KEY_TRACKING, lambda _: str(elsewhere)):
        result = _invoke(worker, env)
        _one_line_error(result, "is neither an http(s) server nor under $LRSEARCH_HOME")
        assert not elsewhere.exists()
        result = _invoke([*worker, "--tracking-uri", str(home)], env)  # the operator's own
        assert result.exit_code == 0, result.output
        assert not elsewhere.exists()


def test_trusted_tracking_uri(tmp_path, monkeypatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("LRSEARCH_HOME", str(home))
    for ok in (
        None,
        "http://mlflow:5000",
        "https://user:pw@mlflow.example",
        str(home),
        str(home / "sub"),
        f"sqlite:///{home}/mlflow.db",
        f"file://{home}/mlruns",
    ):
        assert trusted_tracking_uri(ok) == ok
    for refused in (
        str(tmp_path / "other"),
        f"{home}/../other",
        f"sqlite:///{tmp_path}/mlflow.db",
        "sqlite:///:memory:",
        "postgresql://u:hunter2@db/mlflow",
        "databricks",
    ):
        with pytest.raises(TrackingError, match="pass --tracking-uri") as caught:
            trusted_tracking_uri(refused)
        assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("command", ["run", "worker", "best"])
def test_a_stored_loop_is_not_imported(recorded, command) -> None:
    """The stored config turned into a study with its own loop, ``os:system``: ``run FILE``
    (one worker slot: once it imported the storage's loop) and the rest refuse it."""
    home, url, env = recorded
    loop = _study_changed(
        loop="os:system", workload="os:system", metric="acc", direction="maximize",
        steps_per_epoch=1, workload_options={}, batch_size=None,
    )  # fmt: skip
    args = {
        "run": ["run", home / "base.toml", "--devices", "cpu", "--n-trials", "3"],
        "worker": ["worker", "--study", "base", "--devices", "cpu", "--allow-workload", "tests.*"],
        "best": ["best", "--study", "base", "--allow-workload", "tests.*"],
    }[command]
    with rewritten(url, KEY_CONFIG, loop):
        result = _invoke(args, env)
    needle = "trains 'os:system'" if command == "run" else "'os:system', which this process"
    _one_line_error(result, needle)
