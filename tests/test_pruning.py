from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import optuna
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from optuna.pruners import BasePruner, HyperbandPruner, MedianPruner, NopPruner
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from lrsearch import pruning
from lrsearch.pruning import (
    PRUNERS,
    PlateauPruner,
    StallPruner,
    final_upper_bound,
    is_stalled,
    make_pruner,
    schedule_phase,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

Direction = Literal["minimize", "maximize"]
FAST = settings(max_examples=40, deadline=None)

# Loss curves (minimize), one report per epoch at step 1, 2, ...
GOOD = [1.0, 0.6, 0.4, 0.3, 0.25, 0.2]
FAIR = [1.0, 0.7, 0.55, 0.45, 0.4, 0.35]
STALLED_HIGH = [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]  # stalled since epoch 2, worse than both
STALLED_LOW = [1.0, 0.1, 0.1, 0.1, 0.1, 0.1]  # stalled since epoch 2, better than both
IMPROVING_HIGH = [1.2, 1.1, 1.0, 0.95, 0.9, 0.85]  # improving every epoch, worse than both


def _finished(curve: Sequence[float], state: TrialState = TrialState.COMPLETE) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=state,
        value=curve[-1] if state == TrialState.COMPLETE else None,
        intermediate_values={step: v for step, v in enumerate(curve, start=1)},
        params={},
        distributions={},
    )


