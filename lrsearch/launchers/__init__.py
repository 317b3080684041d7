"""Launchers: a study's workers placed by the cluster engine users already run.

Each launcher starts plain ``lrsearch worker`` processes (:mod:`._process`) where its engine
places them: Ray actors (:mod:`.ray`), a Slurm job array through submitit (:mod:`.slurm`), a
Kubernetes Indexed Job (``docker/k8s/workers.yaml``). The Optuna storage stays the one
coordination point, so workers of any launcher (and plain ones) join the same study; a worker
lost with its node leaves a RUNNING trial that Optuna's heartbeat (or lrsearch's, on the storage
proxy) fails and re-queues with the same parameters.

``ray`` and ``submitit`` are imported in their own modules only (the ``ray`` and ``slurm``
extras); importing this package needs neither.
"""

from __future__ import annotations

from lrsearch.launchers._process import WorkerOrders, run_worker_process

__all__ = ["WorkerOrders", "run_worker_process"]
