"""A study's workers on a Ray cluster: one actor per GPU slot, restarted when its node dies.

Each worker is a Ray actor that asks for ``gpus_per_worker`` GPUs (a fraction puts several
workers on one GPU) and ``cpus_per_worker`` CPUs; Ray places it. The actor runs one plain
``lrsearch worker`` process on the GPUs Ray assigned it (``ray.get_gpu_ids()`` becomes the
process's ``CUDA_VISIBLE_DEVICES``), which joins the study through its storage, so Ray workers
and workers started by hand share one study.

When a node dies, its actors die with it (and their worker processes with them): Ray restarts
each actor where its resources are free (``max_restarts``) and re-runs its work
(``max_task_retries``); the new worker waits until the heartbeat can see its predecessor's
trial is lost, then joins the study again. The trial the lost worker was
training stays RUNNING until the heartbeat (Optuna's on PostgreSQL, lrsearch's on the storage
proxy) fails it and queues its retry with the same parameters, which the next free worker runs.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import ray

from lrsearch.errors import ConfigError
from lrsearch.launchers._process import (
    WorkerOrders,
    check_study,
    let_the_heartbeat_find_lost_trials,
    run_worker_process,
)
from lrsearch.storage import redact

__all__ = ["RayLaunch", "WorkerReport", "launch"]


@dataclass(frozen=True)
class RayLaunch:
    """How many Ray workers, and what each one asks Ray for.

    Attributes:
        n_workers: actors to start (None: one per GPU slot of the cluster,
            ``GPUs // gpus_per_worker``).
        gpus_per_worker: GPUs per actor; a fraction (0.5) shares a GPU between workers.
        cpus_per_worker: CPUs per actor (also the worker's torch threads).
        max_restarts: how often Ray restarts an actor whose node died (-1: without limit).
        spread: place the actors on as many nodes as possible (Ray's SPREAD strategy).
    """

    n_workers: int | None = None
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    max_restarts: int = 3
    spread: bool = False

    def __post_init__(self) -> None:
        if self.n_workers is not None and self.n_workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {self.n_workers}")
        if self.gpus_per_worker < 0 or (1 < self.gpus_per_worker != int(self.gpus_per_worker)):
            raise ConfigError(
                "--gpus-per-worker must be 0, a fraction of one GPU, or a whole number of "
                f"GPUs, got {self.gpus_per_worker}"
            )
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"--cpus-per-worker must be > 0, got {self.cpus_per_worker}")
        if self.max_restarts < -1:
            raise ConfigError(f"--max-restarts must be >= -1, got {self.max_restarts}")

    def workers_for(self, cluster_gpus: float) -> int:
        """The number of actors on a cluster with ``cluster_gpus`` GPUs."""
        if self.n_workers is not None:
            return self.n_workers
        if self.gpus_per_worker == 0 or cluster_gpus < self.gpus_per_worker:
            raise ConfigError(
                f"--workers is needed: the Ray cluster has {cluster_gpus:g} GPU(s), not one "
                f"slot of --gpus-per-worker {self.gpus_per_worker:g}"
            )
        return int(cluster_gpus // self.gpus_per_worker + 1e-9)


@dataclass(frozen=True)
class WorkerReport:
    """How one Ray worker ended: where it last ran and its ``lrsearch worker`` exit code."""

    index: int
    node_id: str
    gpu_ids: tuple[str, ...]
    exit_code: int | None  # None: its actor was lost for good (restarts used up)
    error: str = ""

    def line(self) -> str:
        where = f"node {self.node_id[:12]}" if self.node_id else "no node"
        gpus = ",".join(self.gpu_ids) or "none"
        if self.exit_code is None:
            return f"ray worker {self.index}: lost ({self.error})"
        return f"ray worker {self.index} ({where}, GPUs {gpus}): exited with {self.exit_code}"


class RayWorker:
    """The Ray actor behind one worker (created through :func:`launch`)."""

    def __init__(self, index: int) -> None:
        self.index = index

    def run(self, orders: WorkerOrders, storage_url: str) -> WorkerReport:
        """Run one ``lrsearch worker`` on this actor's GPUs until the study is full."""
        context = ray.get_runtime_context()
        with warnings.catch_warnings():  # Ray flags its own use of a deprecated property here
            warnings.simplefilter("ignore", DeprecationWarning)
            restarted = context.was_current_actor_reconstructed
        if restarted:  # its node died: the trial it was training goes first
            let_the_heartbeat_find_lost_trials()
        node = context.get_node_id()
        gpu_ids = tuple(str(g) for g in ray.get_gpu_ids())
        visible = ",".join(gpu_ids)
        launcher = f"ray node={node[:12]} worker={self.index} gpus={visible or 'none'}"
        code = run_worker_process(orders, storage_url, launcher=launcher, visible_gpus=visible)
        return WorkerReport(self.index, node, gpu_ids, code)


def _connect(address: str | None) -> None:
    if ray.is_initialized():
        return  # a driver already connected (``ray job submit``, a notebook, a test)
    ray.init(address=address or "auto", log_to_driver=True)


def launch(
    orders: WorkerOrders,
    storage_url: str,
    *,
    placement: RayLaunch | None = None,
    address: str | None = None,
    echo: Callable[[str], None] = print,
) -> list[WorkerReport]:
    """Start the study's workers on the Ray cluster at ``address``; wait for them to end.

    Args:
        orders: what every worker does (the ``lrsearch worker`` options).
        storage_url: the study's storage: PostgreSQL or ``grpc://`` (the storage proxy);
            every node must reach it.
        placement: workers and their resources (default: one per GPU).
        address: the Ray cluster (default: ``auto``, the one this host belongs to, or
            ``$RAY_ADDRESS``, as ``ray job submit`` sets it).
        echo: where progress lines go.

    Returns:
        One report per worker, in order.

    Raises:
        StorageError: the study is not in the storage.
        ConfigError: no GPU slot for ``--workers`` to default to.
    """
    placement = placement or RayLaunch()
    check_study(orders.study, storage_url)
    _connect(address)
    n = placement.workers_for(float(ray.cluster_resources().get("GPU", 0)))
    options: dict[str, Any] = {
        "num_gpus": placement.gpus_per_worker,
        "num_cpus": placement.cpus_per_worker,
        "max_restarts": placement.max_restarts,
        "max_task_retries": placement.max_restarts,
    }
    if placement.spread:
        options["scheduling_strategy"] = "SPREAD"
    if orders.threads is None:
        orders = _with_threads(orders, placement.cpus_per_worker)
    actor: Any = ray.remote(RayWorker).options(**options)  # Ray's stubs know no actor class
    actors: list[Any] = [actor.remote(i) for i in range(n)]
    pending = {a.run.remote(orders, storage_url): i for i, a in enumerate(actors)}
    echo(
        f"{n} Ray worker(s) for study {orders.study!r}: {placement.gpus_per_worker:g} GPU(s) "
        f"and {placement.cpus_per_worker:g} CPU(s) each, storage {redact(storage_url)}"
    )
    reports = _collect(pending, echo)
    for a in actors:
        ray.kill(a, no_restart=True)
    return [reports[i] for i in range(n)]


def _with_threads(orders: WorkerOrders, cpus: float) -> WorkerOrders:
    return replace(orders, threads=max(1, int(cpus)))


def _collect(pending: dict[Any, int], echo: Callable[[str], None]) -> dict[int, WorkerReport]:
    """Wait for every worker; a worker lost for good is reported, not raised."""
    reports: dict[int, WorkerReport] = {}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(done[0])
        try:
            report = ray.get(done[0])
        except ray.exceptions.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            report = WorkerReport(index, "", (), None, error=f"{type(exc).__name__}: {first}")
        reports[index] = report
        echo(report.line())
    return reports
