"""Overhead: one trial inside lrsearch vs the bare training loop, same seed, same schedule.

The lrsearch side is the real path of ``lrsearch run``: a study on its default embedded storage
(the journal file; ``overhead_storage = "sqlite"`` measures SQLite instead), ``run_trials``
with its objective, PriorGuidedSampler and PlateauPruner, once without MLflow and once
recording to a local MLflow store through the study's recorder (``open_recorder`` on a
:class:`~lrsearch.tracking.MlflowTracker`); and once more, with MLflow, on a workload whose
steps take a few milliseconds (``overhead_fast_workload``), where per-step work shows most.
Every trial trains the prior-centre schedule (enqueued), so a bare ``train`` call with the
same schedule and seed, timed right before or after it, trains exactly the same run. The
PlateauPruner stops most of these trials (their seeds differ), so a pair is compared on the
epochs its trial trained: a COMPLETE trial against the whole bare run, its final metric proving
the same run; a trial pruned after epoch ``k`` against the bare run's first ``k`` epochs, its
validation metric at epoch ``k`` proving it, plus whatever ``train`` does after a stop (a
stopped run's test split is not scored). The bare run notes each epoch's end through an ``on_epoch`` callback; timed after a
pruned trial it stops itself at epoch ``k``, as the pruner stopped the trial.
Medians are over all compared pairs and, for the target (trials of >= 3 s), over the pairs
whose compared bare run took that long (``long``): a trial stopped after a few epochs weighs
the fixed per-trial costs more.

MLflow's writes happen in a writer process (``lrsearch.tracking``), and a trial run's end goes
out in the background while the next trial trains. So a trial's CPU is counted twice: the
training process's own (``cpu_ratio``) and that plus the writer's for the trial's writes,
its run's end included (``total_cpu_ratio``: the writer is drained after the trial, outside
the wall time, which is what the next trial would wait for).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from lrsearch.harness.bench._config import OVERHEAD_TRIAL_S, BenchConfig
from lrsearch.trials import seed_of

if TYPE_CHECKING:
    from lrsearch.study import StudyHandle
    from lrsearch.tracking.recorder import StudyRecorder
    from lrsearch.training import EpochInfo

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
        self.began_wall, self.began_cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_: object) -> None:
        self.wall = time.perf_counter() - self.began_wall
        self.cpu = time.process_time() - self.began_cpu


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


@dataclass
class _Mark:
    """The end of one bare epoch: wall and CPU seconds since the call began, and its metric."""

    wall: float
    cpu: float
    val_metric: float


@dataclass
class _BareRun:
    """A bare ``train`` call: its times, final validation metric and each epoch's end."""

    clock: _Clock
    val_metric: float
    marks: list[_Mark]

    def until(self, epoch: int) -> tuple[float, float]:
        """Wall and CPU seconds of the run to the end of ``epoch``, and what followed where it
        ended there (the test scoring of a whole run; next to nothing after a stop, which
        scores no test split: so a longer run's tail is not counted for an earlier epoch)."""
        mark = self.marks[epoch - 1]
        if epoch < len(self.marks):
            return mark.wall, mark.cpu
        return self.clock.wall, self.clock.cpu


def _bare(handle: StudyHandle, trial: FrozenTrial, *, stop_after: int | None = None) -> _BareRun:
    """The same run through ``train`` alone, stopped after epoch ``stop_after`` (None: all).

    Its only callback notes each epoch's end (two clock reads and a list append: microseconds
    an epoch, against the milliseconds of an epoch's validation).
    """
    from lrsearch.space import default_params
    from lrsearch.training import train
    from lrsearch.trials import schedule_of, trial_params

    plan = handle.plan
    if trial.params:
        params = trial_params(handle, trial)
    else:  # the enqueued prior centre, not sampled yet: it will train the default parameters
        params = default_params(handle.config.space, handle.prior)
    schedule = schedule_of(handle, params)
    ends: list[tuple[float, float, float]] = []

    def mark(info: EpochInfo) -> bool:
        ends.append((time.perf_counter(), time.process_time(), info.val_metric))
        return stop_after is not None and info.epoch >= stop_after

    with _Clock() as clock:
        result = train(
            plan.workload,
            schedule,
            epochs=plan.epochs,
            batch_size=handle.config.study.batch_size,
            weight_decay=params["weight_decay"],
            seed=seed_of(handle.config, trial),
            on_epoch=mark,
        )
    marks = [_Mark(w - clock.began_wall, c - clock.began_cpu, m) for w, c, m in ends]
    return _BareRun(clock, float(result.val_metric), marks)


def _compare(trial: FrozenTrial, bare: _BareRun, epochs: int) -> tuple[float, float, int] | str:
    """The bare run's wall and CPU seconds for the work ``trial`` did, and its epochs; or why
    the two cannot be compared (not proven the same run)."""
    if trial.state == TrialState.COMPLETE:
        if len(bare.marks) != epochs or bare.val_metric != trial.value:
            return "final metric differs"
        return bare.clock.wall, bare.clock.cpu, epochs
    if trial.state != TrialState.PRUNED:
        return f"trial {trial.state.name}"
    if not trial.intermediate_values:
        return "pruned before an epoch"
    k = max(trial.intermediate_values)
    if len(bare.marks) < k or bare.marks[k - 1].val_metric != trial.intermediate_values[k]:
        return "metric at the pruned epoch differs"
    return (*bare.until(k), k)


