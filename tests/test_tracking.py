"""lrsearch.tracking: one contract over MemoryTracker and a real MLflow (SQLite) store."""

from __future__ import annotations

import http.server
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lrsearch.errors import TrackingError
from lrsearch.tracking import (
    MemoryTracker,
    MlflowTracker,
    Tracker,
    TrialRun,
    local_tracking_uri,
    log_range_test,
    redact_url,
    scrub,
)

SECRET = "hunter2"
Tracked = tuple[Tracker, Any]  # a tracker and a view that reads back what it stored


# -- stores ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _template_db(mlflow_db_template: Path) -> Path:
    # Creating MLflow's schema takes seconds; every test gets a copy of one fresh database.
    return mlflow_db_template


@pytest.fixture
def store(tmp_path: Path, _template_db: Path) -> Path:
    """A private, real MLflow store: ``store/mlflow.db`` and ``store/artifacts/``."""
    root = tmp_path / "store"
    root.mkdir()
    shutil.copy(_template_db, root / "mlflow.db")
    return root


def _client(root: Path) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(local_tracking_uri(root)[0])


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``mlflow server`` (SQLite, proxied artifacts); it takes ~30 s to come up."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _closed_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root}/mlflow.db",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:  # URLError included
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("mlflow server did not come up")
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the server and the uvicorn workers it started
        server.wait(timeout=30)


class MemoryView:
    """Reads back what a MemoryTracker stored."""

    def __init__(self, tracker: MemoryTracker) -> None:
        self.tracker = tracker

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return self.tracker.runs[run_id].metrics.get(key, [])

    def run(self, run_id: str) -> tuple[str, dict[str, str], dict[str, str]]:
        run = self.tracker.runs[run_id]
        return run.status, run.params, run.tags

    def artifact(self, run_id: str, name: str) -> bytes:
        data = self.tracker.runs[run_id].artifacts[name]
        return data.encode() if isinstance(data, str) else data


class MlflowView:
    """Reads back through a separate MlflowClient, straight from the store."""

    def __init__(self, tracking_uri: str, scratch: Path) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.scratch = scratch

    def history(self, run_id: str, key: str) -> list[tuple[int, float]]:
        return [(m.step, m.value) for m in self.client.get_metric_history(run_id, key)]

    def run(self, run_id: str) -> tuple[str, dict[str, str], dict[str, str]]:
        run = self.client.get_run(run_id)
        return run.info.status, run.data.params, run.data.tags

    def artifact(self, run_id: str, name: str) -> bytes:
        dst = self.scratch / uuid.uuid4().hex
        dst.mkdir()
        return Path(self.client.download_artifacts(run_id, name, str(dst))).read_bytes()


@pytest.fixture(params=["memory", "sqlite", pytest.param("server", marks=pytest.mark.slow)])
def tracked(request: pytest.FixtureRequest, tmp_path: Path) -> Tracked:
    """A tracker and a view that reads back what it stored, for each kind of store."""
    if request.param == "memory":
        memory = MemoryTracker()
        return memory, MemoryView(memory)
    if request.param == "sqlite":
        uri = local_tracking_uri(request.getfixturevalue("store"))[0]
    else:
        uri = request.getfixturevalue("mlflow_server")
    return MlflowTracker(uri), MlflowView(uri, tmp_path)


@pytest.fixture
def study() -> str:
    # Unique, because the server-backed store is shared by the whole session.
    return f"study-{uuid.uuid4().hex[:8]}"


# -- the contract --------------------------------------------------------------------------------


