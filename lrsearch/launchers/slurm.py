"""A study's workers as a Slurm job array, through submitit: one array task per worker.

Each array task is :class:`SlurmWorker`: one plain ``lrsearch worker`` process on the GPUs Slurm
gave the task (``CUDA_VISIBLE_DEVICES``, set by Slurm), joining the study through its storage.
The worker is ``Checkpointable``: when Slurm preempts the task or its time runs out, submitit
calls :meth:`SlurmWorker.checkpoint`, which requeues the same worker; the trial it was training
ends (interrupted, or failed by the heartbeat if the task was killed outright) and a retry or a
fresh trial takes its place, so the study still ends with exactly its ``n_trials``.

The storage URL and the tracking URI are never written into the job's files: the submitting
process puts them in ``$LRSEARCH_STORAGE`` and ``$LRSEARCH_TRACKING_URI`` for the submission,
and ``sbatch`` passes them to the job's environment (its default ``--export=ALL``), as
submitit's local executor does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import submitit

from lrsearch.errors import ConfigError, StorageError
from lrsearch.launchers._process import (
    WorkerOrders,
    check_study,
    let_the_heartbeat_find_lost_trials,
    run_worker_process,
)

__all__ = ["SlurmLaunch", "SlurmWorker", "submit"]

STORAGE_ENV = "LRSEARCH_STORAGE"
TRACKING_ENV = "LRSEARCH_TRACKING_URI"


@dataclass(frozen=True)
class SlurmLaunch:
    """The job array: how many workers and what each array task asks Slurm for.

    Attributes:
        n_workers: array tasks (one worker each).
        gpus_per_worker: GPUs per task (``--gpus-per-node``).
        cpus_per_worker: CPUs per task (``--cpus-per-task``; also the worker's torch threads).
        timeout_min: each task's time limit; a task still running then is requeued.
        partition: the Slurm partition (None: the cluster's default).
        mem_gb: memory per task (None: the partition's default).
        extra: further ``sbatch`` options submitit knows (``slurm_additional_parameters``).
    """

    n_workers: int
    gpus_per_worker: int = 1
    cpus_per_worker: int = 4
    timeout_min: int = 240
    partition: str | None = None
    mem_gb: float | None = None
    extra: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.n_workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.n_workers}")
        if self.gpus_per_worker < 0:
            raise ConfigError(f"--gpus-per-worker must be >= 0, got {self.gpus_per_worker}")
        if self.cpus_per_worker < 1:
            raise ConfigError(f"--cpus-per-worker must be >= 1, got {self.cpus_per_worker}")
        if self.timeout_min < 1:
            raise ConfigError(f"--time-min must be >= 1, got {self.timeout_min}")

    def parameters(self, study: str, *, local: bool) -> dict[str, Any]:
        """submitit's ``update_parameters`` for this launch: AutoExecutor's keys (it drops the
        ``slurm_`` ones off Slurm), or LocalExecutor's subset (``local``)."""
        common: dict[str, Any] = {
            "timeout_min": self.timeout_min,
            "gpus_per_node": self.gpus_per_worker,
            "tasks_per_node": 1,
        }
        if local:
            return common
        slurm = {
            **common,
            "name": f"lrsearch-{study}",
            "cpus_per_task": self.cpus_per_worker,
            "slurm_array_parallelism": self.n_workers,
        }
        if self.partition is not None:
            slurm["slurm_partition"] = self.partition
        if self.mem_gb is not None:
            slurm["mem_gb"] = self.mem_gb
        if self.extra:
            slurm["slurm_additional_parameters"] = dict(self.extra)
        return slurm


class SlurmWorker(submitit.helpers.Checkpointable):
    """One array task: a ``lrsearch worker`` on the task's GPUs; requeued when preempted.

    ``checkpoint`` resubmits this same worker: a requeued task waits until the heartbeat can
    see the trial it lost, then joins the study again, which holds all the state there is.
    """

    def __init__(self, orders: WorkerOrders) -> None:
        self.orders = orders
        self.requeues = 0

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Requeue this same worker (preempted or out of time), counting the requeues."""
        self.requeues += 1
        return super().checkpoint(*args, **kwargs)

    def __call__(self, index: int) -> int:
        if self.requeues:  # preempted mid-trial: the trial it was training goes first
            let_the_heartbeat_find_lost_trials()
        storage_url = os.environ.get(STORAGE_ENV)
        if not storage_url:
            raise StorageError(
                f"${STORAGE_ENV} is not set in the job; submit with lrsearch slurm-workers "
                "--storage URL (or export it before sbatch)"
            )
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID", "local")
        task = os.environ.get("SLURM_ARRAY_TASK_ID", str(index))
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        launcher = f"slurm job={job} task={task} gpus={visible or 'none'}"
        return run_worker_process(self.orders, storage_url, launcher=launcher, visible_gpus=None)


def submit(
    orders: WorkerOrders,
    storage_url: str,
    launch: SlurmLaunch,
    *,
    folder: str | Path,
    executor: submitit.Executor | None = None,
    allow_local: bool = False,
) -> Sequence[submitit.Job[int]]:
    """Submit the study's workers as one job array; the jobs (``job.result()`` waits).

    Args:
        orders: what every worker does (the ``lrsearch worker`` options).
        storage_url: the study's storage (PostgreSQL or ``grpc://``), reachable from the nodes.
        launch: the array and its resources.
        folder: where submitit keeps the jobs' scripts, pickles and logs (shared with the
            nodes); ``%j`` is replaced by the job id.
        executor: an executor to use as it is configured (tests: ``submitit.LocalExecutor``);
            default: Slurm's (``submitit.AutoExecutor``, Slurm if ``sbatch`` is here).
        allow_local: without Slurm, run the tasks as local processes (they end with this
            process, so the caller waits for them) instead of refusing.

    Raises:
        StorageError: the study is not in the storage.
        ConfigError: no Slurm here and not ``allow_local``.
    """
    check_study(orders.study, storage_url)
    if orders.threads is None:
        orders = replace(orders, threads=launch.cpus_per_worker)
    if executor is None:
        executor = submitit.AutoExecutor(folder=folder)
        if executor.cluster != "slurm" and not allow_local:
            raise ConfigError(
                "no Slurm here (sbatch/srun not found); submit from a Slurm login node, or add "
                "--wait to run the workers as local processes on this machine"
            )
    local = isinstance(executor, submitit.LocalExecutor)
    executor.update_parameters(**launch.parameters(orders.study, local=local))
    # The jobs inherit the URLs (which may hold passwords); submitit's pickles never see them.
    secrets = {STORAGE_ENV: storage_url}
    if orders.tracking_uri is not None:
        secrets[TRACKING_ENV] = orders.tracking_uri
        orders = replace(orders, tracking_uri=None)
    with _exported(secrets):
        return executor.map_array(SlurmWorker(orders), range(launch.n_workers))


@contextmanager
def _exported(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment for the block (what ``sbatch`` and local jobs started in
    it inherit), the environment as it was afterwards."""
    before = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
