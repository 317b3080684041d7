"""Overhead: one trial inside lrsearch vs the bare training loop, same seed, same schedule.

The lrsearch side is the real path of ``lrsearch run``: a study on SQLite (``open_study``),
``run_trials`` with its objective, PriorGuidedSampler and PlateauPruner, once without MLflow
and once recording to a local MLflow store through :class:`~lrsearch.tracking.MlflowTracker`.
Every trial trains the prior-centre schedule (enqueued), so the bare ``train`` call that
follows it trains exactly the same run; their final metrics are compared to prove it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from lrsearch.bench._config import BenchConfig

__all__ = ["run_overhead"]

VARIANTS = ("optuna", "optuna+mlflow")


def _quiet(_: str) -> None:
    pass


def _upcoming(handle: Any) -> FrozenTrial:
    """The WAITING trial the next ``run_trials`` takes: the prior-centre schedule, enqueued."""
    from lrsearch.space import default_params

    waiting = handle.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not waiting:
        handle.study.enqueue_trial(default_params(handle.config.space, handle.prior))
        waiting = handle.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return min(waiting, key=lambda t: t.number)


def _one_trial(handle: Any, tracker: Any, number: int) -> tuple[float, FrozenTrial]:
    """Run one lrsearch trial, the way ``lrsearch run`` does; its wall time and record."""
    from lrsearch.workers import run_trials

    started = time.perf_counter()
    run_trials(handle, n_trials=handle.n_finished() + 1, tracker=tracker, echo=_quiet)
    seconds = time.perf_counter() - started
    return seconds, handle.study.get_trials(deepcopy=False)[number]


def _bare(handle: Any, trial: FrozenTrial, epochs: int) -> tuple[float, float]:
    """The same run through ``train`` alone (no callbacks): its wall time and final metric."""
    from lrsearch.space import default_params
    from lrsearch.study import trial_plan, trial_schedule
    from lrsearch.training import train

    workload, _, _ = trial_plan(handle)
    params = {**default_params(handle.config.space, handle.prior), **trial.params}
    schedule = trial_schedule(handle, trial)
    started = time.perf_counter()
    result = train(workload, schedule, epochs=epochs, batch_size=handle.config.study.batch_size,
                   weight_decay=params["weight_decay"], seed=handle.config.study.seed + trial.number)
    return time.perf_counter() - started, float(result.val_metric)


def _pair(handle: Any, tracker: Any, *, bare_first: bool) -> dict[str, Any]:
    """One lrsearch trial and its bare twin, in alternating order so drift favours neither."""
    from lrsearch.study import trial_plan

    upcoming = _upcoming(handle)
    _, epochs, _ = trial_plan(handle)
    if bare_first:
        bare_s, metric = _bare(handle, upcoming, epochs)
        seconds, trial = _one_trial(handle, tracker, upcoming.number)
    else:
        seconds, trial = _one_trial(handle, tracker, upcoming.number)
        bare_s, metric = _bare(handle, trial, len(trial.intermediate_values) or epochs)
    # A trial the pruner stopped early did not train the same run as a full bare one.
    same = trial.state == TrialState.COMPLETE and metric == trial.value
    return {"trial": trial.number, "state": trial.state.name, "seconds": seconds,
            "bare_seconds": bare_s, "ratio": seconds / bare_s, "same_result": same}


def run_overhead(config: BenchConfig, workdir: Path, advance: Callable[[], None]) -> dict[str, Any]:
    """Time ``overhead_repeats`` trial pairs per variant after one untimed warm-up pair."""
    from lrsearch.config import parse_study_config
    from lrsearch.study import open_study, set_parent_run, trial_plan
    from lrsearch.tracking import MlflowTracker

    cfg = parse_study_config({
        "study": {"name": "bench-overhead", "workload": config.overhead_workload,
                  "epochs": config.overhead_epochs, "n_trials": 10_000},
        "range_test": {"repeats": 1},
    })
    handle = open_study(cfg, f"sqlite:///{workdir / 'optuna.db'}", tracking_uri=str(workdir))
    tracker = MlflowTracker(str(workdir))
    set_parent_run(handle, tracker.start_study(handle.name, params={}, tags={}))
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for repeat in range(config.overhead_repeats + 1):
        for variant in VARIANTS:
            row = _pair(handle, tracker if variant == "optuna+mlflow" else None,
                        bare_first=bool(repeat % 2))
            rows[variant].append({"repeat": repeat, "warm_up": repeat == 0, **row})
            advance()
    _, epochs, steps_per_epoch = trial_plan(handle)
    out: dict[str, Any] = {"workload": config.overhead_workload, "epochs": epochs,
                           "steps": epochs * steps_per_epoch, "repeats": config.overhead_repeats,
                           "variants": {}}
    for variant, all_rows in rows.items():
        timed = [r for r in all_rows if not r["warm_up"]]
        out["variants"][variant] = {
            "median_ratio": float(np.median([r["ratio"] for r in timed])),
            "median_seconds": float(np.median([r["seconds"] for r in timed])),
            "median_bare_seconds": float(np.median([r["bare_seconds"] for r in timed])),
            "warm_up_ratio": all_rows[0]["ratio"],
            "same_result": all(r["same_result"] for r in all_rows),
            "rows": all_rows,
        }
    return out
