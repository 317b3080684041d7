"""Every fact about a trial, in one place: its attribute keys, seed, parameters and schedule.

A trial's facts live in its Optuna storage as parameters and user attributes. Whoever writes
or reads one (the objective, the sampler, the pruner, the recorder, ``lrsearch best``,
``train --from-study``, the exporter, the live view) uses the key and the rule written here,
so a rule (a tail trains with its parent's seed; a ``surplus`` trial is no failure) cannot
drift between readers.

Example:
    >>> from optuna.trial import create_trial
    >>> t = create_trial(value=1.0, user_attrs={SURPLUS: True})
    >>> counted([t])
    []
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from optuna.trial import BaseTrial, FixedTrial, FrozenTrial

from lrsearch.space import build_schedule, suggest_params

if TYPE_CHECKING:
    from lrsearch.config import StudyConfig
    from lrsearch.schedules import Schedule
    from lrsearch.study import StudyHandle

__all__ = [
    "BRANCH_OF",
    "DEFAULTS",
    "DERIVED",
    "DIVERGED",
    "DRAW",
    "FAIL_REASON",
    "HEARTBEAT",
    "MLFLOW_RUN_ID",
    "ORIGIN",
    "PRIOR_CENTRE",
    "PRUNED_BECAUSE",
    "RETRY_OF",
    "SURPLUS",
    "TEST_METRIC",
    "TRAINING",
    "WORKER",
    "counted",
    "is_surplus",
    "sample_params",
    "schedule_of",
    "score_on_test",
    "seed_of",
    "trial_params",
    "trial_schedule",
    "trial_seed",
]

# --- user attribute keys ----------------------------------------------------------------------
SURPLUS = "surplus"
"""A trial that backed off without training (the study was full, or Ctrl-C came first)."""
WORKER = "worker"
"""``host:pid`` of the worker that claimed the trial (a supervisor recovers it by this)."""
DERIVED = "derived"
"""The schedule's derived sizes (``cycle_steps``, ``total_steps``), written before training."""
RETRY_OF = "retry_of"
"""The number of the lost trial this one repeats."""
BRANCH_OF = "branch_of"
"""The number of the trial whose cycle an annihilation tail continues."""
TEST_METRIC = "test_metric"
"""The final model's test metric (reporting only: the search sees validation)."""
TRAINING = "training"
"""``{"device", "seconds"}`` of the trial's training."""
DIVERGED = "diverged"
"""Why a trial diverged (NaN/inf loss); present only on such a trial."""
FAIL_REASON = "fail_reason"
"""Why a trial failed."""
PRUNED_BECAUSE = "pruned_because"
"""The plateau pruner's judgement of a trial it stopped (phase, bound, threshold)."""
MLFLOW_RUN_ID = "mlflow_run_id"
"""The trial's MLflow run."""
HEARTBEAT = "lrsearch.heartbeat"
"""lrsearch's heartbeat of a running trial (``{"trial", "at"}``; :mod:`lrsearch.heartbeat`)."""
DRAW = "lrsearch.draw"
"""How the sampler drew a startup trial's ``max_lr`` (``prior``, ``wide``, ``bracket``)."""
ORIGIN = "lrsearch.origin"
"""Where an enqueued trial came from; :data:`PRIOR_CENTRE` for the prior's centre,
:data:`DEFAULTS` for an LR-free optimizer's published defaults."""
PRIOR_CENTRE = "prior-centre"
DEFAULTS = "defaults"


# --- which trials count ------------------------------------------------------------------------
def is_surplus(trial: FrozenTrial) -> bool:
    """Whether ``trial`` backed off without training: not a result, not a failure."""
    return bool(trial.user_attrs.get(SURPLUS))


def counted(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The trials that count toward a study's results (surplus trials left out)."""
    return [t for t in trials if not is_surplus(t)]


# --- the rules ----------------------------------------------------------------------------------
def trial_seed(config: StudyConfig, number: int) -> int:
    """The seed trial ``number`` trains with (model init and data order)."""
    return config.study.seed + number


def seed_of(config: StudyConfig, trial: BaseTrial | FrozenTrial) -> int:
    """The seed ``trial`` trains with: its own, or for an annihilation tail its parent's
    (a tail is its parent's run with another annihilation)."""
    return trial_seed(config, int(trial.user_attrs.get(BRANCH_OF, trial.number)))


def score_on_test(trial: FrozenTrial) -> float | None:
    """The trial's test metric where it stored a finite one, else None."""
    value = trial.user_attrs.get(TEST_METRIC)
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


# --- a trial's parameters and schedule: sampled, and replayed the same way --------------------
def sample_params(handle: StudyHandle, trial: BaseTrial) -> dict[str, Any]:
    """Every parameter ``trial`` trains with, sampled from the study's space and prior."""
    return suggest_params(
        trial, handle.config.space, handle.prior, momentum=handle.plan.drives_momentum
    )


def schedule_of(handle: StudyHandle, params: Mapping[str, Any]) -> Schedule:
    """The schedule ``params`` describe over the study's steps."""
    plan = handle.plan
    return build_schedule(
        params, total_steps=plan.total_steps, steps_per_epoch=plan.steps_per_epoch
    )


def trial_params(handle: StudyHandle, trial: FrozenTrial) -> dict[str, Any]:
    """Every parameter a finished trial trained with, as its sampling produced them.

    The sampling (:func:`sample_params`) is replayed on the stored values, so what it adds
    (fixed parameters, the only policy, ``momentum_low`` clipped to ``momentum_high``, no
    momentum where the study's optimizer has none) comes back exactly as the trial had it.
    """
    return sample_params(handle, FixedTrial(dict(trial.params)))


def trial_schedule(handle: StudyHandle, trial: FrozenTrial) -> Schedule:
    """Rebuild the schedule a finished trial trained with."""
    return schedule_of(handle, trial_params(handle, trial))
