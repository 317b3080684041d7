"""Redaction by parsing: a URL's password is hidden however it is written (raw with
``/ # ? @`` or a space, or percent-encoded), and so is a ``password=`` pair, in everything
lrsearch prints or records. A real PostgreSQL role with such a password:
``tests/test_distributed.py::test_a_storage_password_never_leaks``."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from mlflow import MlflowClient

from lrsearch.recording import open_recorder
from lrsearch.storage import redact
from lrsearch.study import load_study
from lrsearch.tracking import MlflowTracker, local_tracking_uri, scrub, without_userinfo
from lrsearch.tracking._scrub import as_text
from tests.test_hardening import STUDY, _invoke

# raw passwords that break urllib's parsing, and the parts a leak would show
PASSWORDS = ["sec/ret", "se#cret", "se?cret", "p@ss@word", "my secret", "a/b#c?d@e f:g"]
PIECES = ["sec/", "/ret", "se#c", "se?c", "p@ss", "ss@w", "y sec", "a/b#", "c?d@", "e f:", "f:g"]


def _leaks(text: str, password: str) -> list[str]:
    forms = {password, quote(password, safe="")}
    return [p for p in [*forms, *PIECES] if p in text and p in password]


@pytest.mark.parametrize("password", PASSWORDS + [quote(p, safe="") for p in PASSWORDS])
@pytest.mark.parametrize(
    ("scheme", "rest"),
    [
        ("postgresql", "127.0.0.1:5432/optuna?sslmode=require"),
        ("mysql+pymysql", "db.example/x"),
        ("https", "mlflow.example:5000"),
        ("postgresql", "[::1]:5432/db"),
    ],
)
def test_a_password_is_redacted_however_written(password, scheme, rest) -> None:
    url = f"{scheme}://optuna:{password}@{rest}"
    assert redact(url) == f"{scheme}://optuna:***@{rest}"
    assert without_userinfo(url) == f"{scheme}://{rest}"
    # inside text: an error message, a JSON param, a sentence going on after it
    message = f"cannot open storage {url}: connection refused; ask admin@example.com"
    assert scrub(message) == (
        f"cannot open storage {scheme}://optuna:***@{rest}: connection refused; "
        "ask admin@example.com"
    )
    recorded = as_text({"storage": url, "n_trials": 3})
    assert "***" in recorded and not _leaks(recorded, password)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("host=db password=sec/ret#x? user=u", "host=db password=*** user=u"),
        ("host=db password='my secret' user=u", "host=db password=*** user=u"),
        ("postgresql://u@h/db?password=a%2Fb%40c&sslmode=require",
         "postgresql://u@h/db?password=***&sslmode=require"),
        ("mssql://h/db;PWD=se#c?r@t;UID=u", "mssql://h/db;PWD=***;UID=u"),
        ("postgresql://u:***@h/db", "postgresql://u:***@h/db"),
        ("mail me at a@b.com, see http://h/x@y", "mail me at a@b.com, see http://h/x@y"),
    ],
)  # fmt: skip
def test_password_pairs_and_harmless_text(text, expected) -> None:
    assert scrub(text) == expected


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "s.toml").write_text(STUDY.format(name="s"))
    url = f"sqlite:///{home / 'optuna.db'}"
    env = {"LRSEARCH_HOME": str(home), "LRSEARCH_STORAGE": url}
    result = _invoke(["run", home / "s.toml", "--devices", "cpu", "--no-tracking"], env)
    assert result.exit_code == 0, result.output
    return home, url


@pytest.mark.parametrize("password", ["a/b#c?d@e f:g", quote("a/b#c?d@e f:g", safe="")])
def test_the_parent_run_records_no_password(finished, tmp_path, password) -> None:
    """The parent run's params (``storage``, the config's tracking URI) and tags
    (``lrsearch.storage``) as ``lrsearch run`` writes them, for a storage URL with a password,
    in a real MLflow store; then every byte of that store is searched."""
    _home, url = finished
    handle = load_study("s", url, allow_workloads=("tests.*",))
    handle.storage_url = f"postgresql://optuna:{password}@db.example:5432/studies"
    tracking = f"https://me:{password}@mlflow.example"
    handle.config = handle.config.model_copy(
        update={"tracking": handle.config.tracking.model_copy(update={"uri": tracking})}
    )
    store = tmp_path / "mlflow"
    recorder = open_recorder(handle, MlflowTracker(local_tracking_uri(store)[0]), log_parent=True)
    recorder.tracker.flush()
    run = MlflowClient(local_tracking_uri(store)[0]).get_run(handle.parent_run_id)
    assert run.data.params["storage"] == "postgresql://optuna:***@db.example:5432/studies"
    assert run.data.tags["lrsearch.storage"] == run.data.params["storage"]
    assert run.data.params["tracking.uri"] == "https://me:***@mlflow.example"
    everything = json.dumps([run.data.params, run.data.tags], default=str)
    assert not _leaks(everything, password)
    for path in (p for p in store.rglob("*") if p.is_file()):
        data = path.read_bytes().decode("utf-8", "replace")
        assert not _leaks(data, password), path


def test_cli_errors_and_status_show_no_password(finished) -> None:
    home, url = finished
    password = "a/b#c?d@e f:g"
    query = f"{url}?password={quote(password, safe='')}"  # raw, a space would end the value
    for storage in (f"postgresql://optuna:{password}@127.0.0.1:1/x", query):
        env = {"LRSEARCH_HOME": str(home), "LRSEARCH_STORAGE": storage}
        result = _invoke(["status", "--study", "s", "--json"], env)
        assert "***" in result.output and not _leaks(result.output, password), result.output
