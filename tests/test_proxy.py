"""Studies through Optuna's gRPC storage proxy (``lrsearch storage-proxy``, ``grpc://``).

The proxy has no heartbeat of Optuna's (an RDB feature), so lrsearch keeps its own
(:mod:`lrsearch.heartbeat`): unit tests on an in-memory storage, then real processes against
the PostgreSQL on 127.0.0.1:5432 (``postgres`` marker) through a real proxy.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch import storage as storage_module
from lrsearch.cli import cli
from lrsearch.errors import StorageError
from lrsearch.heartbeat import KEY, beating, fail_stale, last_beat
from lrsearch.objective import claim
from lrsearch.storage import open_storage, storage_of, trial_storage_id
from lrsearch.tracking import local_tracking_uri
from tests.test_distributed import (
    ROOT,
    _check_runs,
    _env,
    _free_port,
    _load,
    _lrsearch,
    _study_file,
    _wait_for_running,
    pg_url,  # noqa: F401  (the fixture: a throwaway database)
)

X = optuna.distributions.FloatDistribution(0.0, 1.0)


# --- lrsearch's heartbeat, on a storage without Optuna's -----------------------------------


@pytest.fixture
def study(tmp_path: Path) -> optuna.Study:
    """A study in a journal file: shared by processes, no heartbeat of Optuna's."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=open_storage(f"journal:{tmp_path / 'journal.log'}"))


def _beat_at(study: optuna.Study, trial: optuna.Trial, at: float) -> None:
    storage_of(study).set_trial_user_attr(
        trial_storage_id(trial), KEY, {"trial": trial.number, "at": at}
    )


def test_a_running_trial_beats_until_it_ends(study: optuna.Study) -> None:
    trial = study.ask({"x": X})
    with beating(trial, interval_s=0.05):
        first = last_beat(study.trials[0])
        assert first is not None and abs(first - time.time()) < 5  # written before the block
        time.sleep(0.3)
        later = last_beat(study.trials[0])
        assert later is not None and later > first
        study.tell(trial, 1.0)  # ended elsewhere: the thread stops, quietly (no thread error)
        final = last_beat(study.trials[0])
        time.sleep(0.15)
        assert last_beat(study.trials[0]) == final


def test_a_stale_trial_is_failed_and_retried_with_the_same_params(study: optuna.Study) -> None:
    dead = study.ask({"x": X})
    alive = study.ask({"x": X})
    _beat_at(study, dead, time.time() - 100)
    _beat_at(study, alive, time.time())
    assert fail_stale(study, grace_s=30) == [dead.number]
    trials = study.get_trials()
    assert trials[dead.number].state == TrialState.FAIL
    assert trials[dead.number].user_attrs["fail_reason"].startswith("worker lost: no heartbeat")
    assert trials[alive.number].state == TrialState.RUNNING
    (retry,) = study.get_trials(states=(TrialState.WAITING,))
    assert retry.system_attrs["failed_trial"] == dead.number  # as Optuna's retry callback sets
    assert retry.params == trials[dead.number].params
    assert fail_stale(study, grace_s=30) == []  # failed once only


def test_trials_without_a_heartbeat_of_their_own_are_left_alone(study: optuna.Study) -> None:
    direct = study.ask({"x": X})  # a worker on Optuna's heartbeat writes none of lrsearch's
    dead = study.ask({"x": X})
    _beat_at(study, dead, time.time() - 100)
    assert fail_stale(study, grace_s=30) == [dead.number]
    retry = study.ask()  # the WAITING retry, carrying a copy of its dead trial's heartbeat
    assert retry.number not in (direct.number, dead.number)
    assert retry.user_attrs[KEY]["trial"] == dead.number
    assert fail_stale(study, grace_s=0) == []
    assert {t.number for t in study.get_trials(states=(TrialState.RUNNING,))} == {
        direct.number,
        retry.number,
    }


