"""Workers against the real PostgreSQL on 127.0.0.1:5432 (each test: its own database).

Skipped where that server is not reachable. Workers are real processes (`lrsearch run
--devices cpu --trials-per-device N`, `lrsearch worker`), the MLflow store is real.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import quote

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.tracking import local_tracking_uri
from tests.private_pg import unavailable
from tests.steps_record import check_steps

pytestmark = pytest.mark.postgres
PG = os.environ.get("LRSEARCH_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
ROOT = Path(__file__).resolve().parents[1]

STUDY = """
[study]
name = "{name}"
workload = "tests.tiny_workloads:blobs"
workload_options = {{ n = {n} }}
n_trials = {n_trials}
epochs = {epochs}
[range_test]
repeats = 1
num_iter = 40
[prior]
n_startup_trials = 3
startup = "prior"  # every trial trains: the tests time workers, not the startup
[pruner]
name = "none"
[tracking]
update_ratio_every = 0
"""


def _admin():
    import psycopg

    return psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=3)


_STORAGES: dict[str, optuna.storages.RDBStorage] = {}


def _load(name: str, url: str) -> optuna.Study:
    """Load a study through one storage per database (its engine is disposed at teardown)."""
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(url, engine_kwargs={"pool_pre_ping": True})
    return optuna.load_study(study_name=name, storage=_STORAGES[url])


@pytest.fixture
def pg_url():
    """A throwaway database, dropped afterwards."""
    try:
        with _admin() as conn:
            name = f"lrsearch_test_{uuid.uuid4().hex[:10]}"
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # pragma: no cover - depends on the machine
        unavailable(f"PostgreSQL not reachable at {PG}: {exc}")
    url = f"{PG}/{name}"
    try:
        yield url
    finally:
        forget(url)
        with _admin() as conn:  # a fresh connection: the server may have restarted meanwhile
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def forget(url: str) -> None:
    """Dispose of the test's own engine for ``url`` (its connections may be dead)."""
    storage = _STORAGES.pop(url, None)
    if storage is not None:
        storage.engine.dispose()


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "LRSEARCH_HOME": str(home), "PYTHONPATH": str(ROOT), **extra}
    env.pop("LRSEARCH_STORAGE", None)
    return env