class TestTrackerContract:
    def test_start_study_reuses_its_parent_run(self, tracked: Tracked, study: str) -> None:
        tracker, view = tracked
        first = tracker.start_study(study, params={"n_trials": 8}, tags={"owner": "ana"})
        tracker.end_run(first, "FINISHED")
        again = tracker.start_study(study, params={"n_trials": 16, "seed": 1}, tags={})
        assert again == first
        status, params, tags = view.run(first)
        assert status == "RUNNING"
        assert params == {"n_trials": "8", "seed": "1"}  # params are write-once
        assert tags["lrsearch.resumed.n_trials"] == "16"
        assert tags["lrsearch.role"] == "study" and tags["lrsearch.study"] == study
        assert tags["owner"] == "ana"
        assert tracker.start_study(f"{study}-2", params={}, tags={}) != first

    def test_trial_runs_nest_under_the_parent(self, tracked: Tracked, study: str) -> None:
        tracker, view = tracked
        parent = tracker.start_study(study, params={}, tags={})
        trial = tracker.start_trial(
            parent, 3, params={"max_lr": 0.1, "warmup": 0.3}, tags={"sampler": "tpe"}
        )
        trial.log_params({"max_lr": 0.1})  # the same value again is fine
        trial.set_tags({"state": "COMPLETE"})
        trial.end("FINISHED")
        status, params, tags = view.run(trial.run_id)
        assert status == "FINISHED"
        assert params == {"max_lr": "0.1", "warmup": "0.3"}
        assert tags["mlflow.parentRunId"] == parent
        assert tags["mlflow.runName"] == "trial-3"
        assert tags["lrsearch.trial"] == "3" and tags["lrsearch.study"] == study
        assert tags["sampler"] == "tpe" and tags["state"] == "COMPLETE"

    def test_changing_a_param_is_refused(self, tracked: Tracked, study: str) -> None:
        tracker, _ = tracked
        parent = tracker.start_study(study, params={}, tags={})
        trial = tracker.start_trial(parent, 0, params={"max_lr": 0.1}, tags={})
        with pytest.raises(TrackingError, match="max_lr"):
            trial.log_params({"max_lr": 0.2})

    def test_every_step_point_is_stored_in_order(self, tracked: Tracked, study: str) -> None:
        tracker, view = tracked
        parent = tracker.start_study(study, params={}, tags={})
        trial = tracker.start_trial(parent, 0, params={}, tags={})
        n = 2_500
        for step in range(n):
            trial.log_step(step, lr=1e-4 * (step + 1))
        trial.log_epoch(n - 1, val_loss=0.5)
        trial.end("FINISHED")
        assert view.history(trial.run_id, "lr") == [(s, 1e-4 * (s + 1)) for s in range(n)]
        assert view.history(trial.run_id, "val_loss") == [(n - 1, 0.5)]
        assert trial.points_logged == tracker.points_logged == n + 1

    def test_epoch_metrics_go_out_once_the_last_send_is_old(
        self, tracked: Tracked, study: str
    ) -> None:
        tracker, view = tracked
        tracker.flush_seconds = 0.0  # every epoch's end is old enough
        trial = tracker.start_trial(
            tracker.start_study(study, params={}, tags={}), 0, params={}, tags={}
        )
        trial.log_step(0, lr=0.1, train_loss=2.0)
        assert view.history(trial.run_id, "lr") == []  # still buffered
        trial.log_epoch(0, val_acc=0.25)  # handed to the sender thread now
        trial._collect(block=True)  # wait for it, without sending anything new
        assert view.history(trial.run_id, "lr") == [(0, 0.1)]
        assert view.history(trial.run_id, "val_acc") == [(0, 0.25)]
        trial.log_step(1, lr=0.2)
        tracker.flush()
        assert view.history(trial.run_id, "lr") == [(0, 0.1), (1, 0.2)]

    def test_epoch_metrics_of_a_short_trial_travel_with_its_steps(
        self, tracked: Tracked, study: str
    ) -> None:
        tracker, view = tracked
        tracker.flush_seconds = 3600.0
        trial = tracker.start_trial(
            tracker.start_study(study, params={}, tags={}), 0, params={}, tags={}
        )
        for epoch in range(3):
            trial.log_step(epoch, lr=0.1)
            trial.log_epoch(epoch, val_acc=0.5)
        trial._collect(block=True)
        assert view.history(trial.run_id, "val_acc") == []  # nothing sent yet: one batch at the end
        trial.end("FINISHED")
        assert view.history(trial.run_id, "val_acc") == [(0, 0.5), (1, 0.5), (2, 0.5)]
        assert view.history(trial.run_id, "lr") == [(0, 0.1), (1, 0.1), (2, 0.1)]

    def test_non_finite_values_are_kept(self, tracked: Tracked, study: str) -> None:
        tracker, view = tracked
        trial = tracker.start_trial(
            tracker.start_study(study, params={}, tags={}), 0, params={}, tags={}
        )
        trial.log_step(0, train_loss=math.nan)
        trial.log_step(1, train_loss=math.inf)
        trial.end("FAILED")
        (_, nan), (_, inf) = view.history(trial.run_id, "train_loss")
        assert math.isnan(nan)
        assert inf == sys.float_info.max  # SQL stores clamp inf; MemoryTracker does the same

    def test_end_status_is_truthful(self, tracked: Tracked, study: str) -> None:
        tracker, view = tracked
        parent = tracker.start_study(study, params={}, tags={})
        runs: list[TrialRun] = []
        for number, status in enumerate(["FINISHED", "FAILED", "KILLED"]):
            run = tracker.start_trial(parent, number, params={}, tags={})
            run.log_step(0, lr=0.1)
            run.end(status, tags={"lrsearch.state": status.lower()})
            runs.append(run)
        runs[0].end("FAILED")  # already ended: ignored
        with pytest.raises(RuntimeError, match="has ended"):
            runs[0].log_step(1, lr=0.1)
        with pytest.raises(ValueError, match="status must be one of"):
            tracker.end_run(parent, "DONE")  # type: ignore[arg-type]
        with (
            pytest.raises(ZeroDivisionError),
            tracker.start_trial(parent, 3, params={}, tags={}) as crashing,
        ):
            crashing.log_step(0, lr=0.1)
            _ = 1 / 0
        statuses = [view.run(r.run_id)[0] for r in [*runs, crashing]]
        assert statuses == ["FINISHED", "FAILED", "KILLED", "FAILED"]
        assert view.history(crashing.run_id, "lr") == [(0, 0.1)]  # flushed before ending
        assert view.run(runs[1].run_id)[2]["lrsearch.state"] == "failed"

    def test_find_trial_runs(self, tracked: Tracked, study: str) -> None:
        tracker, _ = tracked
        assert tracker.find_trial_runs(f"{study}-none") == []
        parent = tracker.start_study(study, params={}, tags={})
        for number in (2, 0, 1):
            run = tracker.start_trial(parent, number, params={}, tags={})
            if number != 1:
                run.end("FINISHED" if number == 0 else "FAILED")
        found = tracker.find_trial_runs(study)
        assert [(r.trial_number, r.status) for r in found] == [
            (0, "FINISHED"),
            (1, "RUNNING"),
            (2, "FAILED"),
        ]
        assert tracker.find_trial_runs(f"{study}-other") == []

    def test_artifacts(self, tracked: Tracked, study: str, tmp_path: Path) -> None:
        tracker, view = tracked
        trial = tracker.start_trial(
            tracker.start_study(study, params={}, tags={}), 0, params={}, tags={}
        )
        trial.log_text("schedule.json", '{"storage": "postgresql://u:hunter2@h/db"}')
        path = tmp_path / "curve.png"
        path.write_bytes(b"\x89PNG fake")
        trial.log_file(path)
        tracker.log_artifact_text(trial.run_id, "notes.txt", "hi", artifact_path="extra")
        assert (
            view.artifact(trial.run_id, "schedule.json")
            == b'{"storage": "postgresql://u:***@h/db"}'
        )
        assert view.artifact(trial.run_id, "curve.png") == b"\x89PNG fake"
        assert view.artifact(trial.run_id, "extra/notes.txt") == b"hi"
        with pytest.raises(FileNotFoundError):
            trial.log_file(tmp_path / "missing.png")

    def test_log_metrics_and_many_params(self, tracked: Tracked, study: str) -> None:
        tracker, view = tracked
        parent = tracker.start_study(study, params={f"p{i}": i for i in range(250)}, tags={})
        tracker.log_metrics(parent, {"best_val": 0.9}, step=7)
        assert view.history(parent, "best_val") == [(7, 0.9)]
        assert len(view.run(parent)[1]) == 250  # more than one batch of 100 params


