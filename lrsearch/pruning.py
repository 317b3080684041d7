"""Schedule-aware pruning: stop a trial that has stalled *and* trails the others at its step.

Every trial of an lrsearch study has the same step budget and the same schedule shape, and it
reports its validation metric once per epoch at ``step = epoch`` (1-based). Trials are therefore
compared at the same step, i.e. at the same phase of their learning-rate schedule. A one-cycle
run often stalls (or gets worse) around the LR peak and recovers in annihilation, so stalling
alone is no reason to stop, and neither is trailing alone while the trial still improves:
:class:`StallPruner` needs both. A NaN/inf metric stops a trial at once.

Pruners are chosen by name from :data:`PRUNERS` through :func:`make_pruner`.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner, PercentilePruner
from optuna.study import StudyDirection
from optuna.trial import TrialState

from lrsearch.trials import DERIVED

if TYPE_CHECKING:
    from optuna.study import Study
    from optuna.trial import FrozenTrial

    from lrsearch.config import PrunerSection

__all__ = [
    "PRUNERS",
    "PlateauPruner",
    "PruneDecision",
    "StallPruner",
    "final_upper_bound",
    "is_stalled",
    "last_decision",
    "make_pruner",
    "pruner_from_config",
    "schedule_phase",
]

# Trials a running trial is ranked against; see the StallPruner docstring for why not RUNNING.
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


class StallPruner(BasePruner):
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
        >>> study = optuna.create_study(pruner=StallPruner(patience=2, n_warmup_steps=3))
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
        _check_at_least(n_warmup_steps=(n_warmup_steps, 0), n_startup_trials=(n_startup_trials, 0))
        _check_at_least(n_min_trials=(n_min_trials, 1))
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


def _check_at_least(**values: tuple[int, int]) -> None:
    """``name=(value, lowest)``: a ValueError naming the first value below its lowest."""
    for name, (value, lowest) in values.items():
        if value < lowest:
            raise ValueError(f"{name} must be >= {lowest}, got {name}={value}")


def _check_min_delta(min_delta: float) -> None:
    if not (math.isfinite(min_delta) and min_delta >= 0.0):
        raise ValueError(f"min_delta must be finite and >= 0, got {min_delta=}")


# --- phase-aware, comeback-aware pruning (the default) -------------------------------------


def schedule_phase(epoch: float, epochs: int, cycle_frac: float = 1.0) -> float:
    """Where ``epoch`` (1-based, may be fractional) sits in a trial's schedule.

    0 to 1 through the cycle (warm-up and decay), 1 to 2 through the annihilation tail, so
    trials whose cycles end at different epochs compare at the same phase. Without a tail
    (``cycle_frac`` 1, or a policy with no cycle) the phase is the fraction of training done.

    Example:
        >>> schedule_phase(5, 10, 0.5), schedule_phase(8, 10, 0.6)
        (1.0, 1.5)
    """
    u = min(max(epoch / epochs, 0.0), 1.0)
    c = min(max(cycle_frac, 1e-9), 1.0)
    return u / c if u <= c or c >= 1.0 else 1.0 + (u - c) / (1.0 - c)


def phase_epoch(phase: float, epochs: int, cycle_frac: float = 1.0) -> float:
    """The inverse of :func:`schedule_phase`: the (fractional) epoch at ``phase``."""
    c = min(max(cycle_frac, 1e-9), 1.0)
    u = phase * c if phase <= 1.0 or c >= 1.0 else c + (phase - 1.0) * (1.0 - c)
    return min(max(u, 0.0), 1.0) * epochs


def cycle_frac_of(trial: FrozenTrial) -> float:
    """The share of a trial's steps in its cycle, from the ``derived`` attribute lrsearch's
    objective stores before training (``cycle_steps`` / ``total_steps``); 1.0 if unknown."""
    derived = trial.user_attrs.get(DERIVED) or {}
    cycle, total = derived.get("cycle_steps"), derived.get("total_steps")
    if isinstance(cycle, int | float) and isinstance(total, int | float) and total > 0:
        return min(max(float(cycle) / float(total), 1e-9), 1.0)
    return 1.0


def _running_best_at(values: Mapping[int, float], epoch: float, sign: float) -> float | None:
    """The best (sign-normalised: higher is better) value reported up to ``epoch``,
    interpolated linearly between whole epochs; None if nothing finite was reported by then."""
    best: float | None = None
    series: list[tuple[int, float]] = []
    for step in sorted(values):
        v = values[step]
        if math.isfinite(v):
            best = sign * v if best is None else max(best, sign * v)
        if best is not None:
            series.append((step, best))
    if not series:
        return None
    if epoch <= series[0][0]:
        return series[0][1]
    for (s0, b0), (s1, b1) in itertools.pairwise(series):
        if s0 <= epoch <= s1:
            return b0 + (b1 - b0) * (epoch - s0) / (s1 - s0)
    return series[-1][1]


@dataclass(frozen=True)
class PruneDecision:
    """What a :class:`PlateauPruner` compared at a trial's latest judgement, in metric units.

    ``bound`` is how good the trial's final value can plausibly be (its ``confidence``
    prediction bound: an upper bound of an accuracy, a lower bound of a loss); ``threshold``
    is the ``keep_top``-th best final value of the finished trials. ``pruned`` is whether the
    bound fell short of the threshold.

    Example:
        >>> d = PruneDecision(epoch=4, phase=0.8, bound=71.25, threshold=85.0,
        ...                   keep_top=3, confidence=0.9, peers=5, pruned=True)
        >>> d.describe()
        'at phase 0.80 its final value is at best 71.25 (90% bound), short of 85, the 3rd best final of 5 finished trials'
    """

    epoch: int
    phase: float
    bound: float
    threshold: float
    keep_top: int
    confidence: float
    peers: int
    pruned: bool

    def describe(self) -> str:
        """One line: the phase, the bound and the threshold it was compared with."""
        verdict = "short of" if self.pruned else "within reach of"
        return (
            f"at phase {self.phase:.2f} its final value is at best {self.bound:.4g} "
            f"({self.confidence:.0%} bound), {verdict} {self.threshold:.4g}, "
            f"the {_ordinal(self.keep_top)} best final of {self.peers} finished trials"
        )

    def to_dict(self) -> dict[str, Any]:
        """The fields, for a trial's user attribute (JSON)."""
        return asdict(self)


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def last_decision(pruner: object, study_name: str, number: int) -> PruneDecision | None:
    """The last judgement ``pruner`` made of trial ``number``; None if it keeps none (a
    pruner other than :class:`PlateauPruner`) or never compared that trial with its peers."""
    decisions = getattr(pruner, "decisions", None)
    return decisions.get((study_name, number)) if isinstance(decisions, Mapping) else None