def _study(
    pruner: BasePruner,
    *others: Sequence[float],
    direction: Direction = "minimize",
    pruned: Sequence[Sequence[float]] = (),
) -> Study:
    study = optuna.create_study(
        direction=direction, pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for curve in others:
        study.add_trial(_finished(curve))
    for curve in pruned:
        study.add_trial(_finished(curve, TrialState.PRUNED))
    return study


def _decisions(study: Study, curve: Sequence[float]) -> list[bool]:
    """Report ``curve`` epoch by epoch in a new trial; ``should_prune`` after each report."""
    trial = study.ask()
    out = []
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        out.append(trial.should_prune())
    return out


def _pruned_at_end(study: Study, curve: Sequence[float]) -> bool:
    return _decisions(study, curve)[-1]


def _plateau(**options: Any) -> StallPruner:
    return StallPruner(**{"patience": 3, "n_startup_trials": 2, **options})


class TestIsStalled:
    @pytest.mark.parametrize(
        ("values", "patience", "maximize", "expected"),
        [
            ([1.0, 0.5, 0.5, 0.5], 2, False, True),
            ([1.0, 0.5, 0.5, 0.4], 2, False, False),
            ([0.1, 0.5, 0.5, 0.5], 2, True, True),
            ([0.1, 0.5, 0.5, 0.6], 2, True, False),
            ([1.0, 0.5, 0.5], 3, False, False),  # no more values than patience
            ([1.0, 0.5, 0.5], 2, False, False),  # 0.5 beats 1.0
            ([1.0, 1.2, 0.9], 2, False, False),  # the best of the window counts, not the last
            ([0.9, 0.5, 0.4, 0.6, 0.6], 2, False, True),  # earlier best 0.4 not beaten
        ],
    )
    def test_examples(
        self, values: list[float], patience: int, maximize: bool, expected: bool
    ) -> None:
        assert is_stalled(values, patience=patience, maximize=maximize) is expected

    def test_min_delta_is_a_strict_threshold(self) -> None:
        values = [1.0, 0.5, 0.5, 0.45]
        assert not is_stalled(values, patience=2, maximize=False, min_delta=0.01)
        assert is_stalled(values, patience=2, maximize=False, min_delta=0.1)
        assert is_stalled([0.0, 1.0], patience=1, maximize=True, min_delta=1.0)

    def test_non_finite_values_never_improve_nor_anchor(self) -> None:
        assert is_stalled([1.0, math.nan, math.inf], patience=2, maximize=True)
        assert is_stalled([1.0, math.nan, -math.inf], patience=2, maximize=False)
        assert not is_stalled([math.nan, math.inf, 0.5], patience=1, maximize=False)

    @pytest.mark.parametrize("patience", [0, -1])
    def test_rejects_bad_patience(self, patience: int) -> None:
        with pytest.raises(ValueError, match=r"patience must be >= 1, got patience=-?\d"):
            is_stalled([1.0, 2.0], patience=patience, maximize=True)

    @pytest.mark.parametrize("min_delta", [-0.1, math.nan, math.inf])
    def test_rejects_bad_min_delta(self, min_delta: float) -> None:
        with pytest.raises(ValueError, match="min_delta must be finite and >= 0"):
            is_stalled([1.0, 2.0], patience=1, maximize=True, min_delta=min_delta)

    @given(
        start=st.floats(-1e3, 1e3),
        min_delta=st.floats(0.0, 1.0),
        gains=st.lists(st.floats(0.0, 10.0), min_size=1, max_size=12),
        patience=st.integers(1, 6),
        maximize=st.booleans(),
    )
    @FAST
    def test_improving_by_more_than_min_delta_never_stalls(
        self, start: float, min_delta: float, gains: list[float], patience: int, maximize: bool
    ) -> None:
        sign = 1.0 if maximize else -1.0
        values = [start]
        for gain in gains:
            values.append(values[-1] + sign * (min_delta + 1e-3 + gain))
        if maximize:
            assume(all(b > a + min_delta for a, b in pairwise(values)))
        else:
            assume(all(b < a - min_delta for a, b in pairwise(values)))
        assert not is_stalled(values, patience=patience, maximize=maximize, min_delta=min_delta)

    @given(
        value=st.floats(allow_nan=False, allow_infinity=False),
        extra=st.integers(1, 10),
        patience=st.integers(1, 6),
        min_delta=st.floats(0.0, 1.0),
        maximize=st.booleans(),
    )
    @FAST
    def test_constant_longer_than_patience_always_stalls(
        self, value: float, extra: int, patience: int, min_delta: float, maximize: bool
    ) -> None:
        values = [value] * (patience + extra)
        assert is_stalled(values, patience=patience, maximize=maximize, min_delta=min_delta)

    @given(
        values=st.lists(st.floats(-1e6, 1e6), max_size=12),
        patience=st.integers(1, 6),
        maximize=st.booleans(),
    )
    @FAST
    def test_no_longer_than_patience_never_stalls_and_flip_is_symmetric(
        self, values: list[float], patience: int, maximize: bool
    ) -> None:
        if len(values) <= patience:
            assert not is_stalled(values, patience=patience, maximize=maximize)
        flipped = [-v for v in values]
        assert is_stalled(values, patience=patience, maximize=maximize) == is_stalled(
            flipped, patience=patience, maximize=not maximize
        )


class TestStallPrunerRule:
    def test_stalled_and_trailing_is_pruned(self) -> None:
        study = _study(_plateau(), GOOD, FAIR)
        # stalled from epoch 2 on: patience 3 is used up at epoch 5
        assert _decisions(study, STALLED_HIGH) == [False] * 4 + [True] * 2

    def test_stalled_but_leading_is_kept(self) -> None:
        study = _study(_plateau(), GOOD, FAIR)
        assert not any(_decisions(study, STALLED_LOW))

    def test_improving_but_trailing_is_kept(self) -> None:
        study = _study(_plateau(), GOOD, FAIR)
        assert not any(_decisions(study, IMPROVING_HIGH))

    def test_maximize_accuracy(self) -> None:
        good, fair = [1 - v for v in GOOD], [1 - v for v in FAIR]
        study = _study(_plateau(), good, fair, direction="maximize")
        assert _pruned_at_end(study, [1 - v for v in STALLED_HIGH])
        assert not _pruned_at_end(study, [1 - v for v in STALLED_LOW])
        assert not _pruned_at_end(study, [1 - v for v in IMPROVING_HIGH])

    def test_best_so_far_not_latest_value_is_ranked(self) -> None:
        # Stalled, and its latest value is the worst of all, but its best (0.1) leads.
        study = _study(_plateau(), GOOD, FAIR)
        assert not _pruned_at_end(study, [1.0, 0.1, 0.9, 0.9, 0.9, 0.9])

    def test_peers_ranked_by_their_best_up_to_the_step(self) -> None:
        # At step 5 the peers' best so far is 0.3 (later 0.01 must not count), the trial's 0.5.
        late_bloomer = [1.0, 0.3, 0.3, 0.3, 0.3, 0.01]
        study = _study(_plateau(percentile=0.0, n_startup_trials=1), late_bloomer)
        assert _decisions(study, [1.0, 0.5, 0.5, 0.5, 0.5]) == [False] * 4 + [True]
        study = _study(_plateau(percentile=0.0, n_startup_trials=1), late_bloomer)
        assert _decisions(study, [1.0, 0.2, 0.2, 0.2, 0.2]) == [False] * 5

    @pytest.mark.parametrize(
        ("min_delta", "pruned"),
        [(0.0, False), (0.01, True)],
    )
    def test_min_delta_makes_tiny_gains_count_as_stalled(
        self, min_delta: float, pruned: bool
    ) -> None:
        creeping = [1.0, 0.9, 0.899, 0.898, 0.897, 0.896]  # gains of 0.001 per epoch
        study = _study(_plateau(min_delta=min_delta), GOOD, FAIR)
        assert _pruned_at_end(study, creeping) is pruned

    def test_patience_counts_reports(self) -> None:
        study = _study(_plateau(patience=1), GOOD, FAIR)
        assert _decisions(study, STALLED_HIGH) == [False, False, True, True, True, True]


class TestStallPrunerGuards:
    def test_warmup_is_respected(self) -> None:
        study = _study(_plateau(n_warmup_steps=6), GOOD, FAIR)
        assert _decisions(study, STALLED_HIGH) == [False] * 5 + [True]  # step 6 == warm-up

    def test_startup_trials_are_respected(self) -> None:
        study = _study(_plateau(n_startup_trials=3), GOOD, FAIR)
        assert not any(_decisions(study, STALLED_HIGH))
        study.add_trial(_finished(FAIR))
        assert _pruned_at_end(study, STALLED_HIGH)

    def test_pruned_trials_do_not_count_as_startup_trials(self) -> None:
        study = _study(_plateau(n_startup_trials=2), GOOD, pruned=[FAIR, FAIR])
        assert not _pruned_at_end(study, STALLED_HIGH)

    @pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
    def test_non_finite_is_pruned_at_once(self, bad: float) -> None:
        pruner = _plateau(n_warmup_steps=100, n_startup_trials=100)
        study = _study(pruner)  # no other trials at all
        assert _decisions(study, [1.0, bad]) == [False, True]
        assert _decisions(_study(pruner), [bad]) == [True]

    def test_no_report_is_never_pruned(self) -> None:
        study = _study(_plateau(n_startup_trials=0))
        trial = study.ask()
        assert not trial.should_prune()

    @pytest.mark.parametrize(("n_min_trials", "pruned"), [(2, True), (3, False)])
    def test_n_min_trials(self, n_min_trials: int, pruned: bool) -> None:
        study = _study(_plateau(n_min_trials=n_min_trials), GOOD, FAIR)
        assert _pruned_at_end(study, STALLED_HIGH) is pruned

    def test_n_min_trials_counts_only_trials_that_reached_the_step(self) -> None:
        short = GOOD[:3]
        study = _study(_plateau(n_min_trials=2), GOOD, short)
        assert not _pruned_at_end(study, STALLED_HIGH)

    def test_diverged_peers_are_left_out(self) -> None:
        diverged = [math.nan] * 6
        study = _study(_plateau(n_min_trials=2, n_startup_trials=1), GOOD, pruned=[diverged])
        assert not _pruned_at_end(study, STALLED_HIGH)

    def test_pruned_trials_are_peers(self) -> None:
        # Complete trials alone would not rank it (n_min_trials=3); the pruned ones do, at the
        # steps they reached before being stopped.
        pruned = [[1.0, 0.5, 0.5, 0.5, 0.5, 0.5], [1.0, 0.6, 0.6, 0.6, 0.6, 0.6]]
        study = _study(_plateau(n_min_trials=3), GOOD, FAIR, pruned=pruned)
        assert _pruned_at_end(study, STALLED_HIGH)

    def test_running_trials_are_not_peers(self) -> None:
        study = _study(_plateau(percentile=0.0, n_startup_trials=1), FAIR)
        runner = study.ask()
        for step, value in enumerate(GOOD, start=1):
            runner.report(value, step)
        # Ranked against FAIR (0.35) only, a stalled 0.3 leads; against the runner's 0.2 it
        # would not.
        assert not _pruned_at_end(study, [1.0, 0.3, 0.3, 0.3, 0.3, 0.3])

    def test_failed_trials_are_not_peers(self) -> None:
        study = _study(_plateau(n_startup_trials=1, percentile=0.0), FAIR)
        study.add_trial(_finished(GOOD, TrialState.FAIL))
        assert not _pruned_at_end(study, [1.0, 0.3, 0.3, 0.3, 0.3, 0.3])


class TestPercentile:
    # Peers' bests at step 6: 0.2, 0.35, 0.5. Each stalled trial sits at one level from then on.
    PEERS = (GOOD, FAIR, [1.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    LEVELS = (0.19, 0.3, 0.45, 0.6)  # beats all, second, third, worse than all

    @pytest.mark.parametrize("direction", ["minimize", "maximize"])
    @pytest.mark.parametrize(
        ("percentile", "pruned"),
        [
            (100.0, [False, False, False, True]),  # only what is worse than every peer goes
            (50.0, [False, False, True, True]),  # the median peer is the bar
            (0.0, [False, True, True, True]),  # only what matches the best peer stays
        ],
    )
    def test_extremes_and_median(
        self, direction: Direction, percentile: float, pruned: list[bool]
    ) -> None:
        sign = 1.0 if direction == "minimize" else -1.0
        peers = [[sign * v for v in curve] for curve in self.PEERS]
        decisions = []
        for level in self.LEVELS:
            study = _study(_plateau(percentile=percentile), *peers, direction=direction)
            decisions.append(_pruned_at_end(study, [sign * v for v in [1.0] + [level] * 5]))
        assert decisions == pruned

    def test_tie_with_the_cut_is_kept(self) -> None:
        study = _study(_plateau(percentile=0.0), GOOD, FAIR)
        assert not _pruned_at_end(study, [1.0, 0.2, 0.2, 0.2, 0.2, 0.2])


class TestStallPrunerArgs:
    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"patience": 0}, "patience must be >= 1, got patience=0"),
            ({"min_delta": -1.0}, "min_delta must be finite and >= 0, got min_delta=-1.0"),
            ({"percentile": 101.0}, "percentile must be in [0, 100], got percentile=101.0"),
            ({"percentile": math.nan}, "percentile must be in [0, 100], got percentile=nan"),
            ({"n_warmup_steps": -1}, "n_warmup_steps must be >= 0, got n_warmup_steps=-1"),
            ({"n_startup_trials": -1}, "n_startup_trials must be >= 0, got n_startup_trials=-1"),
            ({"n_min_trials": 0}, "n_min_trials must be >= 1, got n_min_trials=0"),
        ],
    )
    def test_rejects_bad_values(self, options: dict[str, float], message: str) -> None:
        with pytest.raises(ValueError) as info:
            StallPruner(**options)  # type: ignore[arg-type]
        assert str(info.value) == message

    def test_options_are_keyword_only(self) -> None:
        with pytest.raises(TypeError):
            StallPruner(3)  # type: ignore[misc]


