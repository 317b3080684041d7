"""The storage section's arithmetic: latency summaries per tenth of a study, and the projection.

Pure functions of the measured rows and runs (numpy only): the processes and the database
that produce them are in ``_storage``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["ARMS", "BUCKETS", "project", "server_ms", "summarize"]

BUCKETS = 10
ARMS = ("direct", "proxy")


def summarize(
    rows: list[tuple[int, float, float]], seconds: float, workers: int, n_trials: int
) -> dict[str, Any]:
    """Latency percentiles and throughput, overall and per tenth of the study (by number).

    ``rows`` are ``(trial number, latency s, end time)``; ``seconds`` the time the workers
    spent making them (the fill left out).
    """
    numbers = np.array([r[0] for r in rows])
    latency_ms = np.array([r[1] for r in rows]) * 1000.0
    ends = np.array([r[2] for r in rows])
    tenth = max(1, n_trials // BUCKETS)
    buckets = []
    for i in range(BUCKETS):
        low = i * tenth
        high = n_trials if i == BUCKETS - 1 else (i + 1) * tenth
        mask = (numbers >= low) & (numbers < high)
        if not mask.any():
            continue
        span = float(ends[mask].max() - (ends[mask] - latency_ms[mask] / 1000.0).min())
        buckets.append(
            {
                "trials_done": int(high),
                "trials": int(mask.sum()),
                "p50_ms": float(np.percentile(latency_ms[mask], 50)),
                "p95_ms": float(np.percentile(latency_ms[mask], 95)),
                "trials_per_s": float(mask.sum() / max(span, 1e-9)),
            }
        )

    def p95(mask: Any) -> float | None:
        return float(np.percentile(latency_ms[mask], 95)) if mask.any() else None

    return {
        "workers": workers,
        "trials": n_trials,
        "trials_per_s": len(rows) / max(seconds, 1e-9),
        "mean_ms": float(latency_ms.mean()),
        "p50_ms": float(np.percentile(latency_ms, 50)),
        "p95_ms": float(np.percentile(latency_ms, 95)),
        "p95_ms_first_tenth": p95(numbers < tenth),
        "p95_ms_last_tenth": p95(numbers >= n_trials - tenth),
        "buckets": buckets,
    }


def project(runs: list[dict[str, Any]], cores: int | None) -> dict[str, Any]:
    """A projection, not a measurement: the most workers on a machine with cores to spare.

    Per arm, from two measured runs: the 1-worker run (``L1``: its mean latency, with p50 and
    p95) and the run of the most workers ``W``. Per trial, the workers' CPU time ``c`` and the
    server's ``s`` (PostgreSQL's, plus the proxy's) are measured in each. The 1-worker
    latency splits into ``c1 + s1 + w``: ``w`` is the time a trial waits on neither (commit
    flushes, the network, the scheduler). With a core for every worker and ``k`` for the
    server, no trial queues for a CPU, so a trial of ``W`` workers takes ``cW + sW + w``
    (per-trial CPU as measured with ``W`` workers: lock waits and cache misses included), and
    throughput is ``W / (cW + sW + w)``; except through the proxy, which is one Python process:
    its Python code runs on one core at a time (the GIL), so it serves at most
    ``1 / pW`` trials/s (``pW``: its CPU time per trial) however many cores there are, and
    where that is less, throughput is that cap and a trial takes ``W / cap`` (the ``W``
    workers queue at the proxy). Projected p50 and p95 are the 1-worker ones times (the
    projected time per trial) / ``L1``; the server keeps throughput x ``sW`` cores busy
    (PostgreSQL alone saturates at ``1 / pgW`` trials/s per core). Not modelled: contention
    on the database's locks beyond what ``W`` workers already showed here (creating a trial
    locks the study's row), and a faster or slower disk. ``cpu_bound_trials_per_s`` is this
    machine's ceiling, ``cores / (cW + sW)``, to hold against the measured throughput.
    """
    out: dict[str, Any] = {}
    for arm in ARMS:
        mine = [r for r in runs if r.get("arm", "direct") == arm]
        one = next((r for r in mine if r["workers"] == 1), None)
        if one is None or not mine:
            continue
        most = max(mine, key=lambda r: (r["workers"], r["trials"]))
        s1, sw = server_ms(one), server_ms(most)
        if s1 is None or sw is None:
            continue
        c1, cw = one["client_cpu_ms_per_trial"], most["client_cpu_ms_per_trial"]
        wait = max(0.0, one["mean_ms"] - c1 - s1)
        workers = most["workers"]
        throughput = workers * 1000.0 / (cw + sw + wait)
        proxy_ms = most.get("proxy_cpu_ms_per_trial")
        cap = 1000.0 / proxy_ms if proxy_ms else None
        bound = "a core per worker and enough for the server"
        if cap is not None and cap < throughput:
            throughput, bound = cap, "the proxy process (one core at a time: Python's GIL)"
        scale = workers * 1000.0 / throughput / one["mean_ms"]
        pg = most["postgres_cpu_ms_per_trial"]
        out[arm] = {
            "workers": workers,
            "client_cpu_ms": cw,
            "server_cpu_ms": sw,
            "wait_ms": wait,
            "p50_ms": one["p50_ms"] * scale,
            "p95_ms": one["p95_ms"] * scale,
            "trials_per_s": throughput,
            "bound": bound,
            "proxy_trials_per_s_cap": cap,
            "server_cores": throughput * sw / 1000.0,
            "trials_per_s_per_postgres_core": 1000.0 / pg if pg else None,
            "cpu_bound_trials_per_s": (cores or 1) * 1000.0 / (cw + sw),
            "measured_trials_per_s": most["trials_per_s"],
        }
    return out


def server_ms(run: dict[str, Any]) -> float | None:
    pg = run.get("postgres_cpu_ms_per_trial")
    if pg is None:
        return None
    return pg + (run.get("proxy_cpu_ms_per_trial") or 0.0)
