"""Storage: worker processes against PostgreSQL with a near-instant objective.

A throwaway database ``lrsearch_bench_<hex>`` is created on the server and dropped afterwards.
For each worker count a fresh study grows to its number of trials; each worker asks,
samples the full lrsearch space (``suggest_params``: every parameter is a storage write),
and tells a value computed from the parameters. The storage is opened the way lrsearch
opens it (``lrsearch.storage.open_storage``: heartbeats, pre-ping). The sampler is Optuna's
``RandomSampler``, so the latency measured is the storage's, not TPE's (which grows with
the study whatever the storage).

Then it counts the storage round trips of one lrsearch trial on the same database
(:mod:`lrsearch.harness.round_trips`: a small study run as ``lrsearch run`` runs it, tracking
off): each is one database transaction, so the count does not depend on load. With the
defaults (digits-mlp, 3 epochs, no pruner) a trial makes 22 (prior-drawn ``max_lr``) or 24
(TPE) of them, Optuna's heartbeat apart:

- ask: look for a queued trial, create the trial, read it back (3);
- ``suggest_params``: one write per sampled parameter (7), and TPE's own read of the trials
  and write of its sample (2, TPE trials only; the prior-drawn ones reuse claim's read);
- ``worker`` (before the budget check, for recovery), claim's read of the trials (the budget,
  shared with the sampler), ``derived`` (before training, for the pruner) (3);
- one report per epoch (3), and whatever the pruner reads (none here);
- ``test_metric`` and ``training`` (``{"device", "seconds"}``) (2);
- tell: Optuna reads the trial, then writes its state and value (2);
- after tell: Optuna reads the trial for the callbacks, and the budget check reads the trials
  (2).

This module stays free of torch: spawned workers import it.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time
import urllib.parse
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from lrsearch.harness.bench._config import BenchConfig

__all__ = ["run_storage"]

BUCKETS = 10
WORKER_TIMEOUT_S = 1800.0


def _urls(server: str, database: str) -> tuple[str, str]:
    """``(libpq URL of the server's admin database, SQLAlchemy URL of database)``."""
    parts = urllib.parse.urlsplit(server)
    admin_db = parts.path.strip("/") or "postgres"
    admin = urllib.parse.urlunsplit(("postgresql", parts.netloc, f"/{admin_db}", parts.query, ""))
    bench = urllib.parse.urlunsplit(
        ("postgresql+psycopg", parts.netloc, f"/{database}", parts.query, "")
    )
    return admin, bench


def _worker(
    url: str, study_name: str, n_trials: int, index: int, barrier: Any, results: Any
) -> None:
    """One worker process: ask, suggest the lrsearch space, tell; time each round trip."""
    import warnings

    import optuna

    from lrsearch.config import SpaceSection
    from lrsearch.prior import LRPrior
    from lrsearch.space import suggest_params
    from lrsearch.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # lrsearch's storage has heartbeats on, for Study.optimize; ask/tell warns about that on
    # every trial. Heartbeats cost nothing here: only optimize's heartbeat thread writes them.
    warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
    study = optuna.load_study(
        study_name=study_name,
        storage=open_storage(url),
        sampler=optuna.samplers.RandomSampler(seed=index),
    )
    space, prior = SpaceSection(), LRPrior(center=1e-2, sigma_decades=1.0, low=1e-5, high=10.0)
    rows: list[tuple[int, float, float]] = []
    barrier.wait()
    start = time.time()
    for _ in range(n_trials):
        began = time.perf_counter()
        trial = study.ask()
        params = suggest_params(trial, space, prior)
        study.tell(trial, -abs(math.log10(params["max_lr"]) + 1.0))
        rows.append((trial.number, time.perf_counter() - began, time.time()))
    results.put((index, start, rows))


def _grow(url: str, name: str, workers: int, n_trials: int) -> dict[str, Any]:
    """Grow one study with ``workers`` processes; throughput and latency as it grows."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    shares = [n_trials // workers + (i < n_trials % workers) for i in range(workers)]
    procs = [
        ctx.Process(target=_worker, args=(url, name, shares[i], i, barrier, results), daemon=True)
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=WORKER_TIMEOUT_S) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    start = min(g[1] for g in got)
    rows = sorted((r for g in got for r in g[2]), key=lambda r: r[2])
    return _summarize(rows, start, workers)


def _summarize(rows: list[tuple[int, float, float]], start: float, workers: int) -> dict[str, Any]:
    """Latency percentiles and throughput, overall and per tenth of the study's growth."""
    latency_ms = np.array([r[1] for r in rows]) * 1000.0
    ends = np.array([r[2] for r in rows])
    size = max(1, len(rows) // BUCKETS)
    buckets = []
    previous_end = start
    for i in range(0, len(rows), size):
        chunk = slice(i, min(i + size, len(rows)))
        span = max(float(ends[chunk][-1] - previous_end), 1e-9)
        buckets.append(
            {
                "trials_done": int(chunk.stop),
                "p50_ms": float(np.percentile(latency_ms[chunk], 50)),
                "p95_ms": float(np.percentile(latency_ms[chunk], 95)),
                "trials_per_s": float((chunk.stop - chunk.start) / span),
            }
        )
        previous_end = float(ends[chunk][-1])
    return {
        "workers": workers,
        "trials": len(rows),
        "trials_per_s": len(rows) / max(float(ends[-1] - start), 1e-9),
        "p50_ms": float(np.percentile(latency_ms, 50)),
        "p95_ms": float(np.percentile(latency_ms, 95)),
        "p95_ms_last_tenth": buckets[-1]["p95_ms"],
        "buckets": buckets,
    }


def _round_trips(url: str) -> dict[str, Any]:
    """Storage round trips per lrsearch trial on ``url``: the most any trial made, and why."""
    from lrsearch.harness.round_trips import MAX_PER_TRIAL, WORKLOAD, measure

    trials = measure(url, workload=WORKLOAD)
    worst = max(trials, key=lambda t: t.total)
    return {
        "workload": WORKLOAD,
        "per_trial": worst.total,
        "max_per_trial": MAX_PER_TRIAL,
        "trials": [t.total for t in trials],
        "by_purpose": worst.by_purpose(),
    }


def run_storage(config: BenchConfig, advance: Callable[[], None]) -> dict[str, Any]:
    """Every worker count of ``storage_workers``; ``{"skipped": why}`` without a server."""
    import optuna
    import psycopg
    from psycopg import sql

    from lrsearch.storage import open_storage, redact

    database = f"lrsearch_bench_{uuid.uuid4().hex[:12]}"
    admin_url, url = _urls(config.postgres, database)
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return {"skipped": f"PostgreSQL at {redact(config.postgres)} is unreachable ({reason})"}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs = []
    try:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        storage = open_storage(url)
        for workers in config.storage_workers:
            name = f"workers-{workers}"
            optuna.create_study(study_name=name, storage=storage, direction="maximize")
            runs.append(_grow(url, name, workers, config.storage_trials_for(workers)))
            advance()
        if isinstance(storage, optuna.storages.RDBStorage):
            storage.engine.dispose()
        round_trips = _round_trips(url)
    finally:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
        )
        admin.close()
    return {
        "server": redact(config.postgres),
        "sampler": "RandomSampler",
        "runs": runs,
        "round_trips": round_trips,
    }