# Options each registered pruner needs to run in the contract tests.
_CONTRACT_OPTIONS: dict[str, dict[str, object]] = {"percentile": {"percentile": 50.0}}


@pytest.mark.parametrize("name", sorted(PRUNERS))
class TestPrunerContract:
    def test_is_a_base_pruner(self, name: str) -> None:
        assert isinstance(make_pruner(name, **_CONTRACT_OPTIONS.get(name, {})), BasePruner)

    @pytest.mark.parametrize("direction", ["minimize", "maximize"])
    def test_runs_an_ask_report_loop(self, name: str, direction: Direction) -> None:
        pruner = make_pruner(name, **_CONTRACT_OPTIONS.get(name, {}))
        study = _study(pruner, direction=direction)
        sign = 1.0 if direction == "minimize" else -1.0
        for level in [0.1, 0.2, 0.9, 0.3, 0.95, 0.15, 0.99, 0.5]:
            trial = study.ask()
            value = 1.0
            for step in range(1, 7):
                value = sign * max(level, 1.0 / step)
                trial.report(value, step)
                decision = trial.should_prune()
                assert isinstance(decision, bool | np.bool_)  # Optuna's percentile: np.bool_
                if decision:
                    study.tell(trial, state=TrialState.PRUNED)
                    break
            else:
                study.tell(trial, value)
        states = {t.state for t in study.trials}
        assert states <= {TrialState.COMPLETE, TrialState.PRUNED}
        assert study.trials[0].state == TrialState.COMPLETE  # nothing to rank the first against

    def test_trial_without_reports_is_kept(self, name: str) -> None:
        study = _study(make_pruner(name, **_CONTRACT_OPTIONS.get(name, {})), GOOD, FAIR)
        assert not study.ask().should_prune()