# -- batching against the real client -------------------------------------------------------------


def test_step_metrics_go_out_in_batches_never_one_by_one(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process, to spy on the client; the writer process runs the same _write_here
    # (tests/test_tracking_writer.py)
    tracker = MlflowTracker(local_tracking_uri(store)[0], writer=False)
    client = tracker._client
    sizes: list[int] = []
    real_log_batch = client.log_batch

    def spy_log_batch(run_id: str, metrics: Any = (), **kwargs: Any) -> Any:
        if metrics:
            sizes.append(len(metrics))
        return real_log_batch(run_id, metrics=metrics, **kwargs)

    def no_single_metrics(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("log_metric must not be used for step metrics")

    monkeypatch.setattr(client, "log_batch", spy_log_batch)
    monkeypatch.setattr(client, "log_metric", no_single_metrics)
    trial = tracker.start_trial(tracker.start_study("s", params={}, tags={}), 0, params={}, tags={})
    for step in range(1_200):  # two values per step: 2,400 points
        trial.log_step(step, lr=0.1, momentum=0.9)
    trial.end("FINISHED")
    assert sizes == [1000, 1000, 400]
    assert trial.points_logged == 2_400
    assert len(_client(store).get_metric_history(trial.run_id, "momentum")) == 1_200


def test_flush_every_sets_the_batch_size() -> None:
    tracker = MemoryTracker(flush_every=300)
    trial = tracker.start_trial(tracker.start_study("s", params={}, tags={}), 0, params={}, tags={})
    for step in range(1_000):
        trial.log_step(step, lr=0.1)
    trial.end("FINISHED")
    assert tracker.metric_batches == 4  # 300, 300, 300, then 100 at the end
    assert len(tracker.runs[trial.run_id].metrics["lr"]) == 1_000
    with pytest.raises(ValueError, match="flush_every"):
        MemoryTracker(flush_every=0)


# -- secrets ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        ("postgresql+psycopg2://u:p@db:5432/optuna", "postgresql+psycopg2://u:***@db:5432/optuna"),
        ("mysql://root:pw@127.0.0.1/x?charset=utf8", "mysql://root:***@127.0.0.1/x?charset=utf8"),
        ("http://user:pw@mlflow:5000", "http://user:***@mlflow:5000"),
        ("https://u:p%40ss@h/x", "https://u:***@h/x"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
        ("http://127.0.0.1:5000/api", "http://127.0.0.1:5000/api"),
        ("postgresql://u:***@h/db", "postgresql://u:***@h/db"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_scrub_finds_urls_and_passwords_inside_text() -> None:
    text = "storage=postgresql://a:b1@h/d, mlflow http://c:d2@m:5000 dsn 'host=h password=e3'"
    assert scrub(text) == (
        "storage=postgresql://a:***@h/d, mlflow http://c:***@m:5000 dsn 'host=h password=***'"
    )


def test_no_secret_reaches_the_store(store: Path) -> None:
    tracker = MlflowTracker(local_tracking_uri(store)[0])
    url = f"postgresql://u:{SECRET}@h/db"
    parent = tracker.start_study(
        "s", params={"storage": url, "nested": {"url": url}}, tags={"storage": url}
    )
    trial = tracker.start_trial(parent, 0, params={"storage": url}, tags={"note": f"see {url}"})
    trial.log_text("config.toml", f'storage = "{url}"\n')
    trial.end("FINISHED", tags={"why": url})
    del tracker
    leaked = [p for p in store.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    assert _client(store).get_run(parent).data.params["storage"] == "postgresql://u:***@h/db"


# -- unusable stores -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https", "postgresql+psycopg2", "mysql"])
def test_unreachable_store_fails_fast_with_one_line(scheme: str) -> None:
    uri = f"{scheme}://admin:{SECRET}@127.0.0.1:{_closed_port()}"
    started = time.perf_counter()
    with pytest.raises(TrackingError) as info:
        MlflowTracker(uri if scheme.startswith("http") else f"{uri}/db")
    assert time.perf_counter() - started < 5
    message = str(info.value)
    assert "\n" not in message and SECRET not in message
    assert f"{scheme}://admin:***@127.0.0.1:" in message
    assert "is unreachable (Connection refused)" in message and "--no-tracking" in message
    assert info.value.exit_code == 5


def test_any_http_answer_counts_as_reachable() -> None:
    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            tracker = MlflowTracker(f"http://127.0.0.1:{server.server_address[1]}")
        finally:
            server.shutdown()
            thread.join()
    assert repr(tracker).startswith("MlflowTracker('http://127.0.0.1:")


def test_the_retired_file_store_is_refused_with_a_way_out(tmp_path: Path) -> None:
    with pytest.raises(TrackingError, match="retired file store; pass the directory itself"):
        MlflowTracker(tmp_path.as_uri())


def test_unusable_local_store_is_a_tracking_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(TrackingError, match="opening the store failed"):
        MlflowTracker(f"sqlite:///{tmp_path}/a-file/sub/mlflow.db")


def test_a_plain_directory_is_the_embedded_store(store: Path) -> None:
    tracker = MlflowTracker(str(store))
    assert tracker.tracking_uri == f"sqlite:///{store.resolve()}/mlflow.db"
    run = tracker.start_trial(
        tracker.start_study("my study", params={}, tags={}), 0, params={}, tags={}
    )
    run.log_text("a.txt", "x")
    run.end("FINISHED")
    assert (store / "artifacts" / "my_study" / run.run_id / "artifacts" / "a.txt").is_file()
    assert not Path("mlruns").exists()  # nothing written beside the caller


def test_tracking_imports_neither_optuna_nor_torch_nor_eager_mlflow() -> None:
    code = (
        "import sys, lrsearch.tracking as t; t.MemoryTracker(); "
        "print(sorted({'optuna', 'torch', 'mlflow'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- range tests -----------------------------------------------------------------------------------


def _fake_range_test() -> SimpleNamespace:
    curves = [
        SimpleNamespace(
            lrs=[1e-4, 1e-3, 1e-2, 1e-1],
            losses=[2.3, 2.0, 1.5, math.inf],
            smoothed=[2.3, 2.2, 1.9, 9.0],
        ),
        SimpleNamespace(lrs=[1e-4, 1e-3, 1e-2], losses=[2.3, 2.1, 1.4], smoothed=[2.3, 2.2, 1.9]),
    ]
    prior = {"center": 0.01, "sigma_decades": 0.3, "low": 1e-4, "high": 0.1}
    return SimpleNamespace(
        curves=curves,
        summary={
            "valley": SimpleNamespace(median=0.01, spread_decades=0.1),
            "steepest": SimpleNamespace(median=0.003),
        },
        prior=SimpleNamespace(to_dict=lambda: prior),
        settings={"start_lr": 1e-4, "end_lr": 10.0, "repeats": 2, "momentum": None},
    )


def test_log_range_test(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "range-test"
    out.mkdir()
    (out / "range_test.json").write_text('{"prior": {}}')
    (out / "range_test.csv").write_text("repeat,step,lr,loss,smoothed\n")
    (out / "range_test.png").write_bytes(b"\x89PNG fake")
    uri = local_tracking_uri(store)[0]
    run_id = log_range_test(_fake_range_test(), out, tracking_uri=uri, workload="digits-mlp")
    client = _client(store)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "lrsearch-range-tests"
    assert run.data.tags["mlflow.runName"] == "range-test-digits-mlp"
    assert run.data.params["workload"] == "digits-mlp"
    assert run.data.params["end_lr"] == "10.0" and run.data.params["momentum"] == "None"
    assert '"center": 0.01' in run.data.params["prior"]
    loss_r0 = [m.value for m in client.get_metric_history(run_id, "loss_r0")]
    assert loss_r0[:3] == [2.3, 2.0, 1.5] and loss_r0[3] == sys.float_info.max
    assert [m.step for m in client.get_metric_history(run_id, "lr_r1")] == [0, 1, 2]
    assert len(client.get_metric_history(run_id, "smoothed_loss_r1")) == 3
    assert run.data.metrics["valley_median"] == 0.01
    assert run.data.metrics["valley_spread_decades"] == 0.1
    assert "steepest_spread_decades" not in run.data.metrics
    assert run.data.metrics["prior_center"] == 0.01
    names = {a.path for a in client.list_artifacts(run_id)}
    assert names == {"range_test.json", "range_test.csv", "range_test.png"}


def test_a_store_left_half_migrated_opens_again(tmp_path: Path) -> None:
    """A process killed inside MLflow's first migration left ``_alembic_tmp_runs`` behind;
    every later open failed with "table _alembic_tmp_runs already exists" until repaired."""
    import sqlite3

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as conn:  # what the killed migration left: the copy, no schema
        conn.execute("CREATE TABLE _alembic_tmp_runs (run_uuid VARCHAR(32))")
    tracker = MlflowTracker(f"sqlite:///{db}")
    tracker.start_run("s", run_name="r", params={"max_lr": 0.1}, tags={}).end("FINISHED")
    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "_alembic_tmp_runs" not in tables and "runs" in tables
    from mlflow import MlflowClient

    runs = MlflowClient(f"sqlite:///{db}").search_runs([tracker.experiment_id("s")])
    assert [r.info.status for r in runs] == ["FINISHED"]


def test_a_leftover_copy_whose_original_is_gone_takes_its_name_back(tmp_path: Path) -> None:
    import sqlite3

    from lrsearch.tracking._mlflow import repair_interrupted_migration

    db = tmp_path / "x.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE _alembic_tmp_runs (run_uuid TEXT)")
        conn.execute("INSERT INTO _alembic_tmp_runs VALUES ('kept')")
    error = RuntimeError("(sqlite3.OperationalError) table _alembic_tmp_runs already exists")
    assert repair_interrupted_migration(f"sqlite:///{db}", error)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT run_uuid FROM runs").fetchall() == [("kept",)]
    assert not repair_interrupted_migration(f"sqlite:///{db}", RuntimeError("disk full"))