class PlateauPruner(BasePruner):
    """Stop a trial whose curve, at its schedule phase, cannot plausibly end among the best.

    A one-cycle run keeps improving to its last step, so "it stopped improving" rarely fires,
    and its value near the LR peak says little about its end. What does say something is how
    the study's finished trials moved from the same **phase** of their schedule (the fraction
    of the cycle, then of the annihilation tail: :func:`schedule_phase`) to their end. At each
    report, a line through the finished trials' (best value up to this phase, final value)
    predicts this trial's final value from its best value so far, and Student's t prediction
    interval bounds it (:func:`final_upper_bound`). The interval is wide where curves still
    cross after this phase (a weak rank correlation between now and the end), with few
    finished trials, and for a trial unlike them; so the pruner is cautious early in a study
    and at early phases, and bolder as the study shows how its curves behave. No threshold
    is in metric units: it works the same for accuracy, perplexity or a loss.

    The trial is pruned when:

    1. its latest value is NaN or inf -- at once, even in warm-up or before the startup trials;
    2. otherwise never while fewer than ``n_startup_trials`` trials (and at least 3) are
       complete, the epoch is below ``n_warmup_steps``, or it is the last epoch;
    3. otherwise iff the upper ``confidence`` bound of its final value is below the
       ``keep_top``-th best final value of the finished trials: it will most likely not end
       among the best ``keep_top``.

    Peers are the COMPLETE trials only (their final values are known); RUNNING ones would
    make the decision depend on worker timing, PRUNED ones have no end.

    Each judgement that compares a bound with the bar is kept as a :class:`PruneDecision` in
    :attr:`decisions` (by study name and trial number; :func:`last_decision` reads it), so the
    run of a pruned trial can say why it was stopped.

    The defaults were chosen by replaying recorded studies of five workloads (``lrsearch
    bench``'s pruning section; ``docs/benchmarks.md``): the boldest confidence that never lost
    more than 0.2 test points of the chosen trial in any seed.

    Args:
        epochs: the trials' epochs (the study's); phases need it. None compares trials at
            equal epochs instead of equal phases.
        keep_top: a trial that could still end among the best ``keep_top`` finished trials is
            kept.
        confidence: how sure the pruner must be that the trial ends below that bar, in
            (0.5, 1); higher prunes less.
        n_startup_trials: finished trials before any pruning (except NaN/inf); 3 at least.
        n_warmup_steps: no pruning (except NaN/inf) before this epoch (1-based).

    Example:
        >>> import optuna
        >>> study = optuna.create_study(pruner=PlateauPruner(epochs=10))
    """

    def __init__(
        self,
        *,
        epochs: int | None = None,
        keep_top: int = 3,
        confidence: float = 0.9,
        n_startup_trials: int = 3,
        n_warmup_steps: int = 1,
    ) -> None:
        _check_at_least(keep_top=(keep_top, 1), epochs=(1 if epochs is None else epochs, 1))
        _check_at_least(n_startup_trials=(n_startup_trials, 0), n_warmup_steps=(n_warmup_steps, 0))
        if not 0.5 < confidence < 1.0:
            raise ValueError(f"confidence must be in (0.5, 1), got {confidence=}")
        self._epochs = epochs
        self._keep_top = keep_top
        self._confidence = confidence
        self._n_startup_trials = max(n_startup_trials, MIN_PEERS)
        self._n_warmup_steps = n_warmup_steps
        self._cache: dict[tuple[str, int], list[FrozenTrial]] = {}
        self.decisions: dict[tuple[str, int], PruneDecision] = {}
        """The last bound-versus-bar judgement of each recent trial: (study, number) -> it."""

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """Judge the trial at its latest step; see the class docstring for the rule."""
        step = trial.last_step
        if step is None:
            return False
        if not math.isfinite(trial.intermediate_values[step]):
            return True
        if step < self._n_warmup_steps or (self._epochs is not None and step >= self._epochs):
            return False
        peers = self._peers(study, trial.number)
        if len(peers) < self._n_startup_trials:
            return False
        sign = 1.0 if study.direction == StudyDirection.MAXIMIZE else -1.0
        mine = _running_best_at(trial.intermediate_values, step, sign)
        if mine is None:
            return False
        phase = self._phase(step, trial)
        pairs = []
        for t in peers:
            then = _running_best_at(t.intermediate_values, self._epoch_at(phase, t, step), sign)
            if then is not None:
                pairs.append((then, sign * float(t.value)))  # type: ignore[arg-type]
        finals = sorted((f for _, f in pairs), reverse=True)
        if len(pairs) < MIN_PEERS:
            return False
        bar = finals[min(self._keep_top, len(finals)) - 1]
        bound = final_upper_bound(mine, pairs, self._confidence)
        pruned = bound < bar
        self._remember(
            (study.study_name, trial.number),
            PruneDecision(
                epoch=step,
                phase=phase,
                bound=sign * bound,  # back to metric units (a loss's is a lower bound)
                threshold=sign * bar,
                keep_top=min(self._keep_top, len(finals)),
                confidence=self._confidence,
                peers=len(pairs),
                pruned=pruned,
            ),
        )
        return pruned

    def _remember(self, key: tuple[str, int], decision: PruneDecision) -> None:
        self.decisions.pop(key, None)  # re-inserted last: the oldest trial is dropped first
        self.decisions[key] = decision
        while len(self.decisions) > _CACHED_TRIALS:
            self.decisions.pop(next(iter(self.decisions)))

    def _peers(self, study: Study, number: int) -> list[FrozenTrial]:
        """The finished trials a trial is judged by, read once per trial (not per epoch).

        Finished trials never change, so the list read at a trial's first judgement serves
        its later epochs: one storage round trip per trial instead of one per epoch. Trials
        that finish meanwhile count from the next trial on.
        """
        key = (study.study_name, number)
        peers = self._cache.get(key)
        if peers is None:
            peers = [
                t
                for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.number != number and t.value is not None and math.isfinite(t.value)
            ]
            self._cache[key] = peers
            while len(self._cache) > _CACHED_TRIALS:
                self._cache.pop(next(iter(self._cache)))
        return peers

    def _phase(self, step: int, trial: FrozenTrial) -> float:
        if self._epochs is None:
            return float(step)
        return schedule_phase(step, self._epochs, cycle_frac_of(trial))

    def _epoch_at(self, phase: float, peer: FrozenTrial, step: int) -> float:
        if self._epochs is None:
            return float(step)
        return phase_epoch(phase, self._epochs, cycle_frac_of(peer))