class TestMakePruner:
    def test_registry(self) -> None:
        assert PRUNERS["plateau"] is PlateauPruner
        assert PRUNERS["stall"] is StallPruner
        assert PRUNERS["median"] is MedianPruner
        assert PRUNERS["hyperband"] is HyperbandPruner
        assert PRUNERS["none"] is NopPruner
        assert {"plateau", "stall", "median", "hyperband", "none"} <= set(PRUNERS)

    def test_passes_options(self) -> None:
        pruner = make_pruner("stall", patience=5, min_delta=0.01)
        assert isinstance(pruner, StallPruner)
        assert pruner._patience == 5
        assert pruner._min_delta == 0.01

    def test_unknown_name_lists_valid_ones(self) -> None:
        with pytest.raises(ValueError) as info:
            make_pruner("asha")
        message = str(info.value)
        assert message.startswith("unknown pruner 'asha'; use one of ")
        for name in PRUNERS:
            assert name in message

    def test_unknown_option_is_named(self) -> None:
        with pytest.raises(TypeError, match=r"pruner 'median' has no option 'patience'"):
            make_pruner("median", patience=3)
        with pytest.raises(TypeError, match=r"valid options: none"):
            make_pruner("none", patience=3)

    def test_missing_option_is_named(self) -> None:
        with pytest.raises(TypeError, match=r"pruner 'percentile' needs option 'percentile'"):
            make_pruner("percentile")

    def test_bad_value_keeps_the_pruners_message(self) -> None:
        with pytest.raises(ValueError, match=r"patience must be >= 1, got patience=0"):
            make_pruner("stall", patience=0)
        with pytest.raises(ValueError, match=r"confidence must be in \(0.5, 1\)"):
            make_pruner("plateau", confidence=1.0)


