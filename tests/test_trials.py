"""lrsearch.trials: the one owner of a trial's facts (keys, seed, params replay, schedule)."""

from __future__ import annotations

import math

import optuna
from optuna.trial import TrialState, create_trial

from lrsearch import trials
from lrsearch.config import parse_study_config
from lrsearch.objective import Objective
from lrsearch.prior import LRPrior
from lrsearch.study import StudyHandle
from tests.tiny_workloads import blobs, blobs_adagrad

PRIOR = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=1.0)


def _config(**space: object):
    return parse_study_config(
        {
            "study": {"name": "t", "workload": "tests.tiny_workloads:blobs", "seed": 40},
            "space": space,
            "pruner": {"name": "none"},
        }
    )


def _sampled(handle: StudyHandle):
    """One trial sampled the way a worker samples it (no training), then told done."""
    trial = handle.study.ask()
    spec = Objective(handle).sample(trial)
    handle.study.tell(trial, 90.0)
    return spec, handle.study.trials[-1]


def test_surplus_trials_do_not_count() -> None:
    kept = create_trial(value=1.0)
    surplus = create_trial(state=TrialState.FAIL, user_attrs={trials.SURPLUS: True})
    assert trials.is_surplus(surplus) and not trials.is_surplus(kept)
    assert trials.counted([kept, surplus]) == [kept]


def test_a_tail_trains_with_its_parents_seed() -> None:
    config = _config()
    own = create_trial(value=1.0)
    own.number = 5
    tail = create_trial(value=1.0, user_attrs={trials.BRANCH_OF: 2})
    tail.number = 7
    assert trials.seed_of(config, own) == 45 == trials.trial_seed(config, 5)
    assert trials.seed_of(config, tail) == 42


def test_replayed_params_and_schedule_are_the_trials_own() -> None:
    # fixed weight decay and div factor: not Optuna params, so trial.params lacks them
    config = _config(weight_decay=[0.00123, 0.00123], div_factor=[7.0, 7.0])
    handle = StudyHandle.in_memory(config, PRIOR, blobs())
    spec, frozen = _sampled(handle)
    assert "weight_decay" not in frozen.params
    params = trials.trial_params(handle, frozen)
    assert params == dict(spec.params)
    assert params["weight_decay"] == 0.00123 and params["div_factor"] == 7.0
    assert params["momentum_low"] <= params["momentum_high"]
    assert trials.trial_schedule(handle, frozen) == spec.schedule


def test_no_momentum_params_where_the_optimizer_has_none() -> None:
    handle = StudyHandle.in_memory(_config(), PRIOR, blobs_adagrad())
    _, frozen = _sampled(handle)
    assert not {"momentum_high", "momentum_low"} & set(trials.trial_params(handle, frozen))


def test_score_on_test_only_where_finite() -> None:
    assert trials.score_on_test(create_trial(value=1.0, user_attrs={"test_metric": 91.5})) == 91.5
    assert trials.score_on_test(create_trial(value=1.0)) is None
    nan = create_trial(value=1.0, user_attrs={trials.TEST_METRIC: math.nan})
    assert trials.score_on_test(nan) is None


def test_the_keys_are_what_optunas_storage_holds() -> None:
    """A stored study written by an earlier version reads the same: the keys are its strings."""
    assert (trials.SURPLUS, trials.DERIVED, trials.BRANCH_OF, trials.DRAW) == (
        "surplus",
        "derived",
        "branch_of",
        "lrsearch.draw",
    )
    study = optuna.create_study()
    study.enqueue_trial({}, user_attrs={trials.ORIGIN: trials.PRIOR_CENTRE})
    assert study.ask().user_attrs == {"lrsearch.origin": "prior-centre"}


def test_no_module_spells_a_trial_attribute_key_itself() -> None:
    """Every reader and writer uses lrsearch.trials' keys, so none can drift."""
    import re
    from pathlib import Path

    import lrsearch

    spelled = re.compile(
        r'user_attrs\.get\(\s*"|set_user_attr\(\s*"|set_trial_user_attr\([^,]+,\s*"'
        r'|user_attrs=\{\s*"|"[\w.]+" in [\w.]*user_attrs|user_attrs\["'
    )
    package = Path(lrsearch.__file__).parent
    offenders = [
        f"{path.relative_to(package)}:{n}"
        for path in sorted(package.rglob("*.py"))
        if path.name != "trials.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if spelled.search(line)
    ]
    assert not offenders
