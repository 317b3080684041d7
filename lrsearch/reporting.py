"""What a study says about itself: counts, the best trial, its schedule, its history.

Read-only views over a :class:`~lrsearch.study.StudyHandle`, for ``lrsearch status``,
``best``, ``train --from-study``, the closing report and the parent run's plots.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from lrsearch.errors import StorageError
from lrsearch.space import build_schedule, suggest_params
from lrsearch.storage import redact
from lrsearch.study import StudyHandle
from lrsearch.tracking.recorder import LOST_REASON

if TYPE_CHECKING:
    from lrsearch.plots import StudyHistory
    from lrsearch.schedules import Schedule

__all__ = [
    "best_trial",
    "dashboard_storage",
    "ended_trial_reasons",
    "study_history",
    "summary",
    "trial_params",
    "trial_schedule",
]


def best_trial(handle: StudyHandle) -> FrozenTrial:
    """The best COMPLETE trial; StorageError if there is none yet."""
    try:
        return handle.study.best_trial
    except ValueError:
        raise StorageError(
            f"study {handle.name!r} has no completed trial yet; run more trials with "
            f"'lrsearch run' or 'lrsearch worker --study {handle.name}'"
        ) from None


def trial_params(handle: StudyHandle, trial: FrozenTrial) -> dict[str, Any]:
    """Every parameter a finished trial trained with, as its sampling produced them.

    The sampling is replayed on the stored values, so what ``suggest_params`` adds (fixed
    parameters, the only policy, ``momentum_low`` clipped to ``momentum_high``, no momentum
    where the study's optimizer has none) comes back exactly as the trial had it.
    """
    return suggest_params(
        FixedTrial(dict(trial.params)),
        handle.config.space,
        handle.prior,
        momentum=handle.plan.drives_momentum,
    )


def trial_schedule(handle: StudyHandle, trial: FrozenTrial) -> Schedule:
    """Rebuild the schedule a finished trial trained with."""
    plan = handle.plan
    return build_schedule(
        trial_params(handle, trial),
        total_steps=plan.total_steps,
        steps_per_epoch=plan.steps_per_epoch,
    )


def _complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [
        t
        for t in trials
        if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
    ]


def dashboard_storage(url: str) -> str | None:
    """The storage argument ``optuna-dashboard`` takes for ``url`` (password redacted).

    It opens a journal by its file path (``journal:`` is lrsearch's prefix, which it refuses)
    and a database by its URL; a ``grpc://`` proxy it cannot read: None, point it at the
    database the proxy serves.

    Example:
        >>> dashboard_storage("journal:/home/me/.lrsearch/optuna.journal")
        '/home/me/.lrsearch/optuna.journal'
    """
    if url.startswith("grpc://"):
        return None
    return redact(url.removeprefix("journal:"))


def summary(handle: StudyHandle) -> dict[str, Any]:
    """Counts by state, best value and params, running trials: what ``lrsearch status`` shows."""
    trials = handle.study.get_trials(deepcopy=False)
    counts = {state.name: 0 for state in TrialState}
    for t in trials:
        if not t.user_attrs.get("surplus"):  # backed-off asks of parallel workers: not failures
            counts[t.state.name] += 1
    out: dict[str, Any] = {
        "study": handle.name,
        "storage": redact(handle.storage_url),
        "dashboard": dashboard_storage(handle.storage_url),
        "direction": handle.study.direction.name.lower(),
        "metric": f"val_{handle.metric_name}",
        "trials": counts,
        "diverged": sum(1 for t in trials if "diverged" in t.user_attrs),
        "prior": handle.prior.to_dict(),
        "n_trials_target": handle.n_trials_target,
        "running": [
            {"number": t.number, "params": t.params, "last_step": t.last_step}
            for t in trials
            if t.state == TrialState.RUNNING
        ],
        "best": None,
    }
    if _complete(trials):
        best = handle.study.best_trial
        out["best"] = {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
        }
    return out


def study_history(handle: StudyHandle) -> StudyHistory:
    """The complete trials and the prior, as the parent run's plots draw them."""
    from lrsearch.plots import StudyHistory

    every = handle.study.get_trials(deepcopy=False)
    trials = _complete(every)
    counts = {state.name: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in every:
        if t.state.name in counts and not t.user_attrs.get("surplus"):
            counts[t.state.name] += 1
    counts["DIVERGED"] = sum("diverged" in t.user_attrs for t in every)
    return StudyHistory(
        numbers=[t.number for t in trials],
        values=[float(t.value) for t in trials if t.value is not None],
        max_lrs=[float(t.params.get("max_lr", math.nan)) for t in trials],
        maximize=handle.maximize,
        prior=handle.prior,
        importances=_importances(handle.study) if len(trials) >= 3 else {},
        counts=counts,
        schedules=[trial_schedule(handle, t) for t in trials],
        total_steps=handle.plan.total_steps,
        metric=handle.metric_name,
    )


def _importances(study: optuna.Study) -> dict[str, float]:
    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # too few distinct trials for an estimate


def ended_trial_reasons(handle: StudyHandle) -> dict[int, str]:
    """Trials that no worker runs any more (trial number -> why), for closing their records."""
    ended: dict[int, str] = {}
    for t in handle.study.get_trials(deepcopy=False):
        if t.state == TrialState.FAIL:
            ended[t.number] = str(t.user_attrs.get("fail_reason", LOST_REASON))
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            ended[t.number] = f"trial ended {t.state.name} without closing its run"
    return ended