def _pair(
    handle: StudyHandle, recorder: StudyRecorder | None, *, bare_first: bool
) -> dict[str, Any]:
    """One lrsearch trial and its bare twin, in alternating order so drift favours neither."""
    upcoming = _upcoming(handle)
    epochs = handle.plan.epochs
    if bare_first:
        bare = _bare(handle, upcoming)
        ours, writer_cpu, trial = _one_trial(handle, recorder, upcoming.number)
    else:
        ours, writer_cpu, trial = _one_trial(handle, recorder, upcoming.number)
        pruned = trial.state == TrialState.PRUNED and trial.intermediate_values
        bare = _bare(handle, trial, stop_after=max(trial.intermediate_values) if pruned else None)
    compared = _compare(trial, bare, epochs)
    if isinstance(compared, str):  # not the same run: the whole bare run, for the record
        why, (bare_wall, bare_cpu, trained) = compared, (bare.clock.wall, bare.clock.cpu, None)
    else:
        why, (bare_wall, bare_cpu, trained) = None, compared
    return {
        "trial": trial.number,
        "state": trial.state.name,
        "epochs": trained,
        "seconds": ours.wall,
        "bare_seconds": bare_wall,
        "ratio": ours.wall / bare_wall,
        "cpu_seconds": ours.cpu,
        "bare_cpu_seconds": bare_cpu,
        "cpu_ratio": ours.cpu / bare_cpu,
        "writer_cpu_seconds": writer_cpu,
        "total_cpu_ratio": (ours.cpu + writer_cpu) / bare_cpu,
        "bare_full_seconds": bare.clock.wall if len(bare.marks) == epochs else None,
        "same_result": why is None,
        "left_out": why,
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
        summaries[name].update(
            workload=study.plan.workload.name,
            steps=study.plan.total_steps,
            step_ms=_step_ms(rows[name], study.plan.steps_per_epoch),
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


def _step_ms(rows: list[dict[str, Any]], steps_per_epoch: int) -> float | None:
    """Median milliseconds a bare step takes (its epoch's validation included), over the
    timed pairs proven the same run."""
    per_step = [
        1000 * r["bare_seconds"] / (r["epochs"] * steps_per_epoch)
        for r in rows
        if not r["warm_up"] and r["same_result"] and r.get("epochs")
    ]
    return float(np.median(per_step)) if per_step else None


def _load_average() -> list[float] | None:
    """The machine's 1/5/15-minute load averages at the end (what else was running)."""
    import os

    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the timed pairs proven the same run (None where there are none)."""
    timed = [r for r in rows if not r["warm_up"] and r["same_result"]]
    left_out = [r.get("left_out") or "not the same run" for r in rows[1:] if not r["same_result"]]

    def median(key: str) -> float | None:
        return float(np.median([r[key] for r in timed])) if timed else None

    def quartile(q: float) -> float | None:
        return float(np.percentile([r["ratio"] for r in timed], q)) if timed else None

    extra = [r["seconds"] - r["bare_seconds"] for r in timed]
    return {
        "median_ratio": median("ratio"),
        "q25_ratio": quartile(25),
        "q75_ratio": quartile(75),
        "median_cpu_ratio": median("cpu_ratio"),
        "median_total_cpu_ratio": median("total_cpu_ratio"),
        "median_writer_cpu_s": median("writer_cpu_seconds"),
        "median_extra_s": float(np.median(extra)) if extra else None,
        "median_seconds": median("seconds"),
        "median_bare_seconds": median("bare_seconds"),
        "median_epochs": median("epochs"),
        "warm_up_ratio": rows[0]["ratio"],
        "pairs": len(timed),
        "pruned_pairs": sum(r["state"] == "PRUNED" for r in timed),
        "left_out": len(left_out),
        "left_out_why": {why: left_out.count(why) for why in sorted(set(left_out))},
        "same_result": all(r["same_result"] for r in timed),
        "long": _long(timed),
        "rows": rows,
    }


def _long(timed: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the pairs whose compared bare run took >= ``OVERHEAD_TRIAL_S`` (what the
    target is for; the pruner stops some trials after a few epochs, where the fixed per-trial
    costs weigh more)."""
    long = [r for r in timed if r["bare_seconds"] >= OVERHEAD_TRIAL_S]

    def median(key: str) -> float | None:
        return float(np.median([r[key] for r in long])) if long else None

    return {
        "min_seconds": OVERHEAD_TRIAL_S,
        "pairs": len(long),
        "median_ratio": median("ratio"),
        "median_cpu_ratio": median("cpu_ratio"),
        "median_total_cpu_ratio": median("total_cpu_ratio"),
        "median_bare_seconds": median("bare_seconds"),
        "ci90_ratio": _median_interval([r["ratio"] for r in long]),
        "ci90_total_cpu_ratio": _median_interval([r["total_cpu_ratio"] for r in long]),
    }


def _median_interval(values: list[float], *, draws: int = 2000) -> list[float] | None:
    """A 90% bootstrap interval of the median of ``values`` (how far the noise of a shared
    machine lets the median move: identical runs there differ by 10-20%); None under 3."""
    if len(values) < 3:
        return None
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(np.asarray(values), size=(draws, len(values))), axis=1)
    return [float(np.percentile(medians, 5)), float(np.percentile(medians, 95))]


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
