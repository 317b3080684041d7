"""The Ray and Slurm launchers against the real PostgreSQL (each test: its own database).

Ray: a simulated cluster (``ray.cluster_utils.Cluster``: a head and two nodes of two logical
GPUs each, all processes on this host), two workers of one GPU each, and the node of a worker
that is training removed mid-trial. Ray restarts its actor on the other node; the heartbeat
fails the lost trial and queues its retry. Slurm: submitit's ``LocalExecutor`` runs the job
array's tasks as local processes (the Slurm code path minus ``sbatch``).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.config import load_study_config
from lrsearch.launchers import WorkerOrders
from lrsearch.storage import backend_of, storage_of
from lrsearch.tracking import local_tracking_uri
from lrsearch.workers import run_study
from tests.test_distributed import ROOT, _load, _study_file, _trial_runs, pg_url

__all__ = ["pg_url"]  # the fixture, imported from test_distributed rather than copied

pytestmark = pytest.mark.postgres
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Room in the budget for the fresh trials the surviving worker runs while the heartbeat has not
# yet seen the lost trial (its grace: 3 s here; a trial: about 2 s), so that its retry runs.
N_RAY = 6


def _create(
    tmp_path: Path,
    url: str,
    name: str,
    *,
    n_trials: int,
    epochs: int,
    n: int,
    tracking: bool = True,
) -> str:
    """Create the study in this process (range test and one trial); its tracking URI.

    Without ``tracking`` (MLflow's first migration and the range test's plots: half the
    time here), its workers record nothing either.
    """
    f = _study_file(tmp_path, name, n_trials=n_trials, epochs=epochs, n=n)
    uri = local_tracking_uri(tmp_path)[0]
    config = load_study_config(str(f), n_trials=1)
    outcome = run_study(
        config,
        storage_url=url,
        tracking_uri=uri,
        tracking=tracking,
        devices="cpu",
        echo=lambda line: None,
    )
    backend_of(storage_of(outcome.handle.study)).engine.dispose()  # type: ignore[attr-defined]
    return uri


@pytest.fixture
def worker_env(tmp_path, monkeypatch):
    """What every launched worker inherits: a short heartbeat, the home, this checkout."""
    monkeypatch.setenv("LRSEARCH_HOME", str(tmp_path))
    monkeypatch.setenv("LRSEARCH_HEARTBEAT_S", "1")
    monkeypatch.setenv("LRSEARCH_GRACE_S", "3")
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("LRSEARCH_STORAGE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


@pytest.fixture
def ray_cluster(worker_env):
    """Call it to start a head (no resources) and two nodes of 2 CPUs and 2 logical GPUs each
    (Ray starts a cluster from the main thread only: the test creates its study meanwhile)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    small = {"object_store_memory": 80 * 2**20}
    started: list[Cluster] = []

    def start():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "num_gpus": 0, "include_dashboard": False, **small},
        )
        started.append(cluster)
        nodes = [cluster.add_node(num_cpus=2, num_gpus=2, **small) for _ in range(2)]
        ray.init(address=cluster.address, log_to_driver=False)
        return cluster, nodes

    try:
        yield start
    finally:
        ray.shutdown()
        for cluster in started:
            cluster.shutdown()


