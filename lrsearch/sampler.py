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
- optionally (``pibo_beta`` > 0, piBO-style, Hvarfner et al. 2022), each later trial takes,
  among several TPE proposals, the one with the largest ``prior(max_lr) ** (beta / n)``:
  the prior keeps acting and fades as trials accumulate.
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

__all__ = ["PriorGuidedSampler", "sampler_from_config"]

PARAM = "max_lr"
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class PriorGuidedSampler(BaseSampler):
    """TPE with an LR prior for ``max_lr`` during startup (and, decaying, after it)."""

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
        pibo_candidates: int = 8,
    ) -> None:
        if pibo_beta < 0 or pibo_candidates < 1:
            raise ValueError(
                f"need pibo_beta >= 0 and pibo_candidates >= 1, got {pibo_beta=}, "
                f"{pibo_candidates=}"
            )
        self.pibo_beta = pibo_beta
        self.pibo_candidates = pibo_candidates
        if n_startup_trials < 0:
            raise ValueError(f"n_startup_trials must be >= 0, got {n_startup_trials=}")
        if prior_decay_trials < 0:
            raise ValueError(f"prior_decay_trials must be >= 0, got {prior_decay_trials=}")
        self.prior = prior
        self.n_startup_trials = n_startup_trials
        self.prior_decay_trials = prior_decay_trials
        self._rng = np.random.default_rng(seed)
        self._tpe = TPESampler(
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

    def _use_prior(self, study: optuna.Study) -> bool:
        n = self._n_finished(study)
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

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        params = self._tpe.sample_relative(study, trial, search_space)
        if PARAM not in params:
            return params
        if self._use_prior(study):
            params[PARAM] = self._draw(search_space[PARAM])
        elif self.pibo_beta > 0:
            params = self._prior_weighted(study, trial, search_space, params)
        return params

    def _prior_weighted(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        search_space: dict[str, BaseDistribution],
        first: dict[str, Any],
    ) -> dict[str, Any]:
        """piBO-style: among TPE's proposals, the one the prior likes best, fading with n.

        piBO multiplies the acquisition by ``prior(x) ** (beta / n)``. Optuna's TPE keeps its
        acquisition to itself, so this draws ``pibo_candidates`` proposals from TPE (each the
        best of TPE's own candidates) and keeps the one with the largest
        ``prior(max_lr) ** (beta / n)``, n counting the trials finished after the startup
        ones. Early on that is the proposal nearest the prior's centre; as n grows the weights
        flatten and TPE's first proposal wins ties: the evidence overrules the prior.
        """
        n = max(self._n_finished(study) - self.n_startup_trials, 0) + 1
        exponent = self.pibo_beta / n
        proposals = [first] + [
            self._tpe.sample_relative(study, trial, search_space)
            for _ in range(self.pibo_candidates - 1)
        ]
        scores = [exponent * float(self.prior.logpdf(p[PARAM])) for p in proposals]
        best = max(range(len(proposals)), key=lambda i: (scores[i], -i))
        return proposals[best]

    def sample_independent(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        if param_name == PARAM and self._use_prior(study):
            return self._draw(param_distribution)
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
        pibo_beta=config.prior.pibo_beta,
    )
