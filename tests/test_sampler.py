"""PriorGuidedSampler: the prior drives max_lr at startup, and (pibo_beta) keeps acting after."""

from __future__ import annotations

import math
import statistics

import optuna
import pytest

from lrsearch.prior import LRPrior
from lrsearch.sampler import PriorGuidedSampler

optuna.logging.set_verbosity(optuna.logging.WARNING)
PRIOR = LRPrior(center=0.1, sigma_decades=0.3, low=1e-5, high=10.0)


def _distance_after_startup(pibo_beta: float, seed: int) -> float:
    """Median distance (decades) of max_lr from the prior's centre after the startup trials,
    on an objective that tells TPE nothing (every trial scores the same)."""
    sampler = PriorGuidedSampler(PRIOR, n_startup_trials=4, pibo_beta=pibo_beta, seed=seed)
    study = optuna.create_study(sampler=sampler)

    def flat(trial: optuna.Trial) -> float:
        trial.suggest_float("max_lr", PRIOR.low, PRIOR.high, log=True)
        trial.suggest_float("weight_decay", 1e-6, 1e-3, log=True)
        return 1.0

    study.optimize(flat, n_trials=16)
    later = [t.params["max_lr"] for t in study.trials[4:]]
    return statistics.median(abs(math.log10(lr / PRIOR.center)) for lr in later)


@pytest.mark.parametrize("seed", [0, 1])
def test_a_prior_weight_keeps_trials_nearer_the_prior_after_startup(seed: int) -> None:
    assert _distance_after_startup(10.0, seed) < _distance_after_startup(0.0, seed)


def test_bad_pibo_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="pibo_beta >= 0"):
        PriorGuidedSampler(PRIOR, pibo_beta=-1.0)
    with pytest.raises(ValueError, match="pibo_candidates >= 1"):
        PriorGuidedSampler(PRIOR, pibo_candidates=0)