def test_claim_fails_a_lost_workers_trial_and_goes_ahead(study: optuna.Study) -> None:
    done = study.ask({"x": X})
    study.tell(done, 1.0)
    dead = study.ask({"x": X})
    _beat_at(study, dead, time.time() - 10 * storage_module.GRACE_S)
    mine = study.ask({"x": X})
    assert claim(study, mine, n_trials=2, poll_s=0.01)  # the dead trial no longer counts
    assert study.trials[dead.number].state == TrialState.FAIL
    assert study.get_trials(states=(TrialState.WAITING,))


def test_no_lrsearch_heartbeat_where_optunas_runs_or_nobody_could_see_it(tmp_path: Path) -> None:
    on_disk = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'o.db'}"))
    in_memory = optuna.create_study()
    for study in (on_disk, in_memory):
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", UserWarning
            )  # Optuna's heartbeat, asked without optimize
            trial = study.ask({"x": X})
        with beating(trial, interval_s=0.05):
            time.sleep(0.1)
        assert KEY not in study.trials[0].user_attrs


def test_an_unreachable_proxy_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage_module, "PROXY_CONNECT_S", 0.2)
    with pytest.raises(StorageError, match=r"no storage proxy answers at grpc://127\.0\.0\.1:"):
        open_storage(f"grpc://127.0.0.1:{_free_port()}")
    with pytest.raises(StorageError, match="use grpc://host:port"):
        open_storage("grpc://127.0.0.1:http")


# --- lrsearch storage-proxy ------------------------------------------------------------------


def _wait_for_port(proc: subprocess.Popen[str], port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"storage-proxy exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("storage-proxy never listened")


def lrsearch_taking_ctrl_c(*args: str) -> list[str]:
    """The command line of ``python -m lrsearch.cli ARGS`` for a child a test sends Ctrl-C to.

    Python leaves SIGINT ignored in a child that inherits it ignored (a test run started as a
    background job of a non-interactive shell, or under nohup); a user's ``lrsearch`` at a
    terminal gets Ctrl-C, so the child puts Python's handler back before running the CLI.
    """
    code = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'lrsearch'; runpy.run_module('lrsearch.cli', run_name='__main__')"
    )
    return [sys.executable, "-c", code, *args]