def test_public_surface() -> None:
    assert sorted(pruning.__all__) == [
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


# -- PlateauPruner: phase-aware, judged by finished trials' comebacks ---------------------------


def _derived(cycle_frac: float, total: int = 1000) -> dict[str, Any]:
    return {"derived": {"cycle_steps": int(cycle_frac * total), "total_steps": total}}


def _accuracy_trial(curve: Sequence[float], cycle_frac: float) -> FrozenTrial:
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        value=curve[-1],
        intermediate_values={step: v for step, v in enumerate(curve, start=1)},
        user_attrs=_derived(cycle_frac),
        params={},
        distributions={},
    )


# Peers whose cycle ends at epoch 5 of 10: slow climb, then the annihilation tail jumps.
SHORT_CYCLE = [40.0, 50.0, 55.0, 60.0, 65.0, 85.0, 88.0, 90.0, 91.0, 92.0]
OFFSETS = (-3.0, -1.2, 0.8, 3.1)  # levels of the four peers (the finals differ a little more)


def _peer_study(pruner: BasePruner) -> Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for k, off in enumerate(OFFSETS):
        curve = [v + off for v in SHORT_CYCLE]
        curve[-1] += (-0.4, 0.3, -0.2, 0.5)[k]
        study.add_trial(_accuracy_trial(curve, cycle_frac=0.5))
    return study


