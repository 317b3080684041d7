"""Prior-guided sampling: the range test's prior drives ``max_lr`` until TPE takes over.

Optuna has no notion of a user prior, so :class:`PriorGuidedSampler` wraps a TPE sampler:

- the first trial is enqueued by the study at the prior's centre (see ``lrsearch.study``);
- while fewer than ``n_startup_trials`` trials have finished, ``max_lr`` is drawn from the
  truncated log-normal prior and the other parameters uniformly (TPE's own startup);
- a share of those startup draws (``explore_share``) ignores the prior and draws ``max_lr``
  log-uniformly over its whole range, and once such a wide draw has beaten every prior-drawn
  trial (``contradiction``: evidence that the prior is off), the rest of the startup is wide
  too: a prior decades off costs a few trials, not the budget;
- afterwards multivariate TPE (with the constant liar, so parallel workers spread out)
  samples everything, and Optuna keeps seeing the real ``max_lr`` on a log scale;
- optionally (``prior_decay_trials`` > 0), each later trial still draws ``max_lr`` from the
  prior with probability ``exp(-k / prior_decay_trials)``, k being the number of trials
  finished after the startup ones;
- optionally (``pibo_beta`` > 0, piBO, Hvarfner et al. 2022), TPE's acquisition
  ``log l(x) - log g(x)`` gains ``pibo_beta / n ** pibo_fade * log prior(max_lr)`` after
  startup, n the number of trials finished since (plus one): TPE picks among its candidates the one that is both likely
  good and likely under the prior, and the prior's say fades as evidence accumulates.

Every trial's draws are seeded by the study's seed and the trial's number, so a resumed study
(or a second worker started with the same seed) never repeats an earlier trial's draws, while
a study run again from scratch with the same seed draws the same trials.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, FloatDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from lrsearch.prior import LRPrior
from lrsearch.trials import DIVERGED, DRAW, ORIGIN, PRIOR_CENTRE

if TYPE_CHECKING:
    from lrsearch.config import StudyConfig

__all__ = [
    "DEFAULT_CONTRADICTION",
    "DEFAULT_EXPLORE_SHARE",
    "DEFAULT_PIBO_BETA",
    "DEFAULT_STARTUP",
    "DRAW_KEY",
    "STARTUPS",
    "PriorGuidedSampler",
    "bracket_probe",
    "sampler_from_config",
]

PARAM = "max_lr"
# The user attribute naming how a trial's max_lr was drawn: "prior" or "wide" (startup), "tpe".
DRAW_KEY = DRAW  # the user attribute with a startup draw's kind (lrsearch.trials)
# [prior] explore_share and contradiction where a study file leaves them unset; measured by
# `python -m lrsearch.harness.prior_robustness` (docs/prior-calibration.md)
DEFAULT_EXPLORE_SHARE = 0.0
DEFAULT_CONTRADICTION = True
# How the startup trials after the prior's centre place max_lr: "prior" draws from the prior;
# "bracket" steps a decade at a time from the best so far (bracket_probe), then draws from the
# prior moved to the best point found.
STARTUPS = ("prior", "bracket")
DEFAULT_STARTUP = "bracket"
# [prior] pibo_beta where a study file leaves it unset; measured in docs/benchmarks.md
DEFAULT_PIBO_BETA = 0.0
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class _PriorWeightedTPE(TPESampler):
    """TPE whose acquisition is weighted by the LR prior, as piBO weights any acquisition.

    TPE scores each candidate ``x`` (drawn from the density of the good trials, ``l``) by
    ``log l(x) - log g(x)``; this adds ``weight * log prior(x[max_lr])``, i.e. it multiplies
    the acquisition by ``prior ** weight``. The weight is set per trial by
    :class:`PriorGuidedSampler` (``pibo_beta / n ** pibo_fade``); 0 is TPE exactly.

    This overrides ``TPESampler._compute_acquisition_func``, a private method (Optuna 5);
    :meth:`check_supported` says so plainly where an Optuna lacks it.
    """

    def __init__(self, prior: LRPrior, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.prior = prior
        self.weight = 0.0

    @staticmethod
    def check_supported() -> None:
        if not callable(getattr(TPESampler, "_compute_acquisition_func", None)):
            raise RuntimeError(
                f"[prior] pibo_beta needs TPESampler._compute_acquisition_func, which Optuna "
                f"{optuna.__version__} does not have; set pibo_beta = 0 or use Optuna 5"
            )

    def _compute_acquisition_func(
        self, samples: dict[str, np.ndarray], mpe_below: Any, mpe_above: Any
    ) -> np.ndarray:
        acquisition: np.ndarray = super()._compute_acquisition_func(samples, mpe_below, mpe_above)
        if self.weight > 0 and PARAM in samples:
            log_prior = np.asarray(self.prior.logpdf(np.asarray(samples[PARAM], dtype=float)))
            acquisition = acquisition + self.weight * log_prior
        return acquisition


class PriorGuidedSampler(BaseSampler):
    """TPE with an LR prior for ``max_lr`` during startup (and, decaying or piBO-weighted, after)."""

    def __init__(
        self,
        prior: LRPrior,
        *,
        n_startup_trials: int = 5,
        prior_decay_trials: float = 0.0,
        multivariate: bool = True,
        constant_liar: bool = True,
        group: bool = False,
        seed: int | None = None,
        pibo_beta: float = 0.0,
        pibo_fade: float = 1.0,
        explore_share: float = 0.0,
        contradiction: bool = False,
        startup: str = "prior",
    ) -> None:
        if not 0 <= pibo_beta < math.inf:
            raise ValueError(f"pibo_beta must be >= 0 and finite, got {pibo_beta=}")
        if not 0 <= pibo_fade < math.inf:
            raise ValueError(f"pibo_fade must be >= 0 and finite, got {pibo_fade=}")
        if not 0 <= explore_share <= 1:
            raise ValueError(f"explore_share must be in [0, 1], got {explore_share=}")
        if pibo_beta > 0:
            _PriorWeightedTPE.check_supported()
        if startup not in STARTUPS:
            raise ValueError(f"startup must be one of {', '.join(STARTUPS)}, got {startup=}")
        self.startup = startup
        self.explore_share = explore_share
        self.contradiction = contradiction
        self._seed = seed
        self.pibo_beta = pibo_beta
        self.pibo_fade = pibo_fade
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {n_startup_trials=}")
        if prior_decay_trials < 0:
            raise ValueError(f"prior_decay_trials must be >= 0, got {prior_decay_trials=}")
        self.prior = prior
        self.n_startup_trials = n_startup_trials
        self.prior_decay_trials = prior_decay_trials
        self._rng = np.random.default_rng(seed)
        self._tpe = _PriorWeightedTPE(
            prior,
            n_startup_trials=n_startup_trials,
            multivariate=multivariate,
            constant_liar=constant_liar,
            group=group,
            seed=seed,
        )

    def reseed_rng(self) -> None:
        self._seed = None
        self._rng = np.random.default_rng()
        self._tpe.reseed_rng()

    def _seed_trial(self, number: int) -> None:
        """Seed this trial's draws by (study seed, trial number): never an earlier trial's."""
        if self._seed is None:
            return
        sequence = np.random.SeedSequence([self._seed, number])
        self._rng = np.random.default_rng(sequence)
        tpe_seed, random_seed = (int(v) for v in sequence.generate_state(2))
        # TPE keeps its generators private (Optuna 5); without them its draws stay seeded once
        for owner, value in (
            (self._tpe, tpe_seed),
            (getattr(self._tpe, "_random_sampler", None), random_seed),
        ):
            state = getattr(getattr(owner, "_rng", None), "rng", None)
            if isinstance(state, np.random.RandomState):
                state.seed(value)

    def _wide_turn(self, number: int) -> bool:
        """Whether trial ``number``'s startup draw is a wide one: every ``1/explore_share``-th."""
        share = self.explore_share
        return share > 0 and math.floor((number + 1) * share) > math.floor(number * share)

    def _startup_points(self, study: optuna.Study) -> list[tuple[float, float | None, str]]:
        """Every startup trial so far: (log10 max_lr, value to maximise or None, draw kind)."""
        sign = -1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else 1.0
        points = []
        for t in study._get_trials(deepcopy=False, use_cache=True):
            kind = t.user_attrs.get(DRAW_KEY)
            if t.user_attrs.get(ORIGIN) == PRIOR_CENTRE:
                kind = "prior"  # the enqueued first trial: the prior's centre
            lr = t.params.get(PARAM)
            if kind not in ("prior", "wide", "bracket") or lr is None:
                continue
            value = _trial_value(t)  # None: running, or failed (probed all the same)
            signed = None if value is None else sign * value
            if DIVERGED in t.user_attrs:  # the worst there is: a bracket steps away from it
                signed = -math.inf
            points.append((math.log10(lr), signed, kind))
        return points

    def _contradicted(self, points: list[tuple[float, float | None, str]]) -> bool:
        """Whether a wide startup draw has beaten every trial drawn from the prior."""
        best: dict[str, float] = {}
        for _, value, kind in points:
            if value is not None:
                best[kind] = max(best.get(kind, -math.inf), value)
        return "wide" in best and best["wide"] > best.get("prior", -math.inf)

    def _startup_draw(
        self, study: optuna.Study, trial: FrozenTrial, dist: BaseDistribution
    ) -> tuple[str, float]:
        """How a startup trial draws ``max_lr`` (``"bracket"``, ``"wide"`` or ``"prior"``)."""
        points = self._startup_points(study)
        if self.startup == "bracket" and isinstance(dist, FloatDistribution):
            lo, hi = math.log10(dist.low), math.log10(dist.high)
            x = bracket_probe([(x, v) for x, v, _ in points], lo, hi)
            if x is not None:
                return "bracket", 10.0**x
        if self._wide_turn(trial.number) or (self.contradiction and self._contradicted(points)):
            return "wide", self._draw(dist, "wide")
        return "prior", self._draw(dist, "prior", around=_best_x(points))

    def _n_finished(self, study: optuna.Study) -> int:
        return len(study._get_trials(deepcopy=False, states=_FINISHED, use_cache=True))

    def _use_prior(self, n: int) -> bool:
        """Whether ``max_lr`` is drawn from the prior, with ``n`` trials finished."""
        if n < self.n_startup_trials:
            return True
        if self.prior_decay_trials <= 0:
            return False
        k = n - self.n_startup_trials
        return bool(self._rng.random() < math.exp(-k / self.prior_decay_trials))

    def _draw(
        self, distribution: BaseDistribution, kind: str = "prior", around: float | None = None
    ) -> float:
        """A ``max_lr`` from the prior (re-centred on ``log10 around`` in a bracketing
        startup, where the probes found better), or log-uniform over the range (``wide``)."""
        if kind == "wide" and isinstance(distribution, FloatDistribution):
            low, high = math.log(distribution.low), math.log(distribution.high)
            return float(math.exp(self._rng.uniform(low, high)))
        value = float(self.prior.sample(self._rng))
        if around is not None and self.startup == "bracket":
            value *= 10.0**around / self.prior.center
        return value  # clipped into the distribution by _draw_for, as every startup draw is

    def _draw_for(self, study: optuna.Study, trial: FrozenTrial, dist: BaseDistribution) -> float:
        """A startup draw of ``max_lr``, its kind recorded with the trial (``DRAW_KEY``)."""
        kind, value = self._startup_draw(study, trial, dist)
        study._storage.set_trial_user_attr(trial._trial_id, DRAW_KEY, kind)
        if isinstance(dist, FloatDistribution):
            value = min(max(value, dist.low), dist.high)
        return value

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._tpe.infer_relative_search_space(study, trial)

    def pibo_weight(self, study: optuna.Study) -> float:
        """The prior's exponent in the acquisition now: ``pibo_beta / n ** pibo_fade``, n
        counting the trials finished since startup, plus one."""
        return self._weight_at(self._n_finished(study))

    def _weight_at(self, n: int) -> float:
        if self.pibo_beta <= 0:
            return 0.0
        since = max(n - self.n_startup_trials, 0) + 1
        return self.pibo_beta / since**self.pibo_fade

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        n = self._n_finished(study)  # read once per trial: both decisions depend on it
        use_prior = self._use_prior(n)
        self._tpe.weight = 0.0 if use_prior else self._weight_at(n)
        params = self._tpe.sample_relative(study, trial, search_space)
        if PARAM in params and use_prior:
            params[PARAM] = self._draw_for(study, trial, search_space[PARAM])
        return params

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        n = self._n_finished(study)
        if param_name == PARAM and self._use_prior(n):
            return self._draw_for(study, trial, param_distribution)
        self._tpe.weight = self._weight_at(n)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self._seed_trial(trial.number)
        self._tpe.before_trial(study, trial)

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._tpe.after_trial(study, trial, state, values)