def _start_proxy(url: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    """``lrsearch storage-proxy`` on a free loopback port (the URL via $LRSEARCH_STORAGE)."""
    port = _free_port()
    proc = subprocess.Popen(
        lrsearch_taking_ctrl_c("storage-proxy", "--port", str(port)),
        env={**env, "LRSEARCH_STORAGE": url},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for_port(proc, port)
    return proc, f"grpc://127.0.0.1:{port}"


def _stop(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C: the proxy stops cleanly."""
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()  # never leave it running for the next test to trip over
        proc.communicate()
        raise AssertionError("the proxy did not stop within 30 s of Ctrl-C") from None
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err
    return out, err


@pytest.fixture
def proxy_over(tmp_path: Path) -> Iterator[object]:
    """Start proxies (``proxy_over(url)`` -> grpc URL); they are stopped with Ctrl-C after."""
    started: list[subprocess.Popen[str]] = []

    def start(url: str) -> str:
        proc, grpc_url = _start_proxy(url, _env(tmp_path))
        started.append(proc)
        return grpc_url

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)


def test_storage_proxy_serves_a_database_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    proc, grpc_url = _start_proxy(url, _env(tmp_path))
    try:
        out = _lrsearch("status", "--storage", grpc_url, env=_env(tmp_path), timeout=60)
        assert out.returncode != 0 and "no studies in this storage yet" in out.stderr
        port = grpc_url.rpartition(":")[2]
        busy = _lrsearch("storage-proxy", "--storage", url, "--port", port, env=_env(tmp_path))
        assert busy.returncode != 0 and "cannot listen on 127.0.0.1:" in busy.stderr
    finally:
        stdout, _ = _stop(proc)
    assert f"workers: --storage {grpc_url}" in stdout
    assert stdout.rstrip().endswith("storage proxy stopped")


def test_storage_proxy_refuses_what_it_cannot_serve(tmp_path: Path) -> None:
    out = _lrsearch("storage-proxy", "--storage", "grpc://db:13000", env=_env(tmp_path))
    assert out.returncode != 0 and "is not a database URL" in out.stderr
    out = _lrsearch("storage-proxy", env=_env(tmp_path))
    assert out.returncode != 0 and "--storage" in out.stderr


# --- real workers through the proxy, PostgreSQL behind it -----------------------------------


@pytest.mark.postgres  # CI's distributed stage; small: 3 trials
def test_a_study_runs_through_the_proxy(tmp_path: Path, pg_url: str, proxy_over) -> None:  # noqa: F811
    grpc_url = proxy_over(pg_url)
    f = _study_file(tmp_path, "proxied", n_trials=3)
    env = _env(tmp_path)
    command = ["run", str(f), "--storage", grpc_url, "--devices", "cpu", "--trials-per-device", "2"]
    out = _lrsearch(*command, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("proxied", pg_url)
    states = [t.state for t in study.trials]
    assert sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states) == 3
    assert TrialState.RUNNING not in states
    assert len({t.user_attrs.get("worker") for t in study.trials}) >= 2  # two processes trained
    assert all(last_beat(t) is not None for t in study.trials)  # lrsearch's heartbeat ran
    _check_runs(MlflowClient(local_tracking_uri(tmp_path)[0]), study, steps=2 * (192 // 32))

    # The read-side commands, in this process (no interpreter start-up each).
    runner = CliRunner()
    status = runner.invoke(cli, ["status", "--study", "proxied", "--storage", grpc_url, "--json"])
    assert status.exit_code == 0, status.output
    counts = json.loads(status.output)["trials"]
    assert counts["COMPLETE"] + counts["PRUNED"] == 3
    trust = ("--allow-workload", "tests.*")  # the stored workload is a test's
    best = runner.invoke(cli, ["best", "--study", "proxied", "--storage", grpc_url, *trust])
    assert best.exit_code == 0 and "max_lr" in best.output, best.output
    retrain = runner.invoke(
        cli, ["train", "--from-study", "proxied", "--storage", grpc_url, "--json", *trust]
    )
    assert retrain.exit_code == 0, retrain.output


@pytest.mark.postgres  # CI's distributed stage; small: 3 trials of 12 epochs
def test_a_sigkilled_worker_behind_the_proxy_is_failed_retried_and_its_run_failed(
    tmp_path: Path,
    pg_url: str,  # noqa: F811
    proxy_over,
) -> None:
    grpc_url = proxy_over(pg_url)
    # trials long enough (12 epochs) that the test, polling through a busy machine, sees the
    # worker's trial training before that worker is done with the study
    f = _study_file(tmp_path, "lost", n_trials=3, epochs=12, n=2048)
    env = _env(tmp_path, LRSEARCH_HEARTBEAT_S="1", LRSEARCH_GRACE_S="3")
    created = _lrsearch(
        "run", str(f), "--storage", grpc_url, "--devices", "cpu", "--n-trials", "1", env=env
    )
    assert created.returncode == 0, created.stderr[-3000:]
    worker_env = {**env, "LRSEARCH_STORAGE": grpc_url}
    command = ["worker", "--study", "lost", "--devices", "cpu", "--n-trials", "3"]
    command += ["--allow-workload", "tests.*"]
    worker = subprocess.Popen(
        [sys.executable, "-m", "lrsearch.cli", *command],
        env=worker_env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim = _wait_for_running(pg_url, "lost", worker.pid, timeout=120)
    os.kill(worker.pid, signal.SIGKILL)  # a host lost: nobody is there to notice but a heartbeat
    worker.wait()
    # Past the heartbeat's grace (3 s + a beat): the next worker's first ask finds the trial
    # lost and queues its retry before any fresh trial can fill the budget of 3.
    time.sleep(4.5)

    out = _lrsearch(*command, env=worker_env)
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("lost", pg_url)
    dead = study.trials[victim.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"].startswith("worker lost: no heartbeat")
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == dead.params
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 3
    assert not study.get_trials(states=(TrialState.RUNNING,))
    run = MlflowClient(local_tracking_uri(tmp_path)[0]).get_run(dead.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED"
    assert run.data.tags["lrsearch.retried_as"] == str(retries[0].number)
