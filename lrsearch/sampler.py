"""Prior-guided sampling: the range test's prior drives ``max_lr`` until TPE takes over.

Optuna has no notion of a user prior, so :class:`PriorGuidedSampler` wraps a TPE sampler:

- the first trial is enqueued by the study at the prior's centre (see ``lrsearch.study``);
- while fewer than ``n_startup_trials`` trials have finished, ``max_lr`` is drawn from the
  truncated log-normal prior and the other parameters uniformly (TPE's own startup);
- afterwards multivariate TPE (with the constant liar, so parallel workers spread out)
  samples everything, and Optuna keeps seeing the real ``max_lr`` on a log scale;
- optionally (``prior_decay_trials`` > 0), each later trial still draws ``max_lr`` from the
  prior with probability ``exp(-k / prior_decay_trials)``, k being the number of trials
  finished after the startup ones;
- optionally (``pibo_beta`` > 0, piBO, Hvarfner et al. 2022), TPE's acquisition
  ``log l(x) - log g(x)`` gains ``pibo_beta / n ** pibo_fade * log prior(max_lr)`` after
  startup, n the number of trials finished since (plus one): TPE picks among its candidates the one that is both likely
  good and likely under the prior, and the prior's say fades as evidence accumulates.
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

if TYPE_CHECKING:
    from lrsearch.config import StudyConfig

__all__ = ["DEFAULT_PIBO_BETA", "PriorGuidedSampler", "sampler_from_config"]

PARAM = "max_lr"
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
    ) -> None:
        if not 0 <= pibo_beta < math.inf:
            raise ValueError(f"pibo_beta must be >= 0 and finite, got {pibo_beta=}")
        if not 0 <= pibo_fade < math.inf:
            raise ValueError(f"pibo_fade must be >= 0 and finite, got {pibo_fade=}")
        if pibo_beta > 0:
            _PriorWeightedTPE.check_supported()
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
        self._rng = np.random.default_rng()
        self._tpe.reseed_rng()

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

    def _draw(self, distribution: BaseDistribution) -> float:
        value = float(self.prior.sample(self._rng))
        if isinstance(distribution, FloatDistribution):
            value = min(max(value, distribution.low), distribution.high)
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
            params[PARAM] = self._draw(search_space[PARAM])
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
            return self._draw(param_distribution)
        self._tpe.weight = self._weight_at(n)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
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
    )