def _first_prune(study: Study, curve: Sequence[float], cycle_frac: float) -> int | None:
    trial = study.ask()
    trial.set_user_attr("derived", _derived(cycle_frac)["derived"])
    for step, value in enumerate(curve, start=1):
        trial.report(value, step)
        if trial.should_prune():
            return step
    return None


class TestPlateauPruner:
    def test_prunes_a_trial_far_behind_its_peers_at_the_same_phase(self) -> None:
        study = _peer_study(PlateauPruner(epochs=10))
        hopeless = [v - 30.0 for v in SHORT_CYCLE]
        assert _first_prune(study, hopeless, cycle_frac=0.5) == 1

    def test_keeps_a_trial_level_with_its_peers(self) -> None:
        study = _peer_study(PlateauPruner(epochs=10))
        assert _first_prune(study, [v + 0.5 for v in SHORT_CYCLE], cycle_frac=0.5) is None

    def test_a_longer_cycle_is_judged_at_its_phase_not_its_epoch(self) -> None:
        # No tail: at epoch 6 it is at phase 0.6, where its peers were at epoch 3 (55).
        long_cycle = [45.0, 50.0, 53.0, 56.0, 59.0, 62.0, 66.0, 70.0, 80.0, 93.0]
        by_phase = _peer_study(PlateauPruner(epochs=10))
        assert _first_prune(by_phase, long_cycle, cycle_frac=1.0) is None
        # The same curve judged at equal epochs falls behind its peers and is pruned.
        by_epoch = _peer_study(PlateauPruner(epochs=None))
        assert _first_prune(by_epoch, long_cycle, cycle_frac=1.0) is not None

    def test_nan_prunes_at_once_even_before_any_peer(self) -> None:
        study = optuna.create_study(direction="maximize", pruner=PlateauPruner(epochs=10))
        assert _first_prune(study, [10.0, math.nan], cycle_frac=0.9) == 2

    def test_waits_for_startup_trials_and_warmup_and_never_judges_the_last_epoch(self) -> None:
        hopeless = [v - 30.0 for v in SHORT_CYCLE]
        few = optuna.create_study(
            direction="maximize", pruner=PlateauPruner(epochs=10, n_startup_trials=5)
        )
        for off in OFFSETS:
            few.add_trial(_accuracy_trial([v + off for v in SHORT_CYCLE], 0.5))
        assert _first_prune(few, hopeless, cycle_frac=0.5) is None  # 4 < 5 finished
        late = _peer_study(PlateauPruner(epochs=10, n_warmup_steps=3))
        assert _first_prune(late, hopeless, cycle_frac=0.5) == 3
        last = _peer_study(PlateauPruner(epochs=10))
        trial = last.ask()
        trial.report(0.0, 10)
        assert not trial.should_prune()

    def test_minimize_is_the_mirror_image(self) -> None:
        study = optuna.create_study(direction="minimize", pruner=PlateauPruner(epochs=10))
        for k, off in enumerate(OFFSETS):
            curve = [-(v + off) for v in SHORT_CYCLE]
            curve[-1] -= (-0.4, 0.3, -0.2, 0.5)[k]
            study.add_trial(_accuracy_trial(curve, cycle_frac=0.5))
        assert _first_prune(study, [-(v - 30.0) for v in SHORT_CYCLE], cycle_frac=0.5) == 1
        assert _first_prune(study, [-(v + 0.5) for v in SHORT_CYCLE], cycle_frac=0.5) is None