def sampler_from_config(
    config: StudyConfig, prior: LRPrior, *, seed: int | None
) -> PriorGuidedSampler:
    """The sampler a study file asks for, around the study's prior."""
    return PriorGuidedSampler(
        prior,
        n_startup_trials=config.prior.n_startup_trials,
        prior_decay_trials=config.prior.weight_decay_trials,
        multivariate=config.sampler.multivariate,
        constant_liar=config.sampler.constant_liar,
        group=len(config.space.policies) > 1,
        seed=seed,
        pibo_beta=DEFAULT_PIBO_BETA if config.prior.pibo_beta is None else config.prior.pibo_beta,
        pibo_fade=config.prior.pibo_fade,
        explore_share=_or(config.prior.explore_share, DEFAULT_EXPLORE_SHARE),
        contradiction=_or(config.prior.contradiction, DEFAULT_CONTRADICTION),
        startup=_or(config.prior.startup, DEFAULT_STARTUP),
    )


def bracket_probe(
    points: Sequence[tuple[float, float | None]],
    low: float,
    high: float,
    *,
    step: float = 1.0,
    tie: float = 0.05,
) -> float | None:
    """The next ``log10(max_lr)`` to probe in a bracketing startup, or None when done.

    ``points`` are the startup trials so far, ``(log10 max_lr, value)`` with the value to
    maximise (None while a trial runs, or where it failed); the first is the prior's centre. From the best finished
    point, step ``step`` decades up, then down; where a step lands no better (within ``tie`` of
    the best's magnitude), step out further on that side only while the point there is as bad
    as its neighbour (a plateau at chance says nothing, so the search goes on beyond it); once
    the best has a worse neighbour on each side, probe half a step either side of it. A probe
    within a quarter step of an earlier one (finished or running), or outside ``[low, high]``,
    is skipped.

    Example:
        >>> bracket_probe([(-4.0, 10.0)], -6.0, -1.0)  # the centre at chance: one decade up
        -3.0
        >>> bracket_probe([(-4.0, 10.0), (-3.0, 80.0)], -6.0, -1.0)  # better: on from there
        -2.0
    """
    done = [(x, v) for x, v in points if v is not None]
    if not done:
        return None

    def probed(x: float) -> bool:
        return any(abs(x - p) < 0.25 * step for p, _ in points) or not low <= x <= high

    best_x, best_v = max(done, key=lambda p: p[1])
    margin = tie * max(abs(best_v), 1e-12) if math.isfinite(best_v) else 0.0
    for side in (1.0, -1.0):
        x = best_x + side * step
        while probed(x) and low <= x <= high:
            near = [v for p, v in done if abs(p - x) < 0.25 * step]
            if not near or min(near) < best_v - margin:  # running there, or clearly worse: stop
                break
            x += side * step  # as bad as the best (a plateau): look beyond it
        if not probed(x):
            return x
    for side in (1.0, -1.0):
        x = best_x + side * step / 2
        if not probed(x):
            return x
    return None


def _trial_value(t: FrozenTrial) -> float | None:
    """A finished trial's value; a pruned one's last report (it says how the LR did)."""
    if t.state == TrialState.COMPLETE and t.value is not None:
        value: float | None = t.value
    elif t.state == TrialState.PRUNED and t.intermediate_values:
        value = t.intermediate_values[max(t.intermediate_values)]
    else:
        return None
    return value if value is not None and math.isfinite(value) else None


def _best_x(points: Sequence[tuple[float, float | None, str]]) -> float | None:
    done = [(x, v) for x, v, _ in points if v is not None]
    return max(done, key=lambda p: p[1])[0] if done else None


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value
