"""The search space a study samples: ``max_lr`` spans the prior's bounds and no further."""

from __future__ import annotations

import optuna
import pytest

from lrsearch.config import SpaceSection
from lrsearch.prior import LRPrior
from lrsearch.space import default_params, suggest_params

PRIOR = LRPrior(center=0.03, sigma_decades=0.5, low=3e-4, high=0.3)


def _sampled(n: int, prior: LRPrior = PRIOR) -> list[optuna.trial.FrozenTrial]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: suggest_params(t, SpaceSection(), prior)["max_lr"], n_trials=n)
    return study.trials


def test_max_lr_is_capped_at_the_priors_upper_bound() -> None:
    trials = _sampled(200)
    for t in trials:
        dist = t.distributions["max_lr"]
        assert (dist.low, dist.high, dist.log) == (PRIOR.low, PRIOR.high, True)
    lrs = [t.params["max_lr"] for t in trials]
    assert PRIOR.low <= min(lrs) and max(lrs) <= PRIOR.high
    # Log-uniform over three decades: the top decade gets about a third of the draws, so a cap
    # moved below the bound would show here too.
    assert sum(lr > PRIOR.high / 10 for lr in lrs) > 40


def test_a_stored_value_beyond_the_cap_is_out_of_range_on_replay() -> None:
    stored = dict(_sampled(1)[0].params)
    with pytest.warns(UserWarning, match="'max_lr' is out of the range"):
        suggest_params(
            optuna.trial.FixedTrial({**stored, "max_lr": PRIOR.high * 10}), SpaceSection(), PRIOR
        )
    at_cap = optuna.trial.FixedTrial({**stored, "max_lr": PRIOR.high})
    assert suggest_params(at_cap, SpaceSection(), PRIOR)["max_lr"] == PRIOR.high


def test_the_first_trial_is_the_priors_centre() -> None:
    assert default_params(SpaceSection(), PRIOR)["max_lr"] == PRIOR.center
