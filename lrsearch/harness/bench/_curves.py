"""Learning curves of unpruned studies, and pruners replayed on them.

Measuring a pruner by running a study with it costs a study per pruner, and the studies differ
in more than the pruner (the sampler sees different trials). The pruning section instead runs
each (workload, seed) study once **without pruning**, keeping every trial's per-epoch
validation values, its schedule (``derived``: cycle and total steps), its final validation
value and its test metric; then it replays the same trials, in the same order, through each
pruner: a fresh study gets trial after trial, their recorded values reported epoch by epoch,
and stops a trial where the pruner says so. What a pruner saves is the epochs it did not
train; what it loses is the test metric of the trial a validation-based selection picks from
the trials it let finish, against the same selection without pruning.

Paired (every pruner sees the same trials) and cheap (a replay trains nothing), at one cost
stated in the report: with a pruner, a real study's sampler would have seen pruned trials and
sampled a little differently afterwards. Concurrency is not modelled either (trials are
replayed one after the other, as one worker runs them).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrsearch.harness.bench._search import STEPS
from lrsearch.trials import DERIVED, score_on_test

if TYPE_CHECKING:
    from optuna.pruners import BasePruner

    from lrsearch.harness.bench._search import RangeTests, Task

__all__ = ["Curves", "pruning_runs", "record_curves", "record_or_load", "replay"]

Curves = dict[str, Any]
"""One unpruned study: ``{"workload", "seed", "epochs", "direction", "trials": [...]}``; each
trial ``{"number", "params", "derived", "values": [epoch 1, 2, ...], "value", "test_metric",
"diverged"}`` (``value`` None for a trial that diverged)."""


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _trial_record(trial: FrozenTrial, steps_per_epoch: int) -> dict[str, Any]:
    values = [trial.intermediate_values[e] for e in sorted(trial.intermediate_values)]
    return {
        "number": trial.number,
        "params": dict(trial.params),
        "derived": dict(trial.user_attrs.get(DERIVED, {})),
        "values": [_finite(v) for v in values],
        "value": _finite(trial.value) if trial.state == TrialState.COMPLETE else None,
        "test_metric": score_on_test(trial),
        "diverged": trial.state != TrialState.COMPLETE,
        "epochs_trained": trial.user_attrs.get(STEPS, 0) / steps_per_epoch,
    }


def record_curves(
    task: Task,
    seed: int,
    trials: int,
    ranges: RangeTests,
    *,
    advance: Callable[[], None] | None = None,
) -> Curves:
    """Run lrsearch's study (range-test prior, its sampler) on ``task`` with no pruning."""
    from lrsearch.harness.bench._search import _count_steps, _guided, study_config
    from lrsearch.objective import Objective

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = study_config(task, seed * 1000, "none")
    prior = ranges.get(task, seed).prior
    handle = _guided(task, f"curves-{seed}", config, prior, seed)
    done: list[dict[str, Any]] = []

    def keep(study: optuna.Study, trial: FrozenTrial) -> None:
        done.append(_trial_record(trial, task.steps_per_epoch))
        if advance is not None:
            advance()

    objective = Objective(handle, n_trials=trials, observe=_count_steps)
    handle.study.optimize(objective, n_trials=trials, callbacks=[keep])
    return {
        "workload": task.name,
        "seed": seed,
        "epochs": task.epochs,
        "direction": task.workload.metric.direction,
        "metric": task.workload.metric.name,
        "prior": prior.to_dict(),
        "trials": done,
    }


def save(curves: Curves, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(curves, indent=1))


def load(path: Path) -> Curves:
    return json.loads(path.read_text())


