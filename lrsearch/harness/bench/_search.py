"""Search efficiency and pruning: every arm run in-process on in-memory Optuna storage.

Trials mirror :func:`lrsearch.study.make_objective` without MLflow: the same space, the same
schedule, ``train`` reporting the validation metric per epoch to the pruner, a diverged or
stopped trial told PRUNED, a finished one told its last epoch's metric. Compute is counted
in trial-epochs (optimizer steps / steps per epoch), range-test steps included.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from lrsearch.bench._config import PRUNER_ARMS, BenchConfig
from lrsearch.config import StudyConfig, parse_study_config
from lrsearch.policies import SMITH_DEFAULTS
from lrsearch.prior import LRPrior
from lrsearch.space import build_schedule, default_params, suggest_params
from lrsearch.study import _pruner, _sampler  # the very objects `lrsearch run` builds

if TYPE_CHECKING:
    from lrsearch.range_test import RangeTestResult
    from lrsearch.workloads import Workload

__all__ = ["RangeTests", "Task", "run_pruning", "run_search"]

WIDE = LRPrior(center=1e-2, sigma_decades=1.0, low=1e-5, high=10.0)  # only its bounds are used
RECIPE_WEIGHT_DECAY = SMITH_DEFAULTS["weight_decay"]
Advance = Callable[[], None]


@dataclass(frozen=True)
class Task:
    """One workload as the benchmark trains it."""

    name: str
    workload: Workload
    epochs: int

    @property
    def steps_per_epoch(self) -> int:
        return self.workload.steps_per_epoch()

    @property
    def maximize(self) -> bool:
        return self.workload.metric.direction == "maximize"

    @classmethod
    def load(cls, name: str, epochs: int) -> Task:
        from lrsearch.workloads import get_workload

        return cls(name, get_workload(name), epochs)


class RangeTests:
    """Range tests by (workload, seed, repeats), each run once and shared by every section."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = {k: v for k, v in options.items() if k != "repeats"}
        self.repeats = int(options.get("repeats", 3))
        self._done: dict[tuple[str, int, int], RangeTestResult] = {}

    def get(self, task: Task, seed: int, *, repeats: int | None = None) -> RangeTestResult:
        from lrsearch.range_test import range_test_workload

        key = (task.name, seed, repeats or self.repeats)
        if key not in self._done:
            self._done[key] = range_test_workload(
                task.workload, seed=seed, repeats=key[2], **self.options
            )
        return self._done[key]

    @staticmethod
    def trial_epochs(result: RangeTestResult, task: Task) -> float:
        """The test's cost: its optimizer steps over all repeats, in epochs of training."""
        return sum(len(c.lrs) for c in result.curves) / task.steps_per_epoch


def study_config(task: Task, seed: int, pruner: str = "plateau") -> StudyConfig:
    """The config ``lrsearch run`` would use for this workload (defaults everywhere else)."""
    return parse_study_config(
        {
            "study": {"name": "bench", "workload": task.name, "epochs": task.epochs, "seed": seed},
            "pruner": {"name": pruner},
        }
    )


def _better(best: float | None, value: float, maximize: bool) -> float:
    if best is None:
        return value
    return max(best, value) if maximize else min(best, value)


def _run_trial(
    study: optuna.Study, task: Task, config: StudyConfig, prior: LRPrior
) -> tuple[TrialState, float | None, float]:
    """Ask, train, tell: the state, the value of a complete trial, the trial-epochs spent."""
    from lrsearch.training import train

    trial = study.ask()
    params = suggest_params(trial, config.space, prior)
    total = task.epochs * task.steps_per_epoch
    schedule = build_schedule(params, total_steps=total, steps_per_epoch=task.steps_per_epoch)

    def epoch_done(info: Any) -> bool:
        trial.report(info.val_metric, info.epoch)
        return trial.should_prune()

    result = train(
        task.workload,
        schedule,
        epochs=task.epochs,
        batch_size=config.study.batch_size,
        weight_decay=params["weight_decay"],
        seed=config.study.seed + trial.number,
        on_epoch=epoch_done,
    )
    spent = result.steps / task.steps_per_epoch
    if result.diverged or result.stopped:
        study.tell(trial, state=TrialState.PRUNED)
        return TrialState.PRUNED, None, spent
    study.tell(trial, result.val_metric)
    return TrialState.COMPLETE, float(result.val_metric), spent