class TestFinalUpperBound:
    PAIRS = ((50.0, 90.0), (60.0, 92.0), (70.0, 95.0), (40.0, 85.0), (55.0, 91.5))

    def test_needs_three_peers_with_spread(self) -> None:
        assert final_upper_bound(10.0, self.PAIRS[:2], 0.9) == math.inf
        assert final_upper_bound(10.0, [(5.0, 1.0), (5.0, 2.0), (5.0, 3.0)], 0.9) == math.inf

    def test_curves_that_cross_after_this_phase_forbid_pruning(self) -> None:
        # now and the end are unrelated (ranks reversed): nothing is predictable
        crossing = [(40.0, 95.0), (70.0, 85.0), (50.0, 93.0), (60.0, 88.0), (55.0, 96.0)]
        assert final_upper_bound(40.0, crossing, 0.9) >= max(f for _, f in crossing) - 1.0

    def test_higher_confidence_and_fewer_peers_widen_the_bound(self) -> None:
        lo = final_upper_bound(45.0, self.PAIRS, 0.75)
        hi = final_upper_bound(45.0, self.PAIRS, 0.99)
        few = final_upper_bound(45.0, self.PAIRS[:3], 0.75)
        assert lo < hi and lo < few

    @FAST
    @given(epoch=st.floats(0.0, 10.0), cycle=st.floats(0.05, 1.0))
    def test_phase_round_trips_to_the_epoch(self, epoch: float, cycle: float) -> None:
        from lrsearch.pruning import phase_epoch

        phase = schedule_phase(epoch, 10, cycle)
        assert 0.0 <= phase <= 2.0
        assert phase_epoch(phase, 10, cycle) == pytest.approx(epoch, abs=1e-6)


def test_plateau_reads_the_finished_trials_once_per_trial_not_per_epoch() -> None:
    reads = []

    class Counting(PlateauPruner):
        def prune(self, study: Study, trial: FrozenTrial) -> bool:
            original = study.get_trials

            def counted(*args: Any, **kwargs: Any) -> Any:
                reads.append(trial.number)
                return original(*args, **kwargs)

            study.get_trials = counted  # type: ignore[method-assign]
            try:
                return super().prune(study, trial)
            finally:
                study.get_trials = original  # type: ignore[method-assign]

    study = _peer_study(Counting(epochs=10))
    for curve in ([v + 0.5 for v in SHORT_CYCLE], [v + 1.0 for v in SHORT_CYCLE]):
        assert _first_prune(study, curve, cycle_frac=0.5) is None
        study.tell(study.trials[-1].number, curve[-1])
    assert reads == [4, 5]  # one read each, though each was judged at 9 epochs


# --- the plateau rule at its threshold -------------------------------------------------------
# Five finished trials, compared at equal epochs (epochs=None): value at epoch 1 -> final value.
NEAR = ((50.0, 80.0), (60.0, 83.0), (70.0, 88.0), (80.0, 90.0), (90.0, 94.0))
NEAR_FINALS = sorted((f for _, f in NEAR), reverse=True)  # 94, 90, 88, 83, 80


def _near_study(pruner: BasePruner) -> Study:
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for now, final in NEAR:
        study.add_trial(_finished([now, final]))
    return study


def _mine_for(bound: float, pairs: Sequence[tuple[float, float]] = NEAR) -> float:
    """The value now whose upper bound of the final value is ``bound`` (bisection)."""
    lo, hi = -500.0, 500.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if final_upper_bound(mid, pairs, 0.9) < bound else (lo, mid)
    return (lo + hi) / 2


def _judged(study: Study, values: Sequence[float]) -> bool:
    trial = study.ask()
    for step, value in enumerate(values, start=1):
        trial.report(value, step)
    return trial.should_prune()


