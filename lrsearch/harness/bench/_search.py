"""Search efficiency: every arm run in-process on in-memory Optuna storage.

The search arms' trials are those of ``lrsearch run``, without MLflow: lrsearch's
:class:`~lrsearch.objective.Objective` samples the space, builds the schedule, trains with the
validation metric reported per epoch to the pruner, and tells the outcome. Compute is counted
in trial-epochs (optimizer steps / steps per epoch), range-test steps included; each trial
keeps the steps it trained as its ``steps`` attribute (the objective's observer sees them).

Every arm selects on validation and is scored on test: at each point the chosen trial is the
one with the best validation value so far, and its score is that trial's ``test_metric``
(the objective's user attribute, or ``TrainResult.test_metric`` for the one-shot recipes),
which neither sampler nor pruner ever sees. A workload without a test split is scored on
validation (``"scored_on"`` in each section says which).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrsearch.config import StudyConfig, parse_study_config
from lrsearch.harness.bench._config import BenchConfig
from lrsearch.harness.bench._stats import chosen
from lrsearch.objective import Objective, Outcome, TrialSpec
from lrsearch.policies import SMITH_DEFAULTS
from lrsearch.prior import LRPrior
from lrsearch.pruning import pruner_from_config
from lrsearch.sampler import sampler_from_config
from lrsearch.space import default_params
from lrsearch.study import StudyHandle
from lrsearch.trials import score_on_test

if TYPE_CHECKING:
    from lrsearch.range_test import RangeTestResult
    from lrsearch.training import EpochInfo, StepInfo, TrainResult
    from lrsearch.workloads import Workload

__all__ = ["Advance", "RangeTests", "Task", "run_search", "section_head"]

PIBO_BETA = 1.0  # the lrsearch-pibo arm's [prior] pibo_beta
WIDE = LRPrior(center=1e-2, sigma_decades=1.0, low=1e-5, high=10.0)  # only its bounds are used
RECIPE_WEIGHT_DECAY = SMITH_DEFAULTS["weight_decay"]
STEPS = "steps"  # trial attribute: optimizer steps the trial trained
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

    @property
    def has_test(self) -> bool:
        """Whether the workload has a test split (its arms are scored on it)."""
        return bool(self.workload.has_test)

    @classmethod
    def load(cls, name: str, epochs: int) -> Task:
        from lrsearch.workloads import get_workload

        return cls(name, get_workload(name), epochs)


class RangeTests:
    """Range tests by (workload, seed, repeats), each run once and shared by every section."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = {k: v for k, v in options.items() if k != "repeats"}
        self.repeats = int(options.get("repeats", 3))
        self._done: dict[tuple[str, int, int, int | None], RangeTestResult] = {}

    def get(
        self,
        task: Task,
        seed: int,
        *,
        repeats: int | None = None,
        budget_steps: int | None = None,
    ) -> RangeTestResult:
        """The range test of ``task`` under ``seed``: ``repeats`` ramps as the options say,
        or (``budget_steps``) sized for a study of that many steps, as ``lrsearch run`` does."""
        from lrsearch.range_test import fit_budget, range_test_workload

        options = dict(self.options)
        if budget_steps is not None and "num_iter" not in options:
            repeats, options["num_iter"] = fit_budget(
                budget_steps, per_epoch=task.steps_per_epoch, repeats=repeats or self.repeats
            )
        key = (task.name, seed, repeats or self.repeats, options.get("num_iter"))
        if key not in self._done:
            self._done[key] = range_test_workload(
                task.workload, seed=seed, repeats=key[2], **options
            )
        return self._done[key]

    @staticmethod
    def trial_epochs(result: RangeTestResult, task: Task) -> float:
        """The test's cost: its optimizer steps over all repeats, in epochs of training."""
        return sum(len(c.lrs) for c in result.curves) / task.steps_per_epoch


def study_config(
    task: Task,
    seed: int,
    pruner: str = "plateau",
    *,
    tails: int = 0,
    prior: Mapping[str, Any] | None = None,
) -> StudyConfig:
    """The config ``lrsearch run`` would use for this workload (defaults everywhere else,
    ``prior`` settings of the ``[prior]`` section).

    Without MLflow, so without the update-to-weight ratio that only its step metrics show.
    """
    return parse_study_config(
        {
            "study": {"name": "bench", "workload": task.name, "epochs": task.epochs, "seed": seed},
            "prior": dict(prior or {}),
            "pruner": {"name": pruner},
            "branching": {"tails": tails},
            "tracking": {"enabled": False, "update_ratio_every": 0},
        }
    )


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


class _StepCount:
    """The objective's observer of one trial: keeps the steps it trained on the trial."""

    attrs: Mapping[str, Any] = {}

    def step(self, info: StepInfo) -> None:
        pass

    def epoch(self, info: EpochInfo) -> None:
        pass

    def end(self, outcome: Outcome) -> Mapping[str, Any]:
        return {STEPS: outcome.steps}