def _search(
    task: Task,
    config: StudyConfig,
    study: optuna.Study,
    prior: LRPrior,
    *,
    budget: float,
    max_trials: int,
    spent: float = 0.0,
    wall: float = 0.0,
) -> dict[str, Any]:
    """Run trials while compute is left; a curve point ``[trial_epochs, wall_s, best]`` each."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start_spent, start_wall = spent, wall
    best: float | None = None
    curve: list[list[float | None]] = [[spent, wall, None]]
    counts = {"complete": 0, "pruned": 0}
    while spent < budget and sum(counts.values()) < max_trials:
        started = time.perf_counter()
        state, value, cost = _run_trial(study, task, config, prior)
        wall += time.perf_counter() - started
        spent += cost
        counts["complete" if state == TrialState.COMPLETE else "pruned"] += 1
        if value is not None and math.isfinite(value):
            best = _better(best, value, task.maximize)
        curve.append([spent, wall, best])
    return {
        "trials": sum(counts.values()),
        **counts,
        "trial_epochs": spent,
        "wall_s": wall,
        "range_test_trial_epochs": start_spent,
        "range_test_s": start_wall,
        "best": best,
        "curve": curve,
    }


def _study(task: Task, name: str, sampler: Any, pruner: Any) -> optuna.Study:
    """An in-memory study. Named, because HyperbandPruner hashes the name into its brackets."""
    return optuna.create_study(
        study_name=f"{task.name}-{name}",
        direction=task.workload.metric.direction,
        sampler=sampler,
        pruner=pruner,
    )


def _lrsearch_arm(
    task: Task, seed: int, ranges: RangeTests, budget: float, max_trials: int
) -> dict[str, Any]:
    config = study_config(task, seed * 1000)
    test = ranges.get(task, seed)
    prior = test.prior
    study = _study(task, f"lrsearch-{seed}", _sampler(config, prior, seed), _pruner(config))
    study.enqueue_trial(default_params(config.space, prior))  # as open_study does
    run = _search(
        task,
        config,
        study,
        prior,
        budget=budget,
        max_trials=max_trials,
        spent=ranges.trial_epochs(test, task),
        wall=test.seconds,
    )
    return {**run, "prior": prior.to_dict()}


def _wide_arm(task: Task, seed: int, arm: str, budget: float, max_trials: int) -> dict[str, Any]:
    from optuna.samplers import RandomSampler, TPESampler

    config = study_config(task, seed * 1000, "median" if arm == "tpe-wide" else "none")
    sampler: optuna.samplers.BaseSampler
    if arm == "tpe-wide":  # TPE as inside PriorGuidedSampler, without the prior
        sampler = TPESampler(
            n_startup_trials=config.prior.n_startup_trials,
            multivariate=config.sampler.multivariate,
            constant_liar=config.sampler.constant_liar,
            seed=seed,
        )
    else:
        sampler = RandomSampler(seed=seed)
    study = _study(task, f"{arm}-{seed}", sampler, _pruner(config))
    return _search(task, config, study, WIDE, budget=budget, max_trials=max_trials)


def _recipe_arm(task: Task, seed: int, arm: str, ranges: RangeTests) -> dict[str, Any]:
    """One range test (one repeat), its suggestion as max_lr, one trial of the recipe."""
    from lrsearch.bench._recipes import fastai_one_cycle, torch_one_cycle
    from lrsearch.training import train

    test = ranges.get(task, seed, repeats=1)
    suggestion = "valley" if arm == "fastai-valley" else "steep"
    max_lr = test.summary[suggestion].median
    make = fastai_one_cycle if arm == "fastai-valley" else torch_one_cycle
    schedule = make(max_lr, task.epochs * task.steps_per_epoch)
    started = time.perf_counter()
    result = train(
        task.workload,
        schedule,
        epochs=task.epochs,
        weight_decay=RECIPE_WEIGHT_DECAY,
        seed=seed * 1000,
    )
    wall = test.seconds + time.perf_counter() - started
    test_cost = ranges.trial_epochs(test, task)
    spent = test_cost + result.steps / task.steps_per_epoch
    best = None if result.diverged else float(result.val_metric)
    return {
        "trials": 1,
        "complete": int(best is not None),
        "pruned": int(best is None),
        "trial_epochs": spent,
        "wall_s": wall,
        "range_test_trial_epochs": test_cost,
        "range_test_s": test.seconds,
        "best": best,
        "max_lr": max_lr,
        "curve": [[test_cost, test.seconds, None], [spent, wall, best]],
    }


def _section_head(task: Task) -> dict[str, Any]:
    return {
        "epochs": task.epochs,
        "steps_per_epoch": task.steps_per_epoch,
        "metric": task.workload.metric.name,
        "direction": task.workload.metric.direction,
    }


def run_search(
    config: BenchConfig, tasks: dict[str, Task], ranges: RangeTests, advance: Advance
) -> dict[str, Any]:
    """Every arm of :data:`ARMS` on every workload and seed: their runs, unsummarised.

    Seeds are the outer loop, so a change in machine load hits every arm alike.
    """
    from lrsearch.bench._config import ARMS

    out: dict[str, Any] = {}
    max_trials = config.trials * config.max_trials_factor
    for name, task in tasks.items():
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
        for seed in range(config.seeds):
            for arm in ARMS:
                if arm == "lrsearch":
                    run = _lrsearch_arm(task, seed, ranges, config.budget, max_trials)
                elif arm in ("tpe-wide", "random-wide"):
                    run = _wide_arm(task, seed, arm, config.budget, max_trials)
                else:
                    run = _recipe_arm(task, seed, arm, ranges)
                runs[arm].append({"seed": seed, **run})
                advance()
        out[name] = {**_section_head(task), "budget": config.budget, "runs": runs}
    return out


def run_pruning(
    config: BenchConfig, tasks: dict[str, Task], ranges: RangeTests, advance: Advance
) -> dict[str, Any]:
    """PriorGuidedSampler with each pruner of :data:`PRUNER_ARMS`, ``trials`` trials per study.

    The range test is the lrsearch arm's and is not counted here: the section compares
    what the trials spend.
    """
    out: dict[str, Any] = {}
    for name, task in tasks.items():
        runs: dict[str, list[dict[str, Any]]] = {p: [] for p in PRUNER_ARMS}
        for seed in range(config.seeds):
            prior = ranges.get(task, seed).prior
            for pruner in PRUNER_ARMS:
                cfg = study_config(task, seed * 1000, pruner)
                study = _study(task, f"{pruner}-{seed}", _sampler(cfg, prior, seed), _pruner(cfg))
                study.enqueue_trial(default_params(cfg.space, prior))
                run = _search(task, cfg, study, prior, budget=math.inf, max_trials=config.trials)
                runs[pruner].append({"seed": seed, **run})
                advance()
        out[name] = {**_section_head(task), "trials": config.trials, "runs": runs}
    return out
