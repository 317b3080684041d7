"""Overhead: one trial inside lrsearch vs the bare training loop, same seed, same schedule.

The lrsearch side is the real path of ``lrsearch run``: a study on its default embedded storage
(the journal file; ``overhead_storage = "sqlite"`` measures SQLite instead), ``run_trials``
with its objective, PriorGuidedSampler and PlateauPruner, once without MLflow and once
recording to a local MLflow store through the study's recorder (``open_recorder`` on a
:class:`~lrsearch.tracking.MlflowTracker`); and once more, with MLflow, on a workload whose
steps take a few milliseconds (``overhead_fast_workload``), where per-step work shows most.
Every trial trains the prior-centre schedule (enqueued), so a bare ``train`` call with the
same schedule and seed, timed right before or after it, trains exactly the same run; their
final metrics are compared to prove it.

MLflow's writes happen in a writer process (``lrsearch.tracking``), and a trial run's end goes
out in the background while the next trial trains. So a trial's CPU is counted twice: the
training process's own (``cpu_ratio``) and that plus the writer's for the trial's writes,
its run's end included (``total_cpu_ratio``: the writer is drained after the trial, outside
the wall time, which is what the next trial would wait for).
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
FAST = "optuna+mlflow, fast steps"


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


def _writer_cpu(recorder: StudyRecorder | None) -> float:
    """CPU seconds of the MLflow writer process so far, once all handed to it is written."""
    if recorder is None:
        return 0.0
    recorder.tracker.drain()
    seconds = getattr(recorder.tracker, "writer_cpu_seconds", lambda: None)()
    return float(seconds or 0.0)


def _one_trial(
    handle: StudyHandle, recorder: StudyRecorder | None, number: int
) -> tuple[_Clock, float, FrozenTrial]:
    """Run one lrsearch trial, the way ``lrsearch run`` does; its times, the writer process's
    CPU seconds for it, and its record."""
    from lrsearch.workers import run_trials

    before = _writer_cpu(recorder)
    with _Clock() as clock:
        run_trials(handle, n_trials=handle.n_finished() + 1, recorder=recorder, echo=_quiet)
    writer_cpu = _writer_cpu(recorder) - before
    return clock, writer_cpu, handle.study.get_trials(deepcopy=False)[number]


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
        ours, writer_cpu, trial = _one_trial(handle, recorder, upcoming.number)
    else:
        ours, writer_cpu, trial = _one_trial(handle, recorder, upcoming.number)
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
        "writer_cpu_seconds": writer_cpu,
        "total_cpu_ratio": (ours.cpu + writer_cpu) / bare.cpu,
        "same_result": same,
    }


def _open(
    config: BenchConfig, workdir: Path, workload: str, epochs: int
) -> tuple[StudyHandle, StudyRecorder]:
    """A study of ``workload`` on the bench's storage, and its recorder (parent run opened)."""
    from lrsearch.config import parse_study_config
    from lrsearch.recording import open_recorder
    from lrsearch.study import open_study
    from lrsearch.tracking import MlflowTracker

    name = f"bench-overhead-{workload}"
    cfg = parse_study_config(
        {
            "study": {"name": name, "workload": workload, "epochs": epochs, "n_trials": 10_000},
            "range_test": {"repeats": 1},
        }
    )
    if config.overhead_storage == "sqlite":
        url = f"sqlite:///{workdir / 'optuna.db'}"
    else:  # what `lrsearch run` uses by default
        url = f"journal:{workdir / 'optuna.journal'}"
    handle = open_study(cfg, url, tracking_uri=str(workdir))
    return handle, open_recorder(handle, MlflowTracker(str(workdir)), log_parent=True)


def run_overhead(config: BenchConfig, workdir: Path, advance: Callable[[], None]) -> dict[str, Any]:
    """Time ``overhead_repeats`` trial pairs per variant after one untimed warm-up pair.

    The variants take turns within each repeat, so load from other processes on the machine
    falls on all of them alike.
    """
    handle, recorder = _open(config, workdir, config.overhead_workload, config.overhead_epochs)
    studies = {v: (handle, recorder if v == "optuna+mlflow" else None) for v in VARIANTS}
    if config.overhead_fast_workload:
        fast = _open(config, workdir, config.overhead_fast_workload, config.overhead_fast_epochs)
        studies[FAST] = fast
    rows: dict[str, list[dict[str, Any]]] = {v: [] for v in studies}
    for repeat in range(config.overhead_repeats + 1):
        for variant, (study, rec) in studies.items():
            row = _pair(study, rec, bare_first=bool(repeat % 2))
            rows[variant].append({"repeat": repeat, "warm_up": repeat == 0, **row})
            advance()
    summaries = {name: _summary(all_rows) for name, all_rows in rows.items()}
    for name, (study, _) in studies.items():
        step_ms = 1000 * summaries[name]["median_bare_seconds"] / study.plan.total_steps
        summaries[name].update(
            workload=study.plan.workload.name, steps=study.plan.total_steps, step_ms=step_ms
        )
    out: dict[str, Any] = {
        "workload": config.overhead_workload,
        "storage": config.overhead_storage,
        "epochs": handle.plan.epochs,
        "steps": handle.plan.total_steps,
        "repeats": config.overhead_repeats,
        "load_average": _load_average(),
        "schedule_png_s": _schedule_png_seconds(handle, workdir),
        "variants": summaries,
    }
    return out


def _load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages at the end (what else was running)."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    # A pair whose trial the pruner stopped did not train the same run as its twin: left out.
    timed = [r for r in rows if not r["warm_up"] and r["same_result"]] or rows[1:]
    return {
        "median_ratio": float(np.median([r["ratio"] for r in timed])),
        "q25_ratio": float(np.percentile([r["ratio"] for r in timed], 25)),
        "q75_ratio": float(np.percentile([r["ratio"] for r in timed], 75)),
        "median_cpu_ratio": float(np.median([r["cpu_ratio"] for r in timed])),
        "median_total_cpu_ratio": float(
            np.median([r.get("total_cpu_ratio", r["cpu_ratio"]) for r in timed])
        ),
        "median_writer_cpu_s": float(np.median([r.get("writer_cpu_seconds", 0.0) for r in timed])),
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