def _count_steps(spec: TrialSpec) -> _StepCount:
    return _StepCount()


class _Curve:
    """Optuna callback: a point ``[trial_epochs, wall_s, val, test]`` per trial; stops at the
    budget.

    ``val`` is the best validation value so far and ``test`` the test metric of the trial
    holding it (:func:`~lrsearch.harness.bench._stats.chosen`). Wall time runs from one
    trial's end to the next's (ask, sample, train, tell), from the callback's creation for
    the first.
    """

    def __init__(self, task: Task, budget: float, spent: float, wall: float) -> None:
        self.task, self.budget = task, budget
        self.spent, self.wall, self.last = spent, wall, time.perf_counter()
        self.best: Mapping[str, Any] | None = None
        self.counts = {"complete": 0, "pruned": 0}
        self.points: list[list[float | None]] = [[spent, wall, None, None]]

    @property
    def best_val(self) -> float | None:
        return None if self.best is None else self.best["value"]

    @property
    def best_test(self) -> float | None:
        return None if self.best is None else self.best["test_metric"]

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        now = time.perf_counter()
        self.wall, self.last = self.wall + now - self.last, now
        self.spent += trial.user_attrs[STEPS] / self.task.steps_per_epoch
        complete = trial.state == TrialState.COMPLETE
        self.counts["complete" if complete else "pruned"] += 1
        if complete:
            candidate = {
                "number": trial.number,
                "value": _finite(trial.value),
                "test_metric": score_on_test(trial),
            }
            self.best = chosen(
                [c for c in (self.best, candidate) if c], maximize=self.task.maximize
            )
        self.points.append([self.spent, self.wall, self.best_val, self.best_test])
        if self.spent >= self.budget:
            study.stop()


