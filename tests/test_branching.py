"""Annihilation branching's rules: where to cut, which tails, who qualifies, what is kept."""

from __future__ import annotations

import math

import optuna
import pytest

from lrsearch.branching import (
    BRANCH_OF,
    Snapshots,
    branch_epoch,
    enqueue_tails,
    qualifies,
    tail_values,
)


def test_the_cut_is_the_last_epoch_boundary_inside_the_cycle() -> None:
    assert branch_epoch(270, 300, 30) == 9
    assert branch_epoch(269, 300, 30) == 8  # epoch 9 ends after the cycle: not shared
    assert branch_epoch(300, 300, 30) is None  # no tail to vary
    assert branch_epoch(None, 300, 30) is None  # a policy without a cycle
    assert branch_epoch(29, 300, 30) is None  # the cycle ends inside the first epoch


@pytest.mark.parametrize("tails", [1, 2, 3, 5])
@pytest.mark.parametrize("parent", [10.0, 37.0, 100.0, 999.0])
def test_tails_spread_over_the_range_away_from_the_parent(parent: float, tails: int) -> None:
    values = tail_values(parent, low=10.0, high=1000.0, tails=tails)
    assert len(values) == tails
    assert all(10.0 * (1 - 1e-9) <= v <= 1000.0 * (1 + 1e-9) for v in values)
    assert len({round(v, 6) for v in values}) == tails
    gaps = sorted(abs(math.log10(v / parent)) for v in values)
    assert gaps[0] >= 0.5 * 2.0 / tails / 2  # none within half a grid step of the parent
    assert tail_values(parent, low=10.0, high=10.0, tails=tails) == []


def test_only_the_best_qualify() -> None:
    assert qualifies(0.9, [0.5, 0.9, 0.7], maximize=True, top=1)
    assert not qualifies(0.7, [0.5, 0.9, 0.7], maximize=True, top=1)
    assert qualifies(0.7, [0.5, 0.9, 0.7], maximize=True, top=2)
    assert qualifies(0.1, [0.5, 0.1, 0.7], maximize=False, top=1)


def test_tails_are_queued_with_the_parents_params_and_link() -> None:
    study = optuna.create_study()
    params = {"max_lr": 0.1, "annihilation": 100.0, "weight_decay": 1e-4}
    enqueue_tails(study, params, 7, [10.0, 1000.0])
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs[BRANCH_OF] for t in waiting] == [7, 7]
    assert [t.system_attrs["fixed_params"]["annihilation"] for t in waiting] == [10.0, 1000.0]
    assert all(t.system_attrs["fixed_params"]["max_lr"] == 0.1 for t in waiting)


def test_a_worker_keeps_its_latest_snapshots_only() -> None:
    snaps = Snapshots(keep=2)
    for n in range(4):
        snaps.put(n, f"snapshot {n}")  # type: ignore[arg-type]
    assert snaps.get(0) is None and snaps.get(1) is None
    assert snaps.get(3) == "snapshot 3"
    snaps.drop(3)
    assert snaps.get(3) is None and snaps.get(2) == "snapshot 2"
