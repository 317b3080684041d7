"""The launchers' parts, without a cluster: orders, placement, submitit parameters, the CLI's
one-line errors, and a worker process that dies with its launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from lrsearch.cli import cli
from lrsearch.devices import placement_tags
from lrsearch.errors import ConfigError, StorageError
from lrsearch.launchers import WorkerOrders

ROOT = Path(__file__).resolve().parents[1]
URL = "postgresql://lrsearch:s3cret@db-host:5432/optuna"


def test_worker_gets_the_storage_in_its_environment_not_its_command() -> None:
    orders = WorkerOrders(
        "s", n_trials=8, allow_workloads=("pkg.*",), tracking_uri="http://u:p@mlflow:5000"
    )
    command = orders.command()
    assert command[1:] == [
        *("-m", "lrsearch.cli", "worker", "--study", "s", "--devices", "auto"),
        *("--trials-per-device", "1", "--n-trials", "8", "--allow-workload", "pkg.*"),
    ]
    assert not [part for part in command if "s3cret" in part or "mlflow" in part]
    env = orders.environment(URL, launcher="ray node=ab worker=0 gpus=1", visible_gpus="1")
    assert env["LRSEARCH_STORAGE"] == URL
    assert env["LRSEARCH_TRACKING_URI"] == "http://u:p@mlflow:5000"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["LRSEARCH_LAUNCHER"] == "ray node=ab worker=0 gpus=1"


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"n_trials": 0}, "--n-trials"), ({"trials_per_device": 0}, "--trials")]
)
def test_bad_orders_name_their_option(kwargs, field) -> None:
    with pytest.raises(ConfigError, match=field):
        WorkerOrders("s", **kwargs)


def test_placement_tags_say_where_the_worker_runs(monkeypatch) -> None:
    monkeypatch.delenv("LRSEARCH_LAUNCHER", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert placement_tags() == {}
    monkeypatch.setenv("LRSEARCH_LAUNCHER", "slurm job=7 task=1 gpus=2,3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert placement_tags() == {
        "lrsearch.launcher": "slurm job=7 task=1 gpus=2,3",
        "lrsearch.cuda_visible_devices": "2,3",
    }


def test_ray_placement_counts_gpu_slots() -> None:
    pytest.importorskip("ray")
    from lrsearch.launchers.ray import RayLaunch

    assert RayLaunch(gpus_per_worker=0.5).workers_for(4.0) == 8
    assert RayLaunch(gpus_per_worker=2).workers_for(5.0) == 2
    assert RayLaunch(n_workers=3, gpus_per_worker=0).workers_for(0.0) == 3
    with pytest.raises(ConfigError, match="--workers is needed"):
        RayLaunch().workers_for(0.0)
    with pytest.raises(ConfigError, match="--gpus-per-worker"):
        RayLaunch(gpus_per_worker=1.5)


def test_slurm_parameters_are_ones_submitit_accepts(tmp_path) -> None:
    submitit = pytest.importorskip("submitit")
    from lrsearch.launchers.slurm import SlurmLaunch, SlurmWorker

    launch = SlurmLaunch(n_workers=4, gpus_per_worker=2, partition="gpu", mem_gb=32)
    # AutoExecutor checks every key against the executors it knows (Slurm's too) and
    # passes the slurm_ ones on only on Slurm; no srun here, so it runs as "local"
    auto = submitit.AutoExecutor(folder=tmp_path, cluster="local")
    params = launch.parameters("s", local=False)
    auto.update_parameters(**params)
    with pytest.raises(NameError):  # the check bites
        auto.update_parameters(slurm_bogus=1)
    assert params["slurm_partition"] == "gpu" and params["slurm_array_parallelism"] == 4
    assert params["gpus_per_node"] == 2 and params["cpus_per_task"] == 4
    submitit.LocalExecutor(folder=tmp_path).update_parameters(**launch.parameters("s", local=True))
    # preempted or timed out: submitit requeues this same worker for the same array task
    worker = SlurmWorker(WorkerOrders("s"))
    again = worker.checkpoint(3)
    assert again.function is worker and again.args == (3,)
    assert worker.requeues == 1  # the requeued worker lets the heartbeat find its lost trial


@pytest.mark.parametrize("command", ["ray-workers", "slurm-workers"])
def test_launchers_need_a_storage_every_node_reaches(command, monkeypatch) -> None:
    monkeypatch.delenv("LRSEARCH_STORAGE", raising=False)
    out = CliRunner().invoke(cli, [command, "--study", "s", "--workers", "2"])
    assert out.exit_code == ConfigError.exit_code
    assert "--storage is required" in out.output and len(out.output.strip().splitlines()) == 1


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_worker_process_dies_with_its_launcher(tmp_path) -> None:
    """A node's loss kills the launcher's process: its worker must not train on as an orphan."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                """
                import subprocess, sys, time
                from lrsearch.launchers._process import _die_with_parent
                child = subprocess.Popen(["sleep", "60"], preexec_fn=_die_with_parent)
                print(child.pid, flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    parent.stdout.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def _journal_with_a_study(tmp_path: Path) -> str:
    import optuna

    journal = optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    optuna.create_study(study_name="s", storage=optuna.storages.JournalStorage(journal))
    return f"journal:{tmp_path / 'optuna.journal'}"


def test_slurm_submission_refuses_to_run_here_unless_waited_for(tmp_path) -> None:
    pytest.importorskip("submitit")
    from lrsearch.launchers.slurm import SlurmLaunch, submit

    storage = _journal_with_a_study(tmp_path)
    with pytest.raises(ConfigError, match="--wait"):  # no sbatch on this machine
        submit(WorkerOrders("s"), storage, SlurmLaunch(n_workers=1), folder=tmp_path / "jobs")
    with pytest.raises(StorageError, match="no study 'other'"):
        submit(WorkerOrders("other"), storage, SlurmLaunch(n_workers=1), folder=tmp_path)


def test_slurm_submission_keeps_the_urls_out_of_submitits_files(tmp_path, monkeypatch) -> None:
    submitit = pytest.importorskip("submitit")
    from lrsearch.launchers.slurm import SlurmLaunch, submit

    monkeypatch.delenv("LRSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("LRSEARCH_TRACKING_URI", raising=False)
    storage = _journal_with_a_study(tmp_path)
    tracking = "http://mlflow-user:s3cret@mlflow-host:5000"
    folder = tmp_path / "jobs"
    executor = submitit.LocalExecutor(folder=folder)
    orders = WorkerOrders("s", tracking_uri=tracking)
    jobs = submit(
        orders,
        storage,
        SlurmLaunch(n_workers=1, gpus_per_worker=0),
        folder=folder,
        executor=executor,
    )
    try:
        assert "LRSEARCH_STORAGE" not in os.environ and "LRSEARCH_TRACKING_URI" not in os.environ
        files = [p for p in folder.rglob("*") if p.is_file()]
        assert files  # the job's pickle and script are written at submission
        for path in files:
            assert b"s3cret" not in path.read_bytes() and b"optuna.journal" not in path.read_bytes()
    finally:
        for job in jobs:
            job.cancel(check=False)
            deadline = time.monotonic() + 20
            while not job.done() and time.monotonic() < deadline:  # reaps its process
                time.sleep(0.05)