class TestPlateauThreshold:
    @pytest.mark.parametrize("keep_top", [1, 2, 3, 4])
    def test_the_bar_is_the_keep_top_th_best_final(self, keep_top: int) -> None:
        """Pruned just below the keep_top-th best final, kept just above it: not the next."""
        bar = NEAR_FINALS[keep_top - 1]
        below, above = NEAR_FINALS[keep_top], NEAR_FINALS[keep_top - 2] if keep_top > 1 else 99.0
        study = _near_study(PlateauPruner(keep_top=keep_top, epochs=None, n_warmup_steps=1))
        # bound halfway between the bar and the next final down: below the bar, so pruned
        assert _judged(study, [_mine_for((bar + below) / 2)])
        # bound halfway between the bar and the next final up: above the bar, so kept
        assert not _judged(study, [_mine_for((bar + above) / 2)])
        # and right at the edges (the rule is "strictly below the bar")
        assert _judged(study, [_mine_for(bar - 1e-6)])
        assert not _judged(study, [_mine_for(bar + 1e-6)])

    def test_the_slope_is_floored_at_zero(self) -> None:
        """Peers that were better now and ended worse never make a good trial look hopeless."""
        falling = [(1.0, 4.0), (2.0, 3.0), (3.0, 2.0), (4.0, 1.0)]  # exactly slope -1
        mean, s = 2.5, math.sqrt(5.0 / 2.0)  # the flat line's level and residual spread
        for mine in (0.0, 2.5, 10.0):
            spread = s * math.sqrt(1.0 + 1.0 / 4 + (mine - 2.5) ** 2 / 5.0)
            expected = mean + pruning._t_quantile(0.9, 2) * spread
            assert final_upper_bound(mine, falling, 0.9) == pytest.approx(expected, rel=1e-12)
        # Without the floor the bound of mine=10 would be 5 - 10 = -5: pruned by every peer.
        study = optuna.create_study(direction="maximize", pruner=PlateauPruner(epochs=None))
        for now, final in falling:
            study.add_trial(_finished([now, final]))
        assert not _judged(study, [10.0])

    def test_the_running_best_is_judged_not_the_latest_value(self) -> None:
        """A trial that reached a good value and then dipped is judged by the good value."""
        three = [
            (now, mid, final) for (now, final), mid in zip(NEAR, (81, 84, 88, 91, 94), strict=True)
        ]
        study = optuna.create_study(
            direction="maximize", pruner=PlateauPruner(epochs=None, n_warmup_steps=1)
        )
        for now, mid, final in three:
            study.add_trial(_finished([now, mid, final]))
        # Its best so far (epoch 1) against the peers' best up to epoch 2 (their epoch-2
        # values) bounds its final just above the bar; its latest value is far below.
        pairs = [(mid, final) for _, mid, final in three]
        good = _mine_for(NEAR_FINALS[2] + 1.0, pairs)
        assert final_upper_bound(0.0, pairs, 0.9) < NEAR_FINALS[2]  # the latest would prune
        assert not _judged(study, [good])
        assert not _judged(study, [good, 0.0])


# --- what the plateau pruner says about its judgement ----------------------------------------


def test_the_decision_names_the_bound_and_the_bar_it_was_compared_with() -> None:
    pruner = PlateauPruner(keep_top=2, epochs=None, n_warmup_steps=1)
    study = _near_study(pruner)
    trial = study.ask()
    trial.report(_mine_for(NEAR_FINALS[1] - 1.0), 1)
    assert trial.should_prune()
    decision = pruning.last_decision(pruner, study.study_name, trial.number)
    assert decision is not None and decision.pruned
    assert decision.epoch == 1 and decision.phase == 1.0 and decision.peers == len(NEAR)
    assert decision.threshold == NEAR_FINALS[1]  # the 2nd best final
    assert decision.bound == pytest.approx(NEAR_FINALS[1] - 1.0, abs=1e-6)
    line = decision.describe()
    assert f"{decision.bound:.4g}" in line and "short of 90, the 2nd best final of 5" in line
    kept = study.ask()
    kept.report(_mine_for(NEAR_FINALS[1] + 1.0), 1)
    assert not kept.should_prune()
    after = pruning.last_decision(pruner, study.study_name, kept.number)
    assert after is not None and not after.pruned and "within reach of 90" in after.describe()
    # no judgement kept for a trial never compared, nor by a pruner that keeps none
    assert pruning.last_decision(pruner, study.study_name, 99) is None
    assert pruning.last_decision(MedianPruner(), study.study_name, trial.number) is None


def test_a_loss_decision_is_in_the_losss_units() -> None:
    """Minimising, the bound is a lower bound of the loss and the bar the keep_top-th lowest."""
    pruner = PlateauPruner(keep_top=1, epochs=None, n_warmup_steps=1)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for now, final in NEAR:
        study.add_trial(_finished([-now, -final]))
    trial = study.ask()
    trial.report(-_mine_for(NEAR_FINALS[0] - 2.0), 1)
    assert trial.should_prune()
    decision = pruning.last_decision(pruner, study.study_name, trial.number)
    assert decision is not None
    assert decision.threshold == -NEAR_FINALS[0]
    assert decision.bound == pytest.approx(-(NEAR_FINALS[0] - 2.0), abs=1e-6)