MIN_PEERS = 3  # a line and its residual spread need three finished trials
_CACHED_TRIALS = 64  # trials whose peer lists a pruner keeps (several run at once per process)


def _t_quantile(p: float, dof: int) -> float:
    """Student's t quantile: exact for 1 and 2 degrees of freedom, else the Cornish-Fisher
    expansion of the normal quantile (within 1% for ``dof >= 3`` at p <= 0.99)."""
    from statistics import NormalDist

    if dof <= 1:
        return math.tan(math.pi * (p - 0.5))
    if dof == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    v = float(dof)
    return z + (z**3 + z) / (4 * v) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)


def final_upper_bound(
    mine: float, pairs: Sequence[tuple[float, float]], confidence: float
) -> float:
    """Upper ``confidence`` prediction bound of a trial's final value from its value now.

    Args:
        mine: the trial's best value so far (higher is better: negate a loss).
        pairs: (best value up to the same phase, final value) of finished trials.
        confidence: one-sided coverage of the bound, in (0.5, 1).

    Returns:
        ``a + b * mine + t * s * sqrt(1 + 1/n + (mine - mean)^2 / Sxx)``: the least-squares
        line through ``pairs`` (its slope floored at 0: being worse now never predicts a
        better end) plus Student's t prediction interval with n - 2 degrees of freedom.
        +inf (no judgement) with fewer than 3 pairs or no spread in their values now.

    Example:
        >>> pairs = [(50.0, 90.0), (60.0, 92.0), (70.0, 95.0), (40.0, 85.0)]
        >>> final_upper_bound(20.0, pairs, 0.9) < 85.0
        True
    """
    n = len(pairs)
    if n < MIN_PEERS:
        return math.inf
    x = np.array([a for a, _ in pairs], dtype=float)
    y = np.array([f for _, f in pairs], dtype=float)
    sxx = float(((x - x.mean()) ** 2).sum())
    if sxx <= 0.0:
        return math.inf
    slope = max(float(((x - x.mean()) * (y - y.mean())).sum()) / sxx, 0.0)
    intercept = float(y.mean()) - slope * float(x.mean())
    s = math.sqrt(float(((y - intercept - slope * x) ** 2).sum()) / (n - 2))
    spread = s * math.sqrt(1.0 + 1.0 / n + (mine - float(x.mean())) ** 2 / sxx)
    return intercept + slope * mine + _t_quantile(confidence, n - 2) * spread


