"""``lrsearch ui`` pages and browser opening, and ``lrsearch status`` in 80 columns, no study run.

The commands on a real study are in test_cli_study.py.
"""

from __future__ import annotations

import http.server
import threading
import webbrowser

import pytest
from click.testing import CliRunner

from lrsearch.cli import _study, cli
from lrsearch.cli._study import mlflow_ui_url
from lrsearch.cli._tables import print_status
from lrsearch.tracking import MlflowTracker
from lrsearch.tracking._mlflow import EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND

RUNS_VIEW = "?workflowType=machine_learning"


def _invoke(*args: str, env=None):
    return CliRunner().invoke(cli, list(args), obj={}, env=env)


def test_runs_and_list_urls() -> None:
    assert mlflow_ui_url("http://h:1", "7") == f"http://h:1/#/experiments/7/runs{RUNS_VIEW}"
    assert mlflow_ui_url("http://h:1") == f"http://h:1/#/experiments{RUNS_VIEW}"


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("127.0.0.1", "http://127.0.0.1:5000"),
        ("0.0.0.0", "http://127.0.0.1:5000"),
        ("::", "http://[::1]:5000"),
        ("box.lan", "http://box.lan:5000"),
    ],
)
def test_the_page_is_where_a_local_browser_reaches_the_server(host, base) -> None:
    assert _study._local_base(host, 5000) == base


def test_a_tracking_server_serves_the_page_itself(tmp_path) -> None:
    # Port 9 refuses at once: the lookup fails with a note, the list page is still printed.
    uri = "http://user:secret@127.0.0.1:9/mlflow/"
    result = _invoke("ui", "--tracking-uri", uri, "--study", "s", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "no server to start" in result.output
    assert f"http://127.0.0.1:9/mlflow/#/experiments{RUNS_VIEW}" in result.output
    assert "secret" not in result.output


def test_dry_run_on_an_empty_directory_creates_no_store(tmp_path) -> None:
    result = _invoke("ui", "--tracking-uri", str(tmp_path), "--study", "s", "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"#/experiments{RUNS_VIEW}" in result.output
    assert "no MLflow experiment 's'" in result.output
    assert not (tmp_path / "mlflow.db").exists()


def test_experiment_id_and_the_machine_learning_kind(tmp_path) -> None:
    tracker = MlflowTracker(str(tmp_path))
    assert tracker.experiment_id("s") is None
    tracker.start_study("s", params={}, tags={})
    experiment_id = tracker.experiment_id("s")
    assert experiment_id is not None
    assert tracker.mark_machine_learning(experiment_id) is True
    assert tracker.mark_machine_learning(experiment_id) is False
    tags = tracker._client.get_experiment(experiment_id).tags
    assert tags[EXPERIMENT_KIND_TAG] == ML_EXPERIMENT_KIND

    tracker.start_study("genai", params={}, tags={})
    chosen = tracker.experiment_id("genai")
    assert chosen is not None
    tracker._client.set_experiment_tag(chosen, EXPERIMENT_KIND_TAG, "genai_development")
    assert tracker.mark_machine_learning(chosen) is False  # someone's choice stays
    assert tracker._client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


@pytest.fixture
def opened(monkeypatch) -> list[str]:
    urls: list[str] = []
    monkeypatch.setattr(webbrowser, "open", lambda url, new=0: urls.append(url) or True)
    return urls


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_the_page_opens_once_the_server_answers(opened) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        _study._open_when_up(f"{base}/#/x", f"{base}/health", threading.Event(), timeout_s=30)
        server.shutdown()
    assert opened == [f"{base}/#/x"]


def test_no_page_opens_after_the_server_ended(opened) -> None:
    stop = threading.Event()
    stop.set()
    _study._open_when_up("http://127.0.0.1:9/#/x", "http://127.0.0.1:9/health", stop)
    assert opened == []


def test_no_browser_is_not_an_error(monkeypatch) -> None:
    def broken(url, new=0):
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    assert _study._open_browser("http://127.0.0.1:9/") is False


class _Stdout:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(
    ("choice", "env", "tty", "wanted"),
    [
        (False, {"BROWSER": "firefox"}, True, False),
        (True, {}, True, False),  # no desktop: text browsers would take over the terminal
        (True, {"DISPLAY": ":0"}, False, True),
        (True, {"BROWSER": "code-helper"}, False, True),
        (None, {"DISPLAY": ":0"}, False, False),  # piped or captured
        (None, {"WAYLAND_DISPLAY": "wayland-0"}, True, True),
        (None, {}, True, False),
    ],
)
def test_when_a_browser_is_opened(monkeypatch, choice, env, tty, wanted) -> None:
    for name in ("BROWSER", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(_study.sys, "platform", "linux")
    monkeypatch.setattr(_study.sys, "stdout", _Stdout(tty))
    assert _study._wants_browser(choice) is wanted


def _summary(name: str) -> dict:
    return {
        "study": name,
        "metric": "val_loss",
        "direction": "minimize",
        "trials": {"COMPLETE": 1234, "PRUNED": 567, "FAIL": 89, "RUNNING": 16},
        "diverged": 45,
        "n_trials_target": 2000,
        "best": {
            "number": 1999,
            "value": 0.000123456,
            "params": {"policy": "one_cycle", "max_lr": 0.0123, "weight_decay": 1.5e-5},
        },
        "running": [{"number": n, "last_step": 10 * n} for n in range(1990, 2006)],
    }


@pytest.mark.parametrize("width", [80, 60])
def test_status_table_fits_without_cutting(capsys, width) -> None:
    name = "a-study-name-long-enough-to-not-fit-in-the-table-column"
    print_status([_summary(name), _summary("short")], width=width)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in out and "..." not in out
    assert {name, "short"} <= {line.strip() for line in lines}
    assert "0.0001235" in out and "1.5e-05" in out and "20050" in out
