"""``lrsearch ui`` pages and browser opening, and ``lrsearch status`` in 80 columns, no study run.

The commands on a real study are in test_cli_study.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import webbrowser

import pytest
from click.testing import CliRunner

from lrsearch.cli import cli
from lrsearch.cli._tables import print_status
from lrsearch.errors import TrackingError
from lrsearch.tracking import MlflowTracker, ui_server
from lrsearch.tracking._mlflow import EXPERIMENT_KIND_TAG, ML_EXPERIMENT_KIND

RUNS_VIEW = "?workflowType=machine_learning"


def _invoke(*args: str, env=None):
    return CliRunner().invoke(cli, list(args), obj={}, env=env)


def test_runs_and_list_urls() -> None:
    assert ui_server.ui_url("http://h:1", "7") == f"http://h:1/#/experiments/7/runs{RUNS_VIEW}"
    assert ui_server.ui_url("http://h:1") == f"http://h:1/#/experiments{RUNS_VIEW}"


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
    assert ui_server.local_base(host, 5000) == base


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


def test_no_browser_is_not_an_error(monkeypatch) -> None:
    def broken(url, new=0):
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "open", broken)
    assert ui_server.open_browser("http://127.0.0.1:9/") is False


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
    monkeypatch.setattr(ui_server.sys, "platform", "linux")
    monkeypatch.setattr(ui_server.sys, "stdout", _Stdout(tty))
    assert ui_server.wants_browser(choice, note=lambda line: None) is wanted


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


# --- the server: a real process tree standing in for `mlflow server` ------------------------

SERVER = """
import http.server, os, subprocess, sys, time
port, pids = int(sys.argv[1]), sys.argv[2]
children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"]) for _ in range(2)]
with open(pids, "w") as f:
    f.write(" ".join(str(p) for p in [os.getpid(), *(c.pid for c in children)]))
print("DeprecationWarning: a warning block the terminal must not see", file=sys.stderr, flush=True)
if len(sys.argv) > 3:
    print("Error: " + sys.argv[3], file=sys.stderr, flush=True)
    sys.exit(1)