def _lrsearch(
    *args: str, env: dict[str, str], timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lrsearch.cli", *args],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_run(
    f: Path, url: str, env: dict[str, str], *, capture: bool = False
) -> subprocess.Popen[str]:
    """`lrsearch run FILE` with two supervised CPU workers, in the background."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lrsearch.cli",
            "run",
            str(f),
            "--storage",
            url,
            "--devices",
            "cpu",
            "--trials-per-device",
            "2",
        ],
        env=env,
        cwd=ROOT,
        stdout=out,
        stderr=out,
        text=True,
    )


def _study_file(tmp_path: Path, name: str, n_trials: int, epochs: int = 2, n: int = 256) -> Path:
    f = tmp_path / f"{name}.toml"
    f.write_text(STUDY.format(name=name, n_trials=n_trials, epochs=epochs, n=n))
    return f


def _trial_runs(client: MlflowClient, study: str):
    exp = client.get_experiment_by_name(study)
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    return [r for r in runs if r.data.tags.get("lrsearch.role") == "trial"]


def _check_runs(client: MlflowClient, study: optuna.Study, steps: int) -> None:
    """One MLflow run per trial that trained; every COMPLETE run has its full lr history."""
    trained = [
        t for t in study.trials if "mlflow_run_id" in t.user_attrs or t.state == TrialState.COMPLETE
    ]
    runs = _trial_runs(client, study.study_name)
    assert len(runs) == len(trained)
    by_id = {r.info.run_id: r for r in runs}
    for t in study.trials:
        if t.state == TrialState.COMPLETE:
            run = by_id[t.user_attrs["mlflow_run_id"]]
            assert run.info.status == "FINISHED"
            check_steps(client, run.info.run_id, steps)


# 43 s: the outage tests count exactly n_trials under two workers and a supervisor in CI; this
# one joins `make test-load` to keep CI within its 15 minutes.
@pytest.mark.load
def test_four_workers_finish_exactly_the_requested_trials(tmp_path, pg_url) -> None:
    f = _study_file(tmp_path, "four", n_trials=8)
    out = _lrsearch(
        "run",
        str(f),
        "--storage",
        pg_url,
        "--devices",
        "cpu",
        "--trials-per-device",
        "4",
        env=_env(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("four", pg_url)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 8
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    workers = {t.user_attrs.get("worker") for t in finished}
    assert len(workers) >= 2  # trials really ran in several processes
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    client = MlflowClient(local_tracking_uri(tmp_path)[0])
    _check_runs(client, study, steps=2 * (192 // 32))
    assert ("postgres@" in pg_url and pg_url not in out.stdout + out.stderr) or ":" not in pg_url


def _wait_for_running(
    storage: str, name: str, pid: int, timeout: float = 60.0, *, by_epoch: int | None = None
) -> optuna.trial.FrozenTrial:
    """The worker's trial once it has reported an epoch (and, with ``by_epoch``, not yet more
    than that many: a trial seen later could end before the test acts on it)."""
    host = socket.gethostname()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            study = _load(name, storage)
        except KeyError:
            time.sleep(0.2)
            continue
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if t.user_attrs.get("worker") != f"{host}:{pid}" or not t.last_step:
                continue
            if by_epoch is None or t.last_step <= by_epoch:
                return t
        time.sleep(0.2)
    raise AssertionError("the worker never got a trial running")


def test_sigkilled_worker_trial_is_failed_requeued_and_its_run_failed(tmp_path, pg_url) -> None:
    f = _study_file(tmp_path, "crash", n_trials=4, epochs=8, n=1024)
    # epochs of >= 0.3 s waited, not computed: as long on a loaded machine as on a quiet one
    slow = 'workload = "tests.tiny_workloads:slow_blobs"\nworkload_options = { n = 1024, step_ms = 20 }'
    f.write_text(
        f.read_text().replace(
            'workload = "tests.tiny_workloads:blobs"\nworkload_options = { n = 1024 }', slow
        )
    )
    assert "slow_blobs" in f.read_text()
    env = _env(tmp_path, LRSEARCH_HEARTBEAT_S="1", LRSEARCH_GRACE_S="4")
    created = _lrsearch(
        "run", str(f), "--storage", pg_url, "--devices", "cpu", "--n-trials", "1", env=env
    )
    assert created.returncode == 0, created.stderr[-3000:]
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lrsearch.cli",
            "worker",
            "--study",
            "crash",
            "--devices",
            "cpu",
            "--n-trials",
            "4",
            "--allow-workload",
            "tests.*",
        ],
        env={**env, "LRSEARCH_STORAGE": pg_url},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:  # seen by epoch 5 of 8: killed at least a second before it could end
        victim = _wait_for_running(pg_url, "crash", worker.pid, by_epoch=5)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    killed_at = time.monotonic()
    # Past the heartbeat's grace (4 s + a beat), as a restarted worker waits (launchers): the
    # next worker's first ask finds the trial lost and queues its retry before any fresh trial
    # can fill the budget (a worker that asks sooner may, and the retry then never runs).
    time.sleep(5.5)

    out = _lrsearch(
        "worker",
        "--study",
        "crash",
        "--devices",
        "cpu",
        "--n-trials",
        "4",
        "--allow-workload",
        "tests.tiny_workloads:*",
        env={**env, "LRSEARCH_STORAGE": pg_url},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("crash", pg_url)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 4
    assert time.monotonic() - killed_at < 120
    client = MlflowClient(local_tracking_uri(tmp_path)[0])
    run = client.get_run(dead.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["lrsearch.retried_as"] == str(retries[0].number)


def test_a_lost_host_leaves_nothing_running(tmp_path, pg_url) -> None:
    """A host with two workers is lost near the end; `run` fills the budget without them.

    Both of the host's trials become FAIL; one is retried and fills the budget, so the other
    retry never runs. Its MLflow run must still be closed (FAILED, with a reason).
    """
    # Trials long enough that the host's second worker (a process start later) still finds
    # the first one training: the test needs both trials running when the host is lost.
    f = _study_file(tmp_path, "lost", n_trials=3, epochs=60, n=2048)
    env = _env(tmp_path, LRSEARCH_HEARTBEAT_S="1", LRSEARCH_GRACE_S="3")
    created = _lrsearch(
        "run", str(f), "--storage", pg_url, "--devices", "cpu", "--n-trials", "1", env=env
    )
    assert created.returncode == 0, created.stderr[-3000:]
    host = subprocess.Popen(
        [
            *(sys.executable, "-m", "lrsearch.cli", "worker", "--study", "lost"),
            *("--devices", "cpu", "--trials-per-device", "2", "--n-trials", "3"),
            *("--allow-workload", "tests.*"),
        ],
        env={**env, "LRSEARCH_STORAGE": pg_url},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the "host"
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            running = _load("lost", pg_url).get_trials(states=(TrialState.RUNNING,))
            if len(running) == 2 and all(t.last_step for t in running):
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the host's two workers never both trained")
    finally:
        os.killpg(host.pid, signal.SIGKILL)  # the host is lost (or the test gives up on it)
        host.wait()

    out = _lrsearch(
        "run", str(f), "--storage", pg_url, "--devices", "cpu", "--n-trials", "2", env=env
    )
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("lost", pg_url)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2
    assert not study.get_trials(states=(TrialState.RUNNING,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(failed) == 2
    client = MlflowClient(local_tracking_uri(tmp_path)[0])
    runs = _trial_runs(client, "lost")
    assert runs and not [r for r in runs if r.info.status == "RUNNING"]
    for t in failed:
        run = client.get_run(t.user_attrs["mlflow_run_id"])
        assert run.info.status == "FAILED"
        assert run.data.tags["lrsearch.reason"]
    exp = client.get_experiment_by_name("lost")
    assert not client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")


def test_supervisor_notices_a_dead_worker_at_once(tmp_path, pg_url) -> None:
    f = _study_file(tmp_path, "super", n_trials=5, epochs=8, n=2048)
    env = _env(tmp_path, LRSEARCH_GRACE_S="600")  # only the supervisor can recover it in time
    run = start_run(f, pg_url, env, capture=True)
    # find a worker process that is training a trial, and kill it
    deadline = time.monotonic() + 120
    victim = None
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            study = _load("super", pg_url)
        except KeyError:
            continue
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if t.last_step:
                victim = t
                break
    assert victim is not None
    pid = int(victim.user_attrs["worker"].rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)
    stdout, stderr = run.communicate(timeout=240)
    assert run.returncode == 0, stderr[-3000:]
    assert f"(pid {pid}) exited with -9" in stdout
    study = _load("super", pg_url)
    assert study.trials[victim.number].state == TrialState.FAIL
    assert study.trials[victim.number].user_attrs["fail_reason"] == "worker process died"
    assert any(t.system_attrs.get("failed_trial") == victim.number for t in study.trials)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def mlflow_server(tmp_path, pg_url):
    """A real `mlflow server` on loopback, backed by its own PostgreSQL database."""
    conn = _admin()
    db = f"lrsearch_mlflow_{uuid.uuid4().hex[:10]}"
    conn.execute(f'CREATE DATABASE "{db}"')
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"{PG}/{db}",
            "--artifacts-destination",
            str(tmp_path / "mlartifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        conn.close()


def test_workers_log_through_an_mlflow_server(tmp_path, pg_url, mlflow_server) -> None:
    f = _study_file(tmp_path, "served", n_trials=4)
    out = _lrsearch(
        "run",
        str(f),
        "--storage",
        pg_url,
        "--tracking-uri",
        mlflow_server,
        "--devices",
        "cpu",
        "--trials-per-device",
        "2",
        env=_env(tmp_path),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("served", pg_url)
    _check_runs(MlflowClient(mlflow_server), study, steps=2 * (192 // 32))
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to the embedded store


def test_a_storage_password_never_leaks(tmp_path, pg_url) -> None:
    """Grep everything a study wrote (output, MLflow store, artifacts) for the password: one
    holding ``/ # ? @`` and a space, percent-encoded in the URL."""
    secret = f"hun/te#r?2@ x{uuid.uuid4().hex[:8]}"
    role = f"lrsearch_role_{uuid.uuid4().hex[:8]}"
    db = pg_url.rpartition("/")[2]
    with _admin() as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'")
        conn.execute(f'GRANT ALL ON DATABASE "{db}" TO {role}')
        conn.execute(f'ALTER DATABASE "{db}" OWNER TO {role}')
    url = f"postgresql://{role}:{quote(secret, safe='')}@127.0.0.1:5432/{db}"
    try:
        f = _study_file(tmp_path, "secret", n_trials=3)
        env = _env(tmp_path)
        outputs = [
            _lrsearch(
                "run",
                str(f),
                "--storage",
                url,
                "--devices",
                "cpu",
                "--trials-per-device",
                "2",
                env=env,
            )
        ]
        assert outputs[0].returncode == 0, outputs[0].stderr[-2000:]
        outputs.append(
            _lrsearch("status", "--study", "secret", "--storage", url, "--json", env=env)
        )
        outputs.append(_lrsearch("run", str(f), "--storage", url.replace("5432", "1"), env=env))
        assert outputs[-1].returncode != 0 and "***" in outputs[-1].stderr
        forms = [secret, quote(secret, safe=""), secret.rpartition(" ")[2]]
        for out in outputs:
            assert not any(form in out.stdout + out.stderr for form in forms)
        assert "***" in outputs[1].stdout
        written = [p for p in tmp_path.rglob("*") if p.is_file()]
        assert any(p.name == "mlflow.db" for p in written)
        for path in written:
            assert not any(form.encode() in path.read_bytes() for form in forms), path
    finally:
        _STORAGES.pop(pg_url, None)
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_orchestrator_killed_and_restarted(tmp_path, pg_url) -> None:
    """SIGKILL `lrsearch run` mid-study: its workers finish their trials, a restart resumes."""
    # trials long enough (12 epochs) that a poll through a busy machine sees one training
    f = _study_file(tmp_path, "orch", n_trials=4, epochs=12, n=2048)
    env = _env(tmp_path)
    run = start_run(f, pg_url, env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.3)
        try:
            study = _load("orch", pg_url)
        except KeyError:
            continue
        if any(t.state == TrialState.RUNNING and t.last_step for t in study.trials):
            break
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    out = _lrsearch("run", str(f), "--storage", pg_url, "--devices", "cpu", env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("orch", pg_url)
    orphans = {
        int(t.user_attrs["worker"].rpartition(":")[2])
        for t in study.trials
        if "worker" in t.user_attrs
    }
    deadline = time.monotonic() + 120
    while any(_alive(p) for p in orphans) and time.monotonic() < deadline:
        time.sleep(0.5)
    study = _load("orch", pg_url)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 4
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert "running the LR range test" not in out.stdout  # resumed: it did not run again
