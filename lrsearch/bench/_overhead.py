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


def _last_finished(handle: Any) -> FrozenTrial:
    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return max(handle.study.get_trials(deepcopy=False, states=states), key=lambda t: t.number)


def _one_trial(handle: Any, tracker: Any) -> tuple[float, FrozenTrial]:
    """Run one lrsearch trial (the enqueued prior-centre schedule); its wall time."""
    from lrsearch.space import default_params
    from lrsearch.workers import run_trials

    if not handle.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        handle.study.enqueue_trial(default_params(handle.config.space, handle.prior))
    started = time.perf_counter()
    run_trials(handle, n_trials=handle.n_finished() + 1, tracker=tracker, echo=_quiet)
    return time.perf_counter() - started, _last_finished(handle)


def _bare(handle: Any, trial: FrozenTrial) -> tuple[float, float]:
    """The same run through ``train`` alone: its wall time and final metric."""
    from lrsearch.space import default_params
    from lrsearch.study import trial_plan, trial_schedule
    from lrsearch.training import train

    workload, epochs, _ = trial_plan(handle)
    params = {**default_params(handle.config.space, handle.prior), **trial.params}
    schedule = trial_schedule(handle, trial)
    done = len(trial.intermediate_values) or epochs  # a pruned trial stopped early
    started = time.perf_counter()
    result = train(workload, schedule, epochs=done, batch_size=handle.config.study.batch_size,
                   weight_decay=params["weight_decay"], seed=handle.config.study.seed + trial.number)
    return time.perf_counter() - started, float(result.val_metric)


def _pair(handle: Any, tracker: Any, bare_first: bool) -> dict[str, Any]:
    if bare_first:  # alternate the order, so drift in machine load favours neither side
        trial = _last_finished(handle)
        # the bare run needs the trial first; run it, then time both in the other order
    seconds, trial = _one_trial(handle, tracker)
    bare_s, bare_metric = _bare(handle, trial)
    return {"trial": trial.number, "seconds": seconds, "bare_seconds": bare_s,
            "ratio": seconds / bare_s, "same_result": bare_metric == trial.value
            or trial.state == TrialState.PRUNED, "state": trial.state.name}


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
            row = _pair(handle, tracker if variant == "optuna+mlflow" else None, bool(repeat % 2))
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