time.sleep(1)  # answers a moment after it started, as mlflow does
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited: its parent has not reaped it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_busy_port_is_one_line_and_starts_nothing(tmp_path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _invoke("ui", "--tracking-uri", str(tmp_path), "--port", str(port), "--no-open")
    out = result.output.strip()
    assert result.exit_code != 0
    assert out.splitlines() == [out] and out.startswith("error: --port: ")
    assert f"port {port} on 127.0.0.1 is already in use" in out
    assert not (tmp_path / "mlflow.db").exists()


def test_a_failed_start_is_one_line_naming_the_log(tmp_path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port, log = _free_port(), tmp_path / "ui.log"
    said: list[str] = []
    command = [sys.executable, str(script), str(port), str(tmp_path / "pids"), "no such store"]
    with pytest.raises(TrackingError) as raised:
        ui_server.serve(
            command, "URL", health=f"http://127.0.0.1:{port}/health", log=log, say=said.append
        )
    message = str(raised.value)
    assert "\n" not in message and "exited with code 1 before answering" in message
    assert "Error: no such store" in message and str(log) in message
    assert said == [f"MLflow UI: starting the server (log: {log}) ..."]  # no URL: it never answered


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_the_url_comes_once_the_server_answers_and_a_stop_ends_every_process(
    tmp_path, stop
) -> None:
    script, pids = tmp_path / "server.py", tmp_path / "pids"
    script.write_text(SERVER)
    port = _free_port()
    runner = (
        # Python's own Ctrl-C handler: a test run started as a background job inherits SIGINT
        # as ignored, and `lrsearch ui` would never see the Ctrl-C this test sends
        "import pathlib, signal, sys\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "from lrsearch.tracking import ui_server\n"
        f"ui_server.serve([sys.executable, {str(script)!r}, '{port}', {str(pids)!r}], 'THE-URL', "
        f"health='http://127.0.0.1:{port}/health', log=pathlib.Path({str(tmp_path / 'ui.log')!r}), "
        "say=lambda line: print(line, flush=True), on_up=lambda: print('opened', flush=True))\n"
    )
    ui = subprocess.Popen(
        [sys.executable, "-c", runner], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert ui.stdout is not None
        first = ui.stdout.readline()
        assert first.startswith("MLflow UI: starting the server"), first
        assert ui.stdout.readline() == "MLflow UI: THE-URL  (Ctrl-C to stop)\n"
        assert ui.stdout.readline() == "opened\n"
        assert ui_server.answers(f"http://127.0.0.1:{port}/health")
        server = [int(p) for p in pids.read_text().split()]
        assert all(_alive(pid) for pid in server)
        ui.send_signal(stop)
        out, err = ui.communicate(timeout=60)
    finally:
        ui.kill()
        ui.communicate()  # reaped and its pipes closed, whatever happened
    assert ui.returncode == 0, err
    assert "MLflow UI: stopped" in out and "Warning" not in out + err
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in server)  # the server and both its children
    assert not ui_server.answers(f"http://127.0.0.1:{port}/health")


def test_the_runs_view_orders_by_the_metric_and_shows_the_parameters() -> None:
    view = ui_server.runs_view("val_accuracy", maximize=True, params=["max_lr", "weight_decay"])
    assert view == {
        "orderByKey": "metrics.`val_accuracy`",
        "orderByAsc": False,
        "selectedColumns": [
            "metrics.`val_accuracy`",
            "tags.`lrsearch.state`",
            "params.`max_lr`",
            "params.`weight_decay`",
        ],
    }
    url = ui_server.ui_url("http://h:1", "7", view="lrsearch")
    assert (
        url
        == "http://h:1/#/experiments/7/runs?viewStateShareKey=lrsearch&workflowType=machine_learning"
    )


def test_the_view_is_stored_on_the_study_experiment(tmp_path) -> None:
    tracker = MlflowTracker(str(tmp_path))
    tracker.start_study("s", params={}, tags={})
    view = ui_server.runs_view("val_loss", maximize=False, params=["max_lr"])
    experiment_id, key = ui_server.study_experiment(str(tmp_path), "s", view=view, note=print)
    assert key == ui_server.VIEW_KEY and experiment_id == tracker.experiment_id("s")
    tags = tracker._client.get_experiment(experiment_id).tags
    assert json.loads(tags[ui_server.VIEW_TAG + key]) == view
    assert tags[EXPERIMENT_KIND_TAG] == ML_EXPERIMENT_KIND


@pytest.mark.slow
@pytest.mark.process
def test_lrsearch_ui_on_a_real_mlflow_server(tmp_path) -> None:
    """The whole command: a starting line, the page once MLflow answers, SIGTERM stops it all."""
    port = _free_port()
    command = [sys.executable, "-m", "lrsearch.cli", "ui", "--tracking-uri", str(tmp_path)]
    command += ["--port", str(port), "--no-open"]
    env = {**os.environ, "LRSEARCH_HOME": str(tmp_path / "home")}
    ui = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert ui.stderr is not None
        assert ui.stderr.readline().startswith("MLflow UI: starting the server")
        line = ui.stderr.readline()  # minutes on a busy machine: mlflow starts four workers
        assert (
            line
            == f"MLflow UI: http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning  (Ctrl-C to stop)\n"
        )
        # it answered; on a busy machine uvicorn may be restarting a worker just now
        health = f"http://127.0.0.1:{port}/health"
        assert any(ui_server.answers(health, timeout_s=10) for _ in range(3))
        leader = _pgrep("-f", f"mlflow server .*--port {port}")
        assert len(leader) == 1
        group = _pgrep("-g", str(leader[0]))  # mlflow, uvicorn and its workers
        assert len(group) >= 3
        ui.send_signal(signal.SIGTERM)
        _, err = ui.communicate(timeout=60)
    finally:
        if ui.poll() is None:  # a failed check: still stop it the way a user would
            ui.send_signal(signal.SIGTERM)
            try:
                ui.wait(timeout=60)
            except subprocess.TimeoutExpired:
                ui.kill()
    assert ui.returncode == 0 and "Warning" not in err, err
    assert not ui_server.answers(f"http://127.0.0.1:{port}/health")
    assert not [pid for pid in group if _alive(pid)]
    assert "Uvicorn running" in (tmp_path / "home" / "logs" / f"mlflow-ui-{port}.log").read_text()


def _pgrep(*args: str) -> list[int]:
    done = subprocess.run(["pgrep", *args], capture_output=True, text=True, check=False)
    return [int(pid) for pid in done.stdout.split()]
