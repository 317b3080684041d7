"""Storage outages ridden out: a private PostgreSQL stopped mid-study, a storage proxy SIGKILLed.

Each test stops its storage for a while under real worker processes and checks what an
operator would: every command exits 0 without a traceback, the study holds exactly its
``n_trials`` finished trials, none failed (nothing lost, nothing trained twice), nothing is
RUNNING in Optuna or MLflow, and the outage was said in one line.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.tracking import local_tracking_uri
from tests.private_pg import PrivateCluster, free_port, private_pg  # noqa: F401 (the fixture)
from tests.test_distributed import ROOT, _env, _study_file, _trial_runs

pytestmark = pytest.mark.postgres

N_TRIALS = 6
OUTAGE_S = 10.0  # long enough that every process meets it (an epoch takes well under 1 s)


@pytest.fixture
def procs() -> Iterator[dict[str, subprocess.Popen[str]]]:
    """The test's lrsearch processes by name; any still running at the end is killed."""
    started: dict[str, subprocess.Popen[str]] = {}
    yield started
    for proc in started.values():
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def _start(tmp_path: Path, tag: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """``lrsearch ARGS`` in the background; its output goes to ``tmp_path/tag.out``."""
    with (tmp_path / f"{tag}.out").open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lrsearch.cli", *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial] | None:
    """The study's trials, read through a storage of the test's own (closed after)."""
    storage = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    try:
        return optuna.load_study(study_name=name, storage=storage).trials
    except KeyError:
        return None
    finally:
        storage.remove_session()
        storage.engine.dispose()


def _wait_for_trials(url: str, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not _trials(url, name):
        if time.monotonic() > deadline:
            raise AssertionError("the study was never created")
        time.sleep(0.3)


def _wait_mid_study(url: str, name: str, *, pid: int | None = None, timeout: float = 300) -> None:
    """Until a trial is training (in process ``pid``, if given) and others are still to come."""
    owner = f"{socket.gethostname()}:{pid}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        trials = _trials(url, name) or []
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if pid is not None:
            running = [t for t in running if t.user_attrs.get("worker") == owner]
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        if running and finished <= N_TRIALS - 2:
            return
        if finished > N_TRIALS - 2:
            raise AssertionError("the study went too fast to stop it in the middle")
        time.sleep(0.3)
    raise AssertionError("the study never got going")


def _finish(tmp_path: Path, procs: dict[str, subprocess.Popen[str]]) -> str:
    """Wait for every process; all exit 0 without a traceback. Their output, joined."""
    outputs = []
    for tag, proc in procs.items():
        try:
            proc.wait(timeout=300)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        text = (tmp_path / f"{tag}.out").read_text()
        assert proc.returncode == 0, f"{tag} exited {proc.returncode}:\n{text[-3000:]}"
        assert "Traceback" not in text, text[-3000:]
        outputs.append(text)
    return "\n".join(outputs)


def _check(url: str, name: str, home: Path) -> None:
    trials = _trials(url, name)
    assert trials is not None
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == N_TRIALS
    failed = [t for t in trials if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")]
    assert not failed  # no trial lost and trained again (a surplus one never trained)
    assert TrialState.RUNNING not in states and TrialState.WAITING not in states
    client = MlflowClient(local_tracking_uri(home)[0])
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert all(run.info.status != "RUNNING" for run in runs)
    finished = [run for run in _trial_runs(client, name) if run.info.status == "FINISHED"]
    assert len(finished) == states.count(TrialState.COMPLETE)  # a pruned trial's run: KILLED


def _env_for(home: Path) -> dict[str, str]:
    return _env(home, LRSEARCH_STORAGE_GRACE="120")  # a broken test fails in minutes, not hours


def test_a_supervisor_its_workers_and_a_plain_worker_ride_out_a_database_restart(
    tmp_path: Path,
    private_pg: PrivateCluster,  # noqa: F811
    procs: dict[str, subprocess.Popen[str]],
) -> None:
    """`run` (a supervisor with two workers) and a `worker` of another host, one outage.

    The study is created first (range test + one trial); then all of them are training when
    the database stops, and every one of them waits it out.
    """
    name = f"pgout{uuid.uuid4().hex[:6]}"
    url = private_pg.create_database(name)
    # trials long enough (12 epochs) that three workers are still mid-study when it stops
    f = _study_file(tmp_path, name, n_trials=N_TRIALS, epochs=12, n=2048)
    env = _env_for(tmp_path)
    first = ("run", str(f), "--storage", url, "--devices", "cpu", "--n-trials", "1")
    procs["create"] = _start(tmp_path, "create", *first, env=env)  # range test + one trial
    _finish(tmp_path, procs)
    command = ("run", str(f), "--storage", url, "--devices", "cpu", "--trials-per-device", "2")
    procs["run"] = _start(tmp_path, "run", *command, env=env)
    worker = ("worker", "--study", name, "--storage", url, "--devices", "cpu")
    procs["worker"] = _start(tmp_path, "worker", *worker, "--allow-workload", "tests.*", env=env)
    _wait_mid_study(url, name, pid=procs["worker"].pid)  # the plain worker is in, training
    private_pg.stop()
    time.sleep(OUTAGE_S)
    private_pg.start()
    output = _finish(tmp_path, procs)
    for tag in ("run", "worker"):
        text = (tmp_path / f"{tag}.out").read_text()
        assert "storage unreachable" in text and "storage reachable again" in text, tag
    assert "storage unreachable" in output
    _check(url, name, tmp_path)


def _proxy(port: int, url: str, env: dict[str, str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "lrsearch.cli", "storage-proxy", "--port", str(port)],
        env={**env, "LRSEARCH_STORAGE": url},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError("storage-proxy never listened")


def test_a_storage_proxy_sigkilled_and_restarted(
    tmp_path: Path,
    private_pg: PrivateCluster,  # noqa: F811
    procs: dict[str, subprocess.Popen[str]],
) -> None:
    name = f"pgprx{uuid.uuid4().hex[:6]}"
    url = private_pg.create_database(name)
    port = free_port()
    env = _env_for(tmp_path)
    proxy = _proxy(port, url, env)
    f = _study_file(tmp_path, name, n_trials=N_TRIALS, epochs=4, n=2048)
    grpc_url = f"grpc://127.0.0.1:{port}"
    command = ("run", str(f), "--storage", grpc_url, "--devices", "cpu", "--trials-per-device", "2")
    procs["run"] = _start(tmp_path, "run", *command, env=env)
    try:
        _wait_mid_study(url, name)
        proxy.send_signal(signal.SIGKILL)
        proxy.wait()
        time.sleep(OUTAGE_S / 2)
        proxy = _proxy(port, url, env)
        output = _finish(tmp_path, procs)
    finally:
        proxy.kill()
        proxy.wait()
    assert "storage unreachable" in output and "storage reachable again" in output
    _check(url, name, tmp_path)