PRUNERS: dict[str, Callable[..., BasePruner]] = {
    "plateau": PlateauPruner,
    "stall": StallPruner,
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
        **options: Keyword arguments of that pruner, e.g. ``patience=2`` for ``"stall"``.

    Returns:
        The pruner.

    Raises:
        ValueError: ``name`` is not registered (the message lists the valid names), or an
            option has a bad value (the pruner's own message).
        TypeError: An option is unknown to that pruner, or a required one is missing; the
            message names it and lists the valid options.

    Example:
        >>> make_pruner("stall", patience=2).__class__.__name__
        'StallPruner'
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


def pruner_from_config(section: PrunerSection, *, epochs: int | None = None) -> BasePruner:
    """The pruner a study file's ``[pruner]`` section asks for; ``epochs`` are the study's
    (the plateau pruner compares trials at equal schedule phase with them)."""
    if section.name == "plateau":
        return make_pruner(
            "plateau",
            epochs=epochs,
            keep_top=section.keep_top,
            confidence=section.confidence,
            n_warmup_steps=section.warmup(),
            n_startup_trials=section.n_startup_trials,
        )
    if section.name == "stall":
        return make_pruner(
            "stall",
            patience=section.patience,
            min_delta=section.min_delta,
            percentile=section.percentile,
            n_warmup_steps=section.warmup(),
            n_startup_trials=section.n_startup_trials,
        )
    if section.name == "median":
        return make_pruner(
            "median",
            n_warmup_steps=section.warmup(),
            n_startup_trials=section.n_startup_trials,
        )
    return make_pruner(section.name)