def replay(curves: Curves, pruner: BasePruner, *, name: str = "replay") -> dict[str, Any]:
    """Replay ``curves``' trials through ``pruner``: epochs spent, what was pruned, the choice.

    Returns ``{"epochs", "epochs_unpruned", "saved", "pruned": [numbers], "chosen",
    "chosen_unpruned", "test", "test_unpruned", "val", "val_unpruned"}``; ``saved`` is the
    share of trial-epochs not trained.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=f"{curves['workload']}-{curves['seed']}-{name}",
        direction=curves["direction"],
        pruner=pruner,
    )
    epochs = int(curves["epochs"])
    spent = full = 0.0
    pruned: list[int] = []
    finished: list[Mapping[str, Any]] = []
    for record in curves["trials"]:
        values: Sequence[float | None] = record["values"]
        trained = float(record.get("epochs_trained") or len(values))
        full += trained
        trial = study.ask()
        trial.set_user_attr(DERIVED, record["derived"])
        stopped_at = None
        for epoch, value in enumerate(values, start=1):
            trial.report(math.nan if value is None else value, epoch)
            if epoch < epochs and trial.should_prune():
                stopped_at = epoch
                break
        if record["diverged"]:
            spent += trained if stopped_at is None else min(trained, stopped_at)
            study.tell(trial, state=TrialState.PRUNED)
        elif stopped_at is not None:
            spent += stopped_at
            pruned.append(record["number"])
            study.tell(trial, state=TrialState.PRUNED)
        else:
            spent += trained
            study.tell(trial, record["value"])
            finished.append(record)
    all_done = [r for r in curves["trials"] if not r["diverged"]]
    pick = _chosen(finished, curves["direction"])
    pick_all = _chosen(all_done, curves["direction"])
    return {
        "epochs": spent,
        "epochs_unpruned": full,
        "saved": 1.0 - spent / full if full else 0.0,
        "pruned": pruned,
        "chosen": None if pick is None else pick["number"],
        "chosen_unpruned": None if pick_all is None else pick_all["number"],
        "val": None if pick is None else pick["value"],
        "val_unpruned": None if pick_all is None else pick_all["value"],
        "test": None if pick is None else pick["test_metric"],
        "test_unpruned": None if pick_all is None else pick_all["test_metric"],
    }


def _chosen(records: Sequence[Mapping[str, Any]], direction: str) -> Mapping[str, Any] | None:
    from lrsearch.harness.bench._stats import chosen

    return chosen(records, maximize=direction == "maximize")


def top_numbers(curves: Curves, k: int = 3) -> list[int]:
    """The ``k`` trials with the best final validation value without pruning."""
    done = [r for r in curves["trials"] if r["value"] is not None]
    done.sort(key=lambda r: r["value"], reverse=curves["direction"] == "maximize")
    return [r["number"] for r in done[:k]]


def record_or_load(
    task: Task, seed: int, trials: int, ranges: RangeTests, cache: str | None
) -> Curves:
    """The unpruned study of (task, seed): from ``cache`` where it was recorded with the same
    settings, else recorded now (and kept in ``cache`` if given)."""
    path = None if cache is None else Path(cache) / f"{task.name}-seed{seed}.json"
    if path is not None and path.exists():
        curves = load(path)
        if curves["epochs"] == task.epochs and len(curves["trials"]) == trials:
            return curves
    curves = record_curves(task, seed, trials, ranges)
    if path is not None:
        save(curves, path)
    return curves


def pruning_runs(curves: Curves) -> dict[str, dict[str, Any]]:
    """Every pruner arm replayed on ``curves``: what :func:`summarize_pruning` reads.

    Per arm: ``trial_epochs``, ``pruned`` (count), ``best``/``best_val``/``best_test`` of the
    validation-chosen trial, ``top3_pruned`` (a trial in the top 3 without pruning was
    pruned), ``wall_s`` (the replay's, not training).
    """
    import time

    from lrsearch.harness.bench._config import PRUNER_ARMS

    top = set(top_numbers(curves))
    scored_on_test = any(r["test_metric"] is not None for r in curves["trials"])
    out: dict[str, dict[str, Any]] = {}
    for arm in PRUNER_ARMS:
        started = time.perf_counter()
        result = replay(curves, bench_pruner(arm, int(curves["epochs"])), name=arm)
        best = result["test"] if scored_on_test else result["val"]
        out[arm] = {
            "trial_epochs": result["epochs"],
            "pruned": len(result["pruned"]),
            "pruned_trials": result["pruned"],
            "top3_pruned": bool(top & set(result["pruned"])),
            "best": best,
            "best_val": result["val"],
            "best_test": result["test"],
            "chosen_trial": result["chosen"],
            "wall_s": time.perf_counter() - started,
        }
    return out


def bench_pruner(arm: str, epochs: int) -> BasePruner:
    """The pruner of a bench arm: lrsearch's as ``lrsearch run`` builds it from a default
    ``[pruner]`` section, Optuna's with their defaults."""
    from optuna.pruners import (
        HyperbandPruner,
        MedianPruner,
        NopPruner,
        PatientPruner,
        PercentilePruner,
        SuccessiveHalvingPruner,
    )

    from lrsearch.config import PrunerSection
    from lrsearch.pruning import pruner_from_config

    if arm == "plateau":
        return pruner_from_config(PrunerSection(), epochs=epochs)
    if arm == "stall":
        return pruner_from_config(PrunerSection(name="stall"), epochs=epochs)
    if arm == "plateau-bold":
        return pruner_from_config(PrunerSection(confidence=0.75), epochs=epochs)
    if arm == "plateau-by-epoch":
        return pruner_from_config(PrunerSection(), epochs=None)
    if arm == "median":
        return MedianPruner()
    if arm == "percentile":
        return PercentilePruner(25.0)
    if arm == "successive-halving":
        return SuccessiveHalvingPruner()
    if arm == "hyperband":
        return HyperbandPruner(min_resource=1, max_resource=epochs)
    if arm == "patient-median":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return PatientPruner(MedianPruner(), patience=2)
    if arm == "none":
        return NopPruner()
    raise ValueError(f"unknown pruner arm {arm!r}")
