"""One ``lrsearch worker`` process started by a launcher: its command, environment and end.

The storage URL and the tracking URI travel in the worker's environment
(``$LRSEARCH_STORAGE``, ``$LRSEARCH_TRACKING_URI``), never on its command line, where ``ps``
would show a password. The worker dies with the launcher process that started it (Linux's
parent-death signal): when the engine loses a node or kills its task, no orphan keeps training
a trial the heartbeat has already failed and re-queued.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from lrsearch.devices import LAUNCHER_ENV
from lrsearch.errors import ConfigError, StorageError
from lrsearch.storage import GRACE_S, HEARTBEAT_S, backend_of, open_storage, redact

__all__ = [
    "WorkerOrders",
    "check_study",
    "let_the_heartbeat_find_lost_trials",
    "run_worker_process",
]

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class WorkerOrders:
    """What every worker of a launch does: the ``lrsearch worker`` options, as data.

    Attributes:
        study: the study to join (it must exist: ``lrsearch run`` created it).
        n_trials: finished trials to reach (None: the study's own target).
        devices: ``--devices`` of each worker: ``auto`` trains on the GPUs the engine
            assigned (``CUDA_VISIBLE_DEVICES``), else the CPU; ``cpu`` forces the CPU.
        trials_per_device: worker processes per visible device.
        allow_workloads: ``--allow-workload`` patterns (the study's workload must match one
            unless it is a built-in).
        tracking_uri: the MLflow store (None: the study's, where trusted).
        threads: torch CPU threads per worker (None: lrsearch's default).
    """

    study: str
    n_trials: int | None = None
    devices: str = "auto"
    trials_per_device: int = 1
    allow_workloads: tuple[str, ...] = field(default_factory=tuple)
    tracking_uri: str | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if not self.study:
            raise ConfigError("--study is required: the name of a study created by lrsearch run")
        if self.n_trials is not None and self.n_trials < 1:
            raise ConfigError(f"--n-trials must be >= 1, got {self.n_trials}")
        if self.trials_per_device < 1:
            raise ConfigError(f"--trials-per-device must be >= 1, got {self.trials_per_device}")

    def command(self) -> list[str]:
        """The worker's command line (no storage URL, no tracking URI: see the module doc)."""
        command = [sys.executable, "-m", "lrsearch.cli", "worker", "--study", self.study]
        command += ["--devices", self.devices, "--trials-per-device", str(self.trials_per_device)]
        if self.n_trials is not None:
            command += ["--n-trials", str(self.n_trials)]
        for pattern in self.allow_workloads:
            command += ["--allow-workload", pattern]
        return command

    def environment(
        self, storage_url: str, *, launcher: str, visible_gpus: str | None
    ) -> dict[str, str]:
        """The worker's environment: this process's, plus the storage, where it runs, its GPUs."""
        env = {**os.environ, "LRSEARCH_STORAGE": storage_url, LAUNCHER_ENV: launcher}
        if self.tracking_uri is not None:
            env["LRSEARCH_TRACKING_URI"] = self.tracking_uri
        if self.threads is not None:
            env["LRSEARCH_THREADS"] = str(self.threads)
        if visible_gpus is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible_gpus
        return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child, between fork and exec
    """Ask the kernel to SIGKILL this process when its parent dies (Linux only)."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run_worker_process(
    orders: WorkerOrders, storage_url: str, *, launcher: str, visible_gpus: str | None
) -> int:
    """Run one ``lrsearch worker`` to its end; its exit code (0: the study is full).

    Args:
        orders: what the worker does.
        storage_url: the study's storage (passed in the environment).
        launcher: where it runs, in the launcher's words (the MLflow tag
            ``lrsearch.launcher`` of every trial it runs).
        visible_gpus: ``CUDA_VISIBLE_DEVICES`` for the worker (None: as inherited).
    """
    parent = os.getpid()

    def before_exec() -> None:  # pragma: no cover - runs in the child
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    env = orders.environment(storage_url, launcher=launcher, visible_gpus=visible_gpus)
    return subprocess.run(orders.command(), env=env, check=False, preexec_fn=before_exec).returncode


def check_study(study: str, storage_url: str) -> None:
    """Refuse to launch workers for a study that is not in the storage (one line).

    Raises:
        StorageError: no such study, or the storage cannot be opened.
    """
    storage = open_storage(storage_url)
    try:
        names = {s.study_name for s in storage.get_all_studies()}
    finally:
        engine = getattr(backend_of(storage), "engine", None)
        if engine is not None:
            engine.dispose()  # the launcher's own connections: the workers open theirs
    if study not in names:
        raise StorageError(
            f"no study {study!r} in {redact(storage_url)}; create it first with "
            "lrsearch run STUDY.toml --storage URL (--n-trials 1 runs its range test and "
            "one trial), then launch its workers"
        )


def let_the_heartbeat_find_lost_trials() -> float:
    """Wait until a lost predecessor's trial is stale (``GRACE_S`` + ``HEARTBEAT_S``); seconds.

    A worker restarted (Ray) or requeued (Slurm) in place of one that was lost waits this out
    before it asks for a trial: its first ask then fails the lost trial and queues its retry,
    which it runs first (Optuna hands out waiting trials first), instead of starting a fresh
    trial that could fill the budget while the retry waits, never to run.
    """
    wait = GRACE_S + HEARTBEAT_S
    time.sleep(wait)
    return wait
