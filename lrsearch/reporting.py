"""What a study says about itself: counts, the best trial, its schedule, its history.

Read-only views over a :class:`~lrsearch.study.StudyHandle`, for ``lrsearch status``,
``best``, ``train --from-study``, the closing report and the parent run's plots.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from lrsearch.errors import StorageError
from lrsearch.storage import redact
from lrsearch.study import StudyHandle
from lrsearch.tracking.recorder import LOST_REASON
from lrsearch.trials import (
    DIVERGED,
    FAIL_REASON,
    MLFLOW_RUN_ID,
    counted,
    is_surplus,
    trial_params,  # re-exported for earlier callers: lrsearch.trials owns the replay
    trial_schedule,
)

if TYPE_CHECKING:
    from lrsearch.plots import StudyHistory

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
    for t in counted(trials):  # surplus: backed-off asks of parallel workers, not failures
        counts[t.state.name] += 1
    out: dict[str, Any] = {
        "study": handle.name,
        "storage": redact(handle.storage_url),
        "dashboard": dashboard_storage(handle.storage_url),
        "direction": handle.study.direction.name.lower(),
        "metric": f"val_{handle.metric_name}",
        "trials": counts,
        "diverged": sum(1 for t in trials if DIVERGED in t.user_attrs),
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
            "mlflow_run_id": best.user_attrs.get(MLFLOW_RUN_ID),
        }
    return out


def study_history(handle: StudyHandle) -> StudyHistory:
    """The complete trials and the prior, as the parent run's plots draw them."""
    from lrsearch.plots import StudyHistory

    every = handle.study.get_trials(deepcopy=False)
    trials = _complete(every)
    counts = {state.name: 0 for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    for t in every:
        if t.state.name in counts and not is_surplus(t):
            counts[t.state.name] += 1
    counts["DIVERGED"] = sum(DIVERGED in t.user_attrs for t in every)
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
            ended[t.number] = str(t.user_attrs.get(FAIL_REASON, LOST_REASON))
        elif t.state in (TrialState.COMPLETE, TrialState.PRUNED):
            ended[t.number] = f"trial ended {t.state.name} without closing its run"
    return ended
