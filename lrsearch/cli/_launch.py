"""Launcher commands: a study's workers on Ray (``ray-workers``) or Slurm (``slurm-workers``).

Kubernetes needs no command: ``docker/k8s/workers.yaml`` runs ``lrsearch worker`` in an Indexed
Job (docs/cluster.md).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import click

from lrsearch.cli._common import allow_workload_option, cli, positive
from lrsearch.cli._study import _say, storage_option, study_option
from lrsearch.errors import ConfigError, LrsearchError


def _needs(module: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{module} is not installed; pip install 'lrsearch[{extra}]'")


def _cluster_storage(url: str | None) -> str:
    """The storage every node reaches: given, or $LRSEARCH_STORAGE (no local default)."""
    url = url or os.environ.get("LRSEARCH_STORAGE")
    if not url:
        raise ConfigError(
            "--storage is required: a storage every node reaches, postgresql://... or "
            "grpc://host:port (lrsearch storage-proxy), or set $LRSEARCH_STORAGE"
        )
    return url


def worker_options(f: Any) -> Any:
    """What each launched ``lrsearch worker`` does (the options of ``lrsearch worker``)."""
    f = click.option(
        "--tracking-uri",
        envvar="LRSEARCH_TRACKING_URI",
        default=None,
        help="MLflow store the workers record to ($LRSEARCH_TRACKING_URI; default: the "
        "study's, if it is a server).",
    )(f)
    f = allow_workload_option(f)
    f = click.option(
        "--trials-per-device",
        type=int,
        default=1,
        show_default=True,
        callback=positive("trials-per-device"),
        help="Worker processes per device inside each launched worker.",
    )(f)
    f = click.option(
        "--devices",
        default="auto",
        show_default=True,
        help="Each worker's --devices: 'auto' (the GPUs its engine assigned, else the CPU) "
        "or 'cpu'.",
    )(f)
    return click.option(
        "--n-trials",
        type=int,
        default=None,
        callback=positive("n-trials"),
        help="Finished trials the study should reach (default: the study's target).",
    )(f)


def _orders(study_name: str, opts: dict[str, Any]) -> Any:
    from lrsearch.launchers import WorkerOrders

    return WorkerOrders(
        study=study_name,
        n_trials=opts["n_trials"],
        devices=opts["devices"],
        trials_per_device=opts["trials_per_device"],
        allow_workloads=tuple(opts["allow_workloads"]),
        tracking_uri=opts["tracking_uri"],
    )


@cli.command("ray-workers")
@study_option(required=True)
@storage_option
@click.option(
    "--address",
    default=None,
    help="Ray cluster address (default: $RAY_ADDRESS, else the cluster of this host).",
)
@click.option(
    "--workers",
    type=int,
    default=None,
    callback=positive("workers"),
    help="Ray workers to start (default: one per GPU slot of the cluster).",
)
@click.option(
    "--gpus-per-worker",
    type=float,
    default=1.0,
    show_default=True,
    help="GPUs each worker asks Ray for; a fraction (0.5) puts several workers on one GPU.",
)
@click.option("--cpus-per-worker", type=float, default=1.0, show_default=True, help="CPUs each.")
@click.option(
    "--max-restarts",
    type=int,
    default=3,
    show_default=True,
    help="How often Ray restarts a worker whose node died (-1: without limit).",
)
@click.option("--spread", is_flag=True, help="Place workers on as many nodes as possible.")
@worker_options
def ray_workers(study_name: str, storage: str | None, **opts: Any) -> None:
    """Run a study's workers on a Ray cluster, one per GPU slot, until the study is full.

    The study must exist (lrsearch run STUDY.toml --storage URL creates it) in a storage every
    node reaches: PostgreSQL or the storage proxy (grpc://). For `ray job submit`:
    ray job submit -- lrsearch ray-workers --study NAME
    """
    _needs("ray", "ray")
    from lrsearch.launchers.ray import RayLaunch, launch

    placement = RayLaunch(
        n_workers=opts["workers"],
        gpus_per_worker=opts["gpus_per_worker"],
        cpus_per_worker=opts["cpus_per_worker"],
        max_restarts=opts["max_restarts"],
        spread=opts["spread"],
    )
    reports = launch(
        _orders(study_name, opts),
        _cluster_storage(storage),
        placement=placement,
        address=opts["address"],
        echo=_say,
    )
    failed = [r for r in reports if r.exit_code != 0]
    if failed:
        raise LrsearchError(f"{len(failed)} of {len(reports)} Ray workers did not finish cleanly")


@cli.command("slurm-workers")
@study_option(required=True)
@storage_option
@click.option(
    "--workers",
    type=int,
    required=True,
    callback=positive("workers"),
    help="Array tasks to submit (one worker each).",
)
@click.option("--gpus-per-worker", type=int, default=1, show_default=True, help="GPUs per task.")
@click.option("--cpus-per-worker", type=int, default=4, show_default=True, help="CPUs per task.")
@click.option(
    "--time-min",
    type=int,
    default=240,
    show_default=True,
    callback=positive("time-min"),
    help="Time limit of each task in minutes; a task still running then is requeued.",
)
@click.option("--partition", default=None, help="Slurm partition (default: the cluster's).")
@click.option(
    "--folder",
    default="slurm-logs/%j",
    show_default=True,
    help="submitit's folder for scripts and logs, on a file system the nodes share.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Wait for every task to end (without Slurm: run the workers here, as local processes).",
)
@worker_options
def slurm_workers(study_name: str, storage: str | None, **opts: Any) -> None:
    """Submit a study's workers as a Slurm job array (submitit), requeued on preemption.

    The study must exist (lrsearch run STUDY.toml --storage URL creates it) in a storage the
    nodes reach: PostgreSQL or the storage proxy (grpc://).
    """
    _needs("submitit", "slurm")
    from lrsearch.launchers.slurm import SlurmLaunch, submit

    launch = SlurmLaunch(
        n_workers=opts["workers"],
        gpus_per_worker=opts["gpus_per_worker"],
        cpus_per_worker=opts["cpus_per_worker"],
        timeout_min=opts["time_min"],
        partition=opts["partition"],
    )
    jobs = submit(
        _orders(study_name, opts),
        _cluster_storage(storage),
        launch,
        folder=opts["folder"],
        allow_local=opts["wait"],
    )
    _say(f"submitted {len(jobs)} worker(s): job {jobs[0].job_id.split('_')[0]}")
    if opts["wait"]:
        codes = [job.result() for job in jobs]
        bad = [c for c in codes if c != 0]
        if bad:
            raise LrsearchError(f"{len(bad)} of {len(codes)} Slurm workers exited non-zero: {bad}")