def _running_trial_node(url: str, name: str, client: MlflowClient) -> tuple[int, str, int]:
    """A trial in training while the other worker has just started one: the trial, the Ray node
    and the pid of its worker.

    The other worker is then busy for about a trial's length after the node is lost, longer
    than the heartbeat needs to see the lost trial: its next ask fails that trial and runs its
    retry, rather than fresh trials filling the budget first.
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        running = _load(name, url).get_trials(states=(TrialState.RUNNING,))
        older = [t for t in running if t.last_step and t.user_attrs.get("mlflow_run_id")]
        if older and len(running) == 2 and len(older) == 1:
            (t,) = older
            launcher = client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["lrsearch.launcher"]
            node = launcher.split()[1].removeprefix("node=")
            return t.number, node, int(t.user_attrs["worker"].rpartition(":")[2])
        time.sleep(0.1)
    raise AssertionError("the Ray workers never trained two trials at once")


def test_ray_workers_survive_a_node_removed_mid_trial(tmp_path, pg_url, ray_cluster) -> None:
    from lrsearch.launchers.ray import RayLaunch, launch

    created: list[str] = []
    creating = threading.Thread(
        target=lambda: created.append(
            _create(tmp_path, pg_url, "ray", n_trials=N_RAY, epochs=20, n=4096)
        )
    )
    creating.start()  # the study's range test and first trial while the cluster starts
    cluster, nodes = ray_cluster()
    creating.join(timeout=120)
    uri = created[0]
    client = MlflowClient(uri)
    orders = WorkerOrders(
        "ray",
        n_trials=N_RAY,
        devices="cpu",
        allow_workloads=("tests.*",),
        tracking_uri=uri,
        threads=1,
    )
    lines: list[str] = []
    result: list[object] = []
    placement = RayLaunch(n_workers=2, gpus_per_worker=1, cpus_per_worker=1, spread=True)
    thread = threading.Thread(
        target=lambda: result.append(
            launch(orders, pg_url, placement=placement, echo=lines.append)
        ),
        daemon=True,
    )
    thread.start()
    victim, node_prefix, worker = _running_trial_node(pg_url, "ray", client)
    (lost,) = [n for n in nodes if n.node_id.startswith(node_prefix)]
    actor = _parent(worker)
    cluster.remove_node(lost)
    # A real node loss ends every process on it at once. Here the nodes share one host and a
    # removed node's Ray worker processes may linger for many seconds (the lrsearch worker
    # would go on training and beating): end the actor's process as the node's loss would.
    # Its lrsearch worker dies with it (the parent-death signal), its trial left RUNNING.
    if _parent(worker) == actor:
        os.kill(actor, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _parent(worker) is not None:
        time.sleep(0.05)
    assert _parent(worker) is None, "the lrsearch worker outlived its Ray actor"
    thread.join(timeout=120)
    assert result, f"the launch never ended: {lines}"

    (survivor,) = [n for n in nodes if n is not lost]
    reports = result[0]
    assert [r.exit_code for r in reports] == [0, 0], lines
    # both workers end on the surviving node, each on a GPU of its own
    assert {r.node_id for r in reports} == {survivor.node_id}
    assert sorted(g for r in reports for g in r.gpu_ids) == ["0", "1"]

    study = _load("ray", pg_url)
    assert sum(t.state in FINISHED for t in study.trials) == N_RAY
    assert not study.get_trials(states=(TrialState.RUNNING,))
    dead = study.trials[victim]
    assert dead.state == TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == victim]
    assert retry.state in FINISHED and retry.params == dead.params

    runs = {r.info.run_id: r for r in _trial_runs(client, "ray")}
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    dead_run = runs[dead.user_attrs["mlflow_run_id"]]
    assert dead_run.info.status == "FAILED"
    assert dead_run.data.tags["lrsearch.retried_as"] == str(retry.number)
    on_ray = [r for r in runs.values() if r.data.tags["optuna.trial_number"] != "0"]
    assert len(on_ray) >= 3  # every trial but the study's first (a plain worker's) ran on Ray
    for run in on_ray:  # each worker saw the GPU Ray assigned it, as its launcher tag says
        tags = run.data.tags
        assert tags["lrsearch.cuda_visible_devices"] in ("0", "1")
        assert tags["lrsearch.launcher"].endswith(f"gpus={tags['lrsearch.cuda_visible_devices']}")


def _parent(pid: int) -> int | None:
    """The parent of a live process (None: gone, or a zombie)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else int(fields[1])


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            children.append(int(stat.parent.name))
    return children


def test_slurm_array_requeues_preempted_workers(tmp_path, pg_url, worker_env) -> None:
    """Two array tasks on submitit's LocalExecutor, both preempted mid-trial (submitit's
    USR2, as Slurm signals a job step): each is checkpointed and requeued, its lost trial
    failed by the heartbeat and retried, and the study ends with exactly its n_trials."""
    submitit = pytest.importorskip("submitit")
    from lrsearch.launchers.slurm import SlurmLaunch, submit

    _create(tmp_path, pg_url, "slurm", n_trials=4, epochs=20, n=2048, tracking=False)
    orders = WorkerOrders("slurm", n_trials=4, devices="cpu", allow_workloads=("tests.*",))
    folder = tmp_path / "jobs"
    executor = submitit.LocalExecutor(folder=folder)
    launch = SlurmLaunch(n_workers=2, gpus_per_worker=0, cpus_per_worker=1, timeout_min=5)
    jobs = submit(orders, pg_url, launch, folder=folder, executor=executor)
    assert "LRSEARCH_STORAGE" not in os.environ  # exported for the submission only

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        running = _load("slurm", pg_url).get_trials(states=(TrialState.RUNNING,))
        if len(running) == 2:
            break
        time.sleep(0.2)
    else:
        states = [(t.number, t.state.name, t.user_attrs.get("worker")) for t in running]
        logs = [p.read_text()[-1500:] for p in folder.rglob("*_log.*")]
        raise AssertionError(f"the two array tasks never trained at once: {states} {logs}")
    lost = {t.number for t in running}
    for job in jobs:  # as Slurm signals a preempted job step: submitit's USR2 to each task
        for task in _children(job._process.pid):  # the local job's controller starts its tasks
            os.kill(task, signal.SIGUSR2)
    assert [job.result() for job in jobs] == [0, 0]

    study = _load("slurm", pg_url)
    assert sum(t.state in FINISHED for t in study.trials) == 4
    assert not study.get_trials(states=(TrialState.RUNNING,))
    failed = {
        t.number
        for t in study.trials
        if t.state == TrialState.FAIL and not t.user_attrs.get("surplus")  # (a surplus backs off)
    }
    assert failed and failed <= lost  # what was training when the tasks were preempted
    retried = {t.system_attrs.get("failed_trial") for t in study.trials if t.state in FINISHED}
    assert failed <= retried  # each lost trial was re-run with its parameters
    logs = "".join(p.read_text() for p in folder.rglob("*_log.out"))  # submitit INFO lines
    assert logs.count("Requeued job") == 2
    # the storage URL never went into submitit's files (pickles, scripts, logs)
    for path in folder.rglob("*"):
        if path.is_file():
            assert pg_url.encode() not in path.read_bytes(), path
