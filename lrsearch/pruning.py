"""Schedule-aware pruning: stop a trial that has stalled *and* trails the others at its step.

Every trial of an lrsearch study has the same step budget and the same schedule shape, and it
reports its validation metric once per epoch at ``step = epoch`` (1-based). Trials are therefore
compared at the same step, i.e. at the same phase of their learning-rate schedule. A one-cycle
run often stalls (or gets worse) around the LR peak and recovers in annihilation, so stalling
alone is no reason to stop, and neither is trailing alone while the trial still improves:
:class:`PlateauPruner` needs both. A NaN/inf metric stops a trial at once.

Pruners are chosen by name from :data:`PRUNERS` through :func:`make_pruner`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, PercentilePruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from lrsearch.config import PrunerSection

__all__ = ["PRUNERS", "PlateauPruner", "is_stalled", "make_pruner", "pruner_from_config"]

# Trials a running trial is ranked against; see the PlateauPruner docstring for why not RUNNING.
_PEER_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def is_stalled(
    values: Sequence[float], *, patience: int, maximize: bool, min_delta: float = 0.0
) -> bool:
    """Whether the last ``patience`` values failed to improve on everything before them.

    The best of the last ``patience`` values must beat the best of the earlier values by more
    than ``min_delta`` (higher when ``maximize``, lower otherwise), or the curve has stalled.
    NaN and inf are never an improvement and never a baseline.

    Args:
        values: The reported values, oldest first.
        patience: How many of the latest values get the chance to improve; at least 1.
        maximize: Whether higher values are better.
        min_delta: The smallest gain that counts as an improvement; at least 0.

    Returns:
        ``True`` if the curve has stalled. A curve with no more than ``patience`` values, or
        with no finite value before the window, has nothing to stall against: ``False``.

    Example:
        >>> is_stalled([1.0, 0.5, 0.5, 0.5], patience=2, maximize=False)
        True
        >>> is_stalled([1.0, 0.5, 0.5, 0.4], patience=2, maximize=False)
        False
    """
    _check_patience(patience)
    _check_min_delta(min_delta)
    if len(values) <= patience:
        return False
    baseline = _best(values[:-patience], maximize=maximize)
    if baseline is None:
        return False
    recent = _best(values[-patience:], maximize=maximize)
    if recent is None:
        return True
    if maximize:
        return not recent > baseline + min_delta
    return not recent < baseline - min_delta


class PlateauPruner(BasePruner):
    """Prune a trial whose metric has stalled and that trails the other trials at its step.

    At each report the trial is pruned when:

    1. its latest value is NaN or inf -- at once, even in warm-up or before the startup trials;
    2. otherwise never while ``step < n_warmup_steps`` or fewer than ``n_startup_trials`` trials
       are complete;
    3. otherwise iff it has *stalled* (:func:`is_stalled` over its values in step order) *and*
       it *trails*: its best value so far is worse than the ``percentile``-th percentile of the
       other trials' best values up to the same step. As in Optuna's ``PercentilePruner``,
       ``percentile`` is the share kept: 25 keeps trials at least as good as the best quarter,
       100 prunes only a trial worse than all others, 0 only keeps one that matches the best.

    The other trials are the COMPLETE and PRUNED ones that reported at that step (at least
    ``n_min_trials`` of them, else no pruning); those with no finite value up to the step
    (diverged) are left out. Pruned trials count because their values up to the step where
    they stopped are as real as a finished trial's -- same budget, same schedule phase -- and
    ranking only against survivors would make the bar rise as the study prunes more. RUNNING
    trials do not count, as in Optuna's median pruner: which of them have reached a step at a
    given moment depends on worker timing, so the same curve could be kept or pruned depending
    on which workers were mid-epoch, and the decision could not be replayed from the stored
    study; a RUNNING trial may also be a crashed worker's, waiting for its heartbeat to expire.

    Args:
        patience: Reports a trial gets to improve on its earlier best; at least 1.
        min_delta: The smallest gain that counts as an improvement; at least 0.
        percentile: The share of trials kept at a step, in [0, 100].
        n_warmup_steps: No pruning (except NaN/inf) while the latest step is below this;
            reports use 1-based epochs, so 3 first allows pruning at epoch 3.
        n_startup_trials: No pruning (except NaN/inf) until this many trials are complete.
        n_min_trials: Fewest other trials that must have reported at the step to rank against.

    Example:
        >>> import optuna
        >>> study = optuna.create_study(pruner=PlateauPruner(patience=2, n_warmup_steps=3))
    """

    def __init__(
        self,
        *,
        patience: int = 3,
        min_delta: float = 0.0,
        percentile: float = 50.0,
        n_warmup_steps: int = 0,
        n_startup_trials: int = 2,
        n_min_trials: int = 1,
    ) -> None:
        _check_patience(patience)
        _check_min_delta(min_delta)
        if not 0.0 <= percentile <= 100.0:
            raise ValueError(f"percentile must be in [0, 100], got {percentile=}")
        if n_warmup_steps < 0:
            raise ValueError(f"n_warmup_steps must be >= 0, got {n_warmup_steps=}")
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {n_startup_trials=}")
        if n_min_trials < 1:
            raise ValueError(f"n_min_trials must be >= 1, got {n_min_trials=}")
        self._patience = patience
        self._min_delta = min_delta
        self._percentile = percentile
        self._n_warmup_steps = n_warmup_steps
        self._n_startup_trials = n_startup_trials
        self._n_min_trials = n_min_trials

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """Judge the trial at its latest step; see the class docstring for the rule."""
        step = trial.last_step
        if step is None:
            return False
        if not math.isfinite(trial.intermediate_values[step]):
            return True
        if step < self._n_warmup_steps:
            return False
        peers = [
            t
            for t in study.get_trials(deepcopy=False, states=_PEER_STATES)
            if t.number != trial.number
        ]
        n_complete = sum(t.state == TrialState.COMPLETE for t in peers)
        if n_complete < self._n_startup_trials:
            return False
        maximize = study.direction == StudyDirection.MAXIMIZE
        values = [v for _, v in sorted(trial.intermediate_values.items())]
        stalled = is_stalled(
            values, patience=self._patience, maximize=maximize, min_delta=self._min_delta
        )
        return stalled and self._trails(values, peers, step, maximize)

    def _trails(
        self, values: Sequence[float], peers: Iterable[FrozenTrial], step: int, maximize: bool
    ) -> bool:
        best = _best(values, maximize=maximize)
        peer_bests = [b for t in peers if (b := _best_up_to(t, step, maximize)) is not None]
        if best is None or len(peer_bests) < self._n_min_trials:
            return False
        # "Keep the best `percentile` percent": the cut sits that far from the good end.
        q = 100.0 - self._percentile if maximize else self._percentile
        cut = float(np.percentile(peer_bests, q))
        return best < cut if maximize else best > cut


def _best(values: Iterable[float], *, maximize: bool) -> float | None:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    return max(finite) if maximize else min(finite)


def _best_up_to(trial: FrozenTrial, step: int, maximize: bool) -> float | None:
    reported = trial.intermediate_values
    if step not in reported:
        return None
    return _best((v for s, v in reported.items() if s <= step), maximize=maximize)


def _check_patience(patience: int) -> None:
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience=}")


def _check_min_delta(min_delta: float) -> None:
    if not (math.isfinite(min_delta) and min_delta >= 0.0):
        raise ValueError(f"min_delta must be finite and >= 0, got {min_delta=}")


PRUNERS: dict[str, Callable[..., BasePruner]] = {
    "plateau": PlateauPruner,
    "median": MedianPruner,
    "percentile": PercentilePruner,
    "hyperband": HyperbandPruner,
    "none": NopPruner,
}
"""Pruner name -> the class (or factory) that builds it from keyword options."""


def make_pruner(name: str, **options: Any) -> BasePruner:
    """Build the pruner registered under ``name`` from keyword options.

    Args:
        name: A key of :data:`PRUNERS`.
        **options: Keyword arguments of that pruner, e.g. ``patience=2`` for ``"plateau"``.

    Returns:
        The pruner.

    Raises:
        ValueError: ``name`` is not registered (the message lists the valid names), or an
            option has a bad value (the pruner's own message).
        TypeError: An option is unknown to that pruner, or a required one is missing; the
            message names it and lists the valid options.

    Example:
        >>> make_pruner("plateau", patience=2).__class__.__name__
        'PlateauPruner'
    """
    factory = PRUNERS.get(name)
    if factory is None:
        raise ValueError(f"unknown pruner {name!r}; use one of {', '.join(sorted(PRUNERS))}")
    _check_options(name, factory, options)
    return factory(**options)


def _check_options(name: str, factory: Callable[..., Any], options: Mapping[str, Any]) -> None:
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return
    by_keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [p for p in params if p.kind in by_keyword]
    valid = ", ".join(p.name for p in accepted) or "none"
    unknown = sorted(set(options) - {p.name for p in accepted})
    if unknown:
        bad = ", ".join(repr(k) for k in unknown)
        raise TypeError(f"pruner {name!r} has no option {bad}; valid options: {valid}")
    missing = [p.name for p in accepted if p.default is p.empty and p.name not in options]
    if missing:
        need = ", ".join(repr(k) for k in missing)
        raise TypeError(f"pruner {name!r} needs option {need}; valid options: {valid}")


def pruner_from_config(section: PrunerSection) -> BasePruner:
    """The pruner a study file's ``[pruner]`` section asks for."""
    if section.name == "plateau":
        return make_pruner(
            "plateau",
            patience=section.patience,
            min_delta=section.min_delta,
            percentile=section.percentile,
            n_warmup_steps=section.n_warmup_steps,
            n_startup_trials=section.n_startup_trials,
        )
    if section.name == "median":
        return make_pruner(
            "median",
            n_warmup_steps=section.n_warmup_steps,
            n_startup_trials=section.n_startup_trials,
        )
    return make_pruner(section.name)
