"""Overhead: one trial inside lrsearch vs the bare training loop, same seed, same schedule.

The lrsearch side is the real path of ``lrsearch run``: a study on SQLite (``open_study``),
``run_trials`` with its objective, PriorGuidedSampler and PlateauPruner, once without MLflow
and once recording to a local MLflow store through the study's recorder (``open_recorder``
on a :class:`~lrsearch.tracking.MlflowTracker`).
Every trial trains the prior-centre schedule (enqueued), so a bare ``train`` call with the
same schedule and seed, timed right before or after it, trains exactly the same run; their
final metrics are compared to prove it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from lrsearch.harness.bench._config import BenchConfig
from lrsearch.trials import seed_of

if TYPE_CHECKING:
    from lrsearch.study import StudyHandle
    from lrsearch.tracking.recorder import StudyRecorder

__all__ = ["run_overhead"]

VARIANTS = ("optuna", "optuna+mlflow")


def _quiet(_: str) -> None:
    pass


def _upcoming(handle: StudyHandle) -> FrozenTrial:
    """The WAITING trial the next ``run_trials`` takes: the prior-centre schedule, enqueued."""
    from lrsearch.space import default_params

    waiting = handle.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    if not waiting:
        handle.study.enqueue_trial(default_params(handle.config.space, handle.prior))
        waiting = handle.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return min(waiting, key=lambda t: t.number)


class _Clock:
    """Wall and process CPU seconds of a block (CPU time shrugs off other processes' load)."""

    def __enter__(self) -> _Clock:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def _one_trial(
    handle: StudyHandle, recorder: StudyRecorder | None, number: int
) -> tuple[_Clock, FrozenTrial]:
    """Run one lrsearch trial, the way ``lrsearch run`` does; its times and record."""
    from lrsearch.workers import run_trials

    with _Clock() as clock:
        run_trials(handle, n_trials=handle.n_finished() + 1, recorder=recorder, echo=_quiet)
    return clock, handle.study.get_trials(deepcopy=False)[number]


def _bare(handle: StudyHandle, trial: FrozenTrial, epochs: int) -> tuple[_Clock, float]:
    """The same run through ``train`` alone (no callbacks): its times and final metric."""
    from lrsearch.space import default_params
    from lrsearch.training import train
    from lrsearch.trials import schedule_of, trial_params

    plan = handle.plan
    if trial.params:
        params = trial_params(handle, trial)
    else:  # the enqueued prior centre, not sampled yet: it will train the default parameters
        params = default_params(handle.config.space, handle.prior)
    schedule = schedule_of(handle, params)
    with _Clock() as clock:
        result = train(
            plan.workload,
            schedule,
            epochs=epochs,
            batch_size=handle.config.study.batch_size,
            weight_decay=params["weight_decay"],
            seed=seed_of(handle.config, trial),
        )
    return clock, float(result.val_metric)


def _pair(
    handle: StudyHandle, recorder: StudyRecorder | None, *, bare_first: bool
) -> dict[str, Any]:
    """One lrsearch trial and its bare twin, in alternating order so drift favours neither."""
    upcoming = _upcoming(handle)
    epochs = handle.plan.epochs
    if bare_first:
        bare, metric = _bare(handle, upcoming, epochs)
        ours, trial = _one_trial(handle, recorder, upcoming.number)
    else:
        ours, trial = _one_trial(handle, recorder, upcoming.number)
        bare, metric = _bare(handle, trial, len(trial.intermediate_values) or epochs)
    # A trial the pruner stopped early did not train the same run as a full bare one.
    same = trial.state == TrialState.COMPLETE and metric == trial.value
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "seconds": ours.wall,
        "bare_seconds": bare.wall,
        "ratio": ours.wall / bare.wall,
        "cpu_seconds": ours.cpu,
        "bare_cpu_seconds": bare.cpu,
        "cpu_ratio": ours.cpu / bare.cpu,
        "same_result": same,
    }


def run_overhead(config: BenchConfig, workdir: Path, advance: Callable[[], None]) -> dict[str, Any]:
    """Time ``overhead_repeats`` trial pairs per variant after one untimed warm-up pair."""
    from lrsearch.config import parse_study_config
    from lrsearch.recording import open_recorder
    from lrsearch.study import open_study
    from lrsearch.tracking import MlflowTracker

    cfg = parse_study_config(
        {
            "study": {
                "name": "bench-overhead",
                "workload": config.overhead_workload,
                "epochs": config.overhead_epochs,
                "n_trials": 10_000,
            },
            "range_test": {"repeats": 1},
        }
    )
    handle = open_study(cfg, f"sqlite:///{workdir / 'optuna.db'}", tracking_uri=str(workdir))
    recorder = open_recorder(handle, MlflowTracker(str(workdir)), log_parent=True)
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    for repeat in range(config.overhead_repeats + 1):
        for variant in VARIANTS:
            row = _pair(
                handle,
                recorder if variant == "optuna+mlflow" else None,
                bare_first=bool(repeat % 2),
            )
            rows[variant].append({"repeat": repeat, "warm_up": repeat == 0, **row})
            advance()
    out: dict[str, Any] = {
        "workload": config.overhead_workload,
        "epochs": handle.plan.epochs,
        "steps": handle.plan.total_steps,
        "repeats": config.overhead_repeats,
        "schedule_png_s": _schedule_png_seconds(handle, workdir),
        "variants": {name: _summary(all_rows) for name, all_rows in rows.items()},
    }
    return out


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    # A pair whose trial the pruner stopped did not train the same run as its twin: left out.
    timed = [r for r in rows if not r["warm_up"] and r["same_result"]] or rows[1:]
    return {
        "median_ratio": float(np.median([r["ratio"] for r in timed])),
        "q25_ratio": float(np.percentile([r["ratio"] for r in timed], 25)),
        "q75_ratio": float(np.percentile([r["ratio"] for r in timed], 75)),
        "median_cpu_ratio": float(np.median([r["cpu_ratio"] for r in timed])),
        "median_extra_s": float(np.median([r["seconds"] - r["bare_seconds"] for r in timed])),
        "median_seconds": float(np.median([r["seconds"] for r in timed])),
        "median_bare_seconds": float(np.median([r["bare_seconds"] for r in timed])),
        "warm_up_ratio": rows[0]["ratio"],
        "pairs": len(timed),
        "left_out": sum(not r["warm_up"] for r in rows) - len(timed),
        "same_result": all(r["same_result"] for r in timed),
        "rows": rows,
    }


def _schedule_png_seconds(handle: StudyHandle, workdir: Path) -> float:
    """What rendering one schedule PNG costs (why trial runs no longer get one each)."""
    from lrsearch.plots import schedule_png
    from lrsearch.reporting import trial_schedule

    schedule = trial_schedule(handle, handle.study.get_trials(deepcopy=False)[0])
    times = []
    for _ in range(3):
        started = time.perf_counter()
        schedule_png(schedule, workdir / "schedule.png", n_steps=handle.plan.total_steps)
        times.append(time.perf_counter() - started)
    return float(np.median(times))