def _search(
    handle: StudyHandle,
    task: Task,
    *,
    budget: float,
    max_trials: int,
    spent: float = 0.0,
    wall: float = 0.0,
) -> dict[str, Any]:
    """Run lrsearch's objective while compute is left; a curve point per trial."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curve = _Curve(task, budget, spent, wall)
    if spent < budget:
        objective = Objective(handle, n_trials=max_trials, observe=_count_steps)
        handle.study.optimize(objective, n_trials=max_trials, callbacks=[curve])
    return {
        "trials": sum(curve.counts.values()),
        **curve.counts,
        "trial_epochs": curve.spent,
        "wall_s": curve.wall,
        "range_test_trial_epochs": spent,
        "range_test_s": wall,
        **_bests(task, curve.best_val, curve.best_test),
        "chosen_trial": None if curve.best is None else curve.best["number"],
        "curve": curve.points,
    }


def _bests(task: Task, val: float | None, test: float | None) -> dict[str, float | None]:
    """``best_val`` and ``best_test`` of the chosen trial, and ``best``: the one scored."""
    return {"best": test if task.has_test else val, "best_val": val, "best_test": test}


def _handle(
    task: Task, name: str, config: StudyConfig, prior: LRPrior, sampler: optuna.samplers.BaseSampler
) -> StudyHandle:
    """An in-memory study with ``sampler`` and the config's pruner, no range test.

    Named (``StudyHandle.in_memory`` is not), because HyperbandPruner hashes the name into
    its brackets: a named study prunes the same way every run.
    """
    study = optuna.create_study(
        study_name=f"{task.name}-{name}",
        direction=task.workload.metric.direction,
        sampler=sampler,
        pruner=pruner_from_config(config.pruner, epochs=config.study.epochs),
    )
    return StudyHandle(study, config, prior, {}, "memory", None, None, workload=task.workload)


def _guided(task: Task, name: str, config: StudyConfig, prior: LRPrior, seed: int) -> StudyHandle:
    """The study ``lrsearch run`` would search: PriorGuidedSampler, prior centre first."""
    handle = _handle(task, name, config, prior, sampler_from_config(config, prior, seed=seed))
    handle.study.enqueue_trial(default_params(config.space, prior))  # as open_study does
    return handle


def _lrsearch_arm(
    task: Task,
    seed: int,
    ranges: RangeTests,
    budget: float,
    max_trials: int,
    *,
    tails: int = 0,
    prior: Mapping[str, Any] | None = None,
    shift_decades: float = 0.0,
) -> dict[str, Any]:
    config = study_config(task, seed * 1000, tails=tails, prior=prior)
    test = ranges.get(task, seed, budget_steps=int(budget * task.steps_per_epoch))
    guess = misplaced(test.prior, shift_decades) if shift_decades else test.prior
    handle = _guided(task, f"lrsearch-{seed}", config, guess, seed)
    run = _search(
        handle,
        task,
        budget=budget,
        max_trials=max_trials,
        spent=ranges.trial_epochs(test, task),
        wall=test.seconds,
    )
    return {**run, "prior": guess.to_dict()}


def misplaced(prior: LRPrior, shift_decades: float) -> LRPrior:
    """``prior`` with its centre moved ``shift_decades`` (a wrong range test, say); a bound the
    centre crosses moves with it, so the centre really is where the prior believes."""
    center = prior.center * 10.0**shift_decades
    return LRPrior(
        center=center,
        sigma_decades=prior.sigma_decades,
        low=min(prior.low, center),
        high=max(prior.high, center),
    )


def _wide_arm(task: Task, seed: int, arm: str, budget: float, max_trials: int) -> dict[str, Any]:
    import warnings

    from optuna.samplers import GPSampler, RandomSampler, TPESampler

    pruner = {"tpe-wide": "median", "gp-wide": "median", "lrsearch-noprior": "plateau"}
    config = study_config(task, seed * 1000, pruner.get(arm, "none"))
    sampler: optuna.samplers.BaseSampler
    if arm in ("tpe-wide", "lrsearch-noprior"):  # TPE as inside PriorGuidedSampler, no prior
        sampler = TPESampler(
            n_startup_trials=config.prior.n_startup_trials,
            multivariate=config.sampler.multivariate,
            constant_liar=config.sampler.constant_liar,
            seed=seed,
        )
    elif arm == "gp-wide":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = GPSampler(n_startup_trials=config.prior.n_startup_trials, seed=seed)
    else:
        sampler = RandomSampler(seed=seed)
    handle = _handle(task, f"{arm}-{seed}", config, WIDE, sampler)
    return _search(handle, task, budget=budget, max_trials=max_trials)


def _recipe_arm(task: Task, seed: int, arm: str, ranges: RangeTests) -> dict[str, Any]:
    """One range test (one repeat), its suggestion as max_lr, one trial of the recipe."""
    from lrsearch.harness.bench._recipes import fastai_one_cycle, torch_one_cycle
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
    record = one_trial_record(task, result, ranges.trial_epochs(test, task), test.seconds, wall)
    return {**record, "max_lr": max_lr}


def one_trial_record(
    task: Task, result: TrainResult, range_test_epochs: float, range_test_s: float, wall: float
) -> dict[str, Any]:
    """An arm of one trial (after its range test, if any) as the search keeps a run: that
    trial is chosen whatever its validation value, and scored on its test split."""
    spent = range_test_epochs + result.steps / task.steps_per_epoch
    val = None if result.diverged else _finite(result.val_metric)
    test_metric = None if val is None else _finite(result.test_metric)
    return {
        "trials": 1,
        "complete": int(val is not None),
        "pruned": int(val is None),
        "trial_epochs": spent,
        "wall_s": wall,
        "range_test_trial_epochs": range_test_epochs,
        "range_test_s": range_test_s,
        **_bests(task, val, test_metric),
        "curve": [
            [range_test_epochs, range_test_s, None, None],
            [spent, wall, val, test_metric],
        ],
    }


def section_head(task: Task) -> dict[str, Any]:
    return {
        "epochs": task.epochs,
        "steps_per_epoch": task.steps_per_epoch,
        "metric": task.workload.metric.name,
        "direction": task.workload.metric.direction,
        # what "best" means: the validation-chosen trial's test score, or (no test split)
        # its validation value
        "scored_on": "test" if task.has_test else "validation",
    }


def run_search(
    config: BenchConfig, tasks: dict[str, Task], ranges: RangeTests, advance: Advance
) -> dict[str, Any]:
    """Every arm of ``config.arms`` on every workload and seed: their runs, unsummarised.

    Seeds are the outer loop, so a change in machine load hits every arm alike.
    """
    out: dict[str, Any] = {}
    max_trials = config.trials * config.max_trials_factor
    for name, task in tasks.items():
        runs: dict[str, list[dict[str, Any]]] = {arm: [] for arm in config.arms}
        for seed in range(config.seeds):
            for arm in config.arms:
                if arm in ("lrsearch", "lrsearch-tails", "lrsearch-pibo"):
                    tails = 2 if arm == "lrsearch-tails" else 0
                    prior = {"pibo_beta": PIBO_BETA} if arm == "lrsearch-pibo" else None
                    run = _lrsearch_arm(
                        task, seed, ranges, config.budget, max_trials, tails=tails, prior=prior
                    )
                elif arm in ("tpe-wide", "gp-wide", "random-wide", "lrsearch-noprior"):
                    run = _wide_arm(task, seed, arm, config.budget, max_trials)
                else:
                    run = _recipe_arm(task, seed, arm, ranges)
                runs[arm].append({"seed": seed, **run})
                advance()
        out[name] = {**section_head(task), "budget": config.budget, "runs": runs}
    return out
