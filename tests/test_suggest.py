from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrsearch.suggest import (
    SUGGESTION_NAMES,
    CurveSuggestions,
    DivergenceWatch,
    LossSmoother,
    SuggestionSummary,
    divergence_index,
    smooth,
    suggest,
    summarize,
)

FAST = settings(max_examples=60, deadline=None)


def synthetic_curve(
    *,
    n: int = 200,
    u_lo: float = -7.0,
    u_hi: float = 1.0,
    u_steep: float = -4.0,
    u_div: float = -1.5,
    drop: float = 1.5,
    noise: float = 0.0,
    shift: float = 0.0,
    nan_from: float | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """A range-test curve vs u = log10(lr): flat, a logistic descent centred on u_steep,
    a floor, then a blow-up from u_div (x10 every 1/8 decade); optional NaN tail."""
    lrs = np.logspace(u_lo, u_hi, n)
    u = np.log10(lrs)
    start = 2.3
    loss = start - drop / (1.0 + np.exp(-4.0 * (u - u_steep)))
    loss = loss + np.where(u > u_div, start * (10.0 ** (8.0 * np.clip(u - u_div, 0, None)) - 1), 0)
    loss = loss + noise * np.random.default_rng(seed).standard_normal(n) + shift
    if nan_from is not None:
        loss[u >= nan_from] = np.nan
    return lrs, loss


def assert_inside(s: CurveSuggestions, lrs: np.ndarray) -> None:
    for name in SUGGESTION_NAMES:
        value = getattr(s, name)
        assert isinstance(value, float)
        assert lrs[0] <= value <= lrs[-1], (name, value)
    assert set(s.fallbacks) <= {"steep", "min10", "valley", "rise"}
    if not s.signal:  # no descent above the noise: none of its readings is read
        assert {"steep", "min10", "valley"} <= set(s.fallbacks)
    assert s.rise <= s.diverge
    assert s.stopped_early == (s.diverge_index is not None)
    if s.diverge_index is not None:
        assert 0 <= s.diverge_index < lrs.size
        # the raw losses cross the threshold before the lagging smoothed curve fires
        assert lrs[0] <= s.diverge <= lrs[s.diverge_index]
    else:
        assert s.diverge == lrs[-1]


curves = st.fixed_dictionaries(
    {
        "n": st.integers(40, 400),
        "u_steep": st.floats(-6.0, -3.5),
        "gap": st.floats(1.0, 3.0),
        "drop": st.floats(0.5, 2.0),
        "noise_frac": st.floats(0.0, 0.1),
        "shift": st.sampled_from([0.0, -2.3, -10.0, -100.0]),
        "seed": st.integers(0, 2**16),
    }
)


def make(params: dict, **extra: object) -> tuple[np.ndarray, np.ndarray]:
    return synthetic_curve(
        n=params["n"],
        u_steep=params["u_steep"],
        u_div=params["u_steep"] + params["gap"],
        drop=params["drop"],
        noise=params["noise_frac"] * params["drop"],
        shift=params["shift"],
        seed=params["seed"],
        **extra,  # type: ignore[arg-type]
    )


class TestSmooth:
    @given(st.floats(-1e6, 1e6), st.integers(1, 300), st.floats(0.0, 0.999))
    @FAST
    def test_bias_correction_keeps_a_constant(self, c: float, n: int, beta: float) -> None:
        out = smooth(np.full(n, c), beta)
        np.testing.assert_allclose(out, c, rtol=1e-9, atol=1e-12)

    def test_first_value_is_the_first_loss_and_matches_the_recurrence(self) -> None:
        x = np.array([3.0, 1.0, 2.0, 5.0])
        beta = 0.9
        avg, expected = 0.0, []
        for i, v in enumerate(x):
            avg = beta * avg + (1 - beta) * v
            expected.append(avg / (1 - beta ** (i + 1)))
        np.testing.assert_allclose(smooth(x, beta), expected, rtol=1e-12)
        assert smooth(x, beta)[0] == 3.0

    def test_beta_zero_is_identity(self) -> None:
        x = np.array([3.0, -1.0, 2.5])
        np.testing.assert_array_equal(smooth(x, 0.0), x)

    @given(
        st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=50),
        st.data(),
        st.sampled_from([math.nan, math.inf, -math.inf]),
    )
    @FAST
    def test_non_finite_poisons_the_rest(self, values: list[float], data, bad: float) -> None:
        k = data.draw(st.integers(0, len(values) - 1))
        x = np.array(values)
        x[k] = bad
        out = smooth(x)
        assert np.all(np.isposinf(out[k:]))
        np.testing.assert_array_equal(out[:k], smooth(x[:k]))

    @pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5, math.nan])
    def test_rejects_bad_beta(self, beta: float) -> None:
        with pytest.raises(ValueError, match="beta must be in"):
            smooth([1.0, 2.0], beta)
        with pytest.raises(ValueError, match="beta must be in"):
            LossSmoother(beta)

    @given(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=60),
        st.floats(0.0, 0.999),
    )
    @FAST
    def test_one_at_a_time_equals_the_whole_curve(self, values: list[float], beta: float) -> None:
        smoother = LossSmoother(beta)
        online = [smoother.add(v) for v in values]
        np.testing.assert_array_equal(online, smooth(values, beta))


class TestDivergenceIndex:
    def test_classic_rule_for_positive_losses(self) -> None:
        # best 1.0 after a drop of 0.5: the scale is |best|, so it fires above 4 * best.
        s = np.concatenate([np.linspace(1.5, 1.0, 20), [2.0, 3.9, 4.1]])
        assert divergence_index(s, factor=4.0, skip_start=5) == 22

    def test_best_of_zero_does_not_fire_on_any_rise(self) -> None:
        s = np.concatenate([np.linspace(2.0, 0.0, 50), np.zeros(30), np.linspace(0, 1.9, 20)])
        assert divergence_index(s) is None  # "4 x 0" would have fired at the first rise
        s = np.concatenate([s, [5.9, 6.1]])
        assert divergence_index(s) == 101  # 3 drops (3 x 2.0) above the best

    def test_negative_losses_do_not_fire_on_the_first_step(self) -> None:
        s = np.concatenate([np.linspace(-8.0, -10.0, 50), np.linspace(-10.0, -8.0, 30)])
        assert divergence_index(s) is None  # "s > 4 * best" holds everywhere here
        # 3 drops (3 x 2.0) above the best of -10 is -4.
        assert divergence_index(np.concatenate([s, [-4.1, -3.9]])) == 81

    def test_noisy_flat_negative_start_with_a_low_first_value(self) -> None:
        rng = np.random.default_rng(1)
        x = -10.0 + 0.1 * rng.standard_normal(300)
        x[0] = -10.5
        assert divergence_index(smooth(x)) is None

    def test_non_finite_fires_even_before_skip_start(self) -> None:
        assert divergence_index([1.0, 1.0, math.inf, 1.0], skip_start=10) == 2
        assert divergence_index([math.nan]) == 0
        assert divergence_index([1.0, 1.0]) is None
        assert divergence_index([]) is None

    def test_exact_constant_never_fires(self) -> None:
        for c in (0.0, -1e4, 3.0):
            assert divergence_index(smooth(np.full(500, c)), skip_start=0) is None

    @given(curves)
    @FAST
    def test_shift_invariant_once_every_loss_is_negative(self, params: dict) -> None:
        params = {**params, "noise_frac": max(params["noise_frac"], 0.01)}
        _, loss = make(params)
        loss = loss[: np.argmax(loss > 1e3)] if np.any(loss > 1e3) else loss
        shifted = [smooth(loss - np.max(loss) - c) for c in (1.0, 50.0)]
        assert divergence_index(shifted[0]) == divergence_index(shifted[1])

    def test_online(self) -> None:
        _, loss = synthetic_curve(noise=0.05)
        s = smooth(loss)
        d = divergence_index(s)
        assert d is not None
        assert divergence_index(s[: d + 1]) == d
        assert divergence_index(s[:d]) is None

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [({"factor": 1.0}, "factor must be"), ({"skip_start": -1}, "skip_start must be")],
    )
    def test_rejects_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            divergence_index([1.0, 2.0], **kwargs)
        with pytest.raises(ValueError, match=match):
            DivergenceWatch(**kwargs)

    @given(curves, st.floats(1.5, 6.0), st.integers(0, 20))
    @FAST
    def test_watch_fires_where_a_direct_recomputation_does(
        self, params: dict, factor: float, skip_start: int
    ) -> None:
        _, loss = make(params)
        s = smooth(loss)
        watch = DivergenceWatch(factor=factor, skip_start=skip_start)
        fired = [watch.add(float(v)) for v in s]
        direct = _divergence_index_vectorised(s, factor=factor, skip_start=skip_start)
        assert watch.index == direct == divergence_index(s, factor=factor, skip_start=skip_start)
        assert fired == [direct is not None and i >= direct for i in range(s.size)]

    @given(
        st.lists(st.sampled_from([-1e300, -3.0, -1.0, 0.0, 0.5, 1.0, 2.0, 1e300]), max_size=40),
        st.floats(1.5, 6.0),
        st.integers(0, 5),
    )
    @FAST
    def test_watch_matches_the_vectorised_rule_on_awkward_values(
        self, values: list[float], factor: float, skip_start: int
    ) -> None:
        s = np.array(values)
        expected = _divergence_index_vectorised(s, factor=factor, skip_start=skip_start)
        assert divergence_index(s, factor=factor, skip_start=skip_start) == expected


class TestSuggest:
    @given(curves, st.booleans())
    @FAST
    def test_synthetic_curves(self, params: dict, nan_tail: bool) -> None:
        u_div = params["u_steep"] + params["gap"]
        lrs, loss = make(params, nan_from=u_div + 0.3 if nan_tail else None)
        s = suggest(lrs, loss)
        assert_inside(s, lrs)
        # A descent of 0.5+ resolved by 100+ points in 1.5+ decades before the blow-up shows
        # above noise of at most 5% of it; shorter or closer ones may not (then: no signal).
        if params["n"] >= 100 and params["gap"] >= 1.5 and params["noise_frac"] <= 0.05:
            assert s.signal
        if not s.signal:
            return
        assert not set(s.fallbacks) & {"steep", "min10", "valley"}
        # Stops near the known blow-up: never before it, at most ~0.4 decades (plus one
        # grid step) after; and never after the first NaN.
        step = np.log10(lrs[1] / lrs[0])
        assert u_div - step <= math.log10(s.diverge) <= u_div + 0.4 + step
        # Steep and valley lie on the way down to the minimum; the minimum before divergence.
        assert s.steep <= s.min10 * 10 * (1 + 1e-12)
        assert s.valley <= s.min10 * 10 * (1 + 1e-12)
        assert s.min10 * 10 < s.diverge

    @given(curves)
    @FAST
    def test_suggestions_do_not_depend_on_a_negative_offset(self, params: dict) -> None:
        params = {**params, "noise_frac": max(params["noise_frac"], 0.01), "shift": 0.0}
        lrs, loss = make(params)
        loss = np.minimum(loss, 1e4)
        a, b = (suggest(lrs, loss - 1e4 - c) for c in (1.0, 20.0))
        assert (a.diverge_index, a.fallbacks) == (b.diverge_index, b.fallbacks)
        for name in SUGGESTION_NAMES:
            assert getattr(a, name) == pytest.approx(getattr(b, name), rel=1e-9)

    def test_noise_free_curve_lands_where_it_should(self) -> None:
        lrs, loss = synthetic_curve(n=401, u_steep=-4.0, u_div=-1.5)
        s = suggest(lrs, loss)
        # The EMA lags the raw curve; its steepest point trails the logistic's centre a bit.
        assert -4.0 <= math.log10(s.steep) <= -3.3
        assert math.log10(s.steep) < math.log10(s.valley) < math.log10(s.min10 * 10) < -1.4
        assert -1.5 <= math.log10(s.diverge) <= -1.1

    def test_flat_start_is_not_a_descent(self) -> None:
        lrs = np.logspace(-6, 0, 120)
        loss = np.concatenate([np.full(60, 2.0), np.linspace(2.0, 0.5, 40), np.full(20, 0.5)])
        s = suggest(lrs, loss, beta=0.0, skip_start=0, skip_end=0)
        assert s.signal
        assert s.fallbacks == ("rise",)  # the loss never climbs again
        assert lrs[60] <= s.steep <= lrs[100]
        # valley: 2/3 of the way (in log10) from the top (index 60; 59 -> 60 is not a fall)
        # to the bottom (index 99, the first minimum).
        u = np.log10(lrs)
        assert math.log10(s.valley) == pytest.approx(u[60] + 2 / 3 * (u[99] - u[60]))

    def test_two_descents_the_readings_follow_the_one_that_ends_at_the_minimum(self) -> None:
        lrs = np.logspace(-7, 1, 160)
        u = np.log10(lrs)
        rng = np.random.default_rng(3)
        loss = 2.3 - 0.4 / (1 + np.exp(-8 * (u + 5.5))) - 1.4 / (1 + np.exp(-8 * (u + 2)))
        loss = (
            loss
            + 0.01 * rng.standard_normal(u.size)
            + np.where(u > -0.5, 10 ** (3 * (u + 0.5)) - 1, 0)
        )
        s = suggest(lrs, loss)
        assert s.signal
        # The first, shallow descent (around 1e-5.5) ends on a plateau; valley and steep sit on
        # the second (around 1e-2, later by the EMA's lag), not between the two.
        assert -2.6 <= math.log10(s.valley) <= -1.0
        assert -2.5 <= math.log10(s.steep) <= -1.0

    def test_flat_at_chance_then_a_rise_has_no_signal_and_reads_the_rise(self) -> None:
        # The GRU of issue 19: it does not learn within the ramp, so its loss sits at chance
        # (batch noise around ln 2) until the LR is large enough to break it.
        lrs = np.logspace(-7, 1, 100)
        u = np.log10(lrs)
        for seed in range(10):
            noise = 0.03 * np.random.default_rng(seed).standard_normal(u.size)
            loss = 0.693 + noise + np.where(u > -1, 0.693 * (10 ** (2 * (u + 1)) - 1), 0)
            s = suggest(lrs, loss)
            assert not s.signal, seed
            assert {"steep", "min10", "valley"} <= set(s.fallbacks)
            assert -1.2 <= math.log10(s.rise) <= 0.0  # just after the rise starts, not noise

    def test_pure_noise_has_no_signal(self) -> None:
        lrs = np.logspace(-7, 1, 100)
        for seed in range(20):
            loss = 1.0 + 0.2 * np.random.default_rng(seed).standard_normal(100)
            assert not suggest(lrs, loss).signal, seed

    def test_a_drift_of_a_few_percent_is_no_descent(self) -> None:
        lrs = np.logspace(-7, 1, 100)
        loss = np.linspace(2.30, 2.26, 100)  # noise-free, yet under MIN_RELATIVE_DROP
        assert not suggest(lrs, loss).signal
        assert suggest(lrs, np.linspace(2.30, 1.8, 100)).signal

    def test_noise_from_the_repeats_raises_the_bar(self) -> None:
        lrs = np.logspace(-7, 1, 100)
        u = np.log10(lrs)
        loss = 1.0 - 0.2 / (1 + np.exp(-4 * (u + 3)))
        assert suggest(lrs, loss).signal
        assert not suggest(lrs, loss, noise=0.1).signal

    def test_late_divergence_is_read_as_the_rise(self) -> None:
        lrs, loss = synthetic_curve(n=200, u_steep=-5.0, u_div=0.5)
        s = suggest(lrs, loss)
        assert s.signal
        assert math.log10(s.rise) >= 0.3  # the loss stays at its floor until the blow-up
        assert s.rise <= s.diverge

    def test_noisy_small_table_still_finds_a_real_descent(self) -> None:
        # The small-table regression: a large drop under heavy batch noise.
        lrs = np.logspace(-7, 1, 100)
        u = np.log10(lrs)
        loss = (
            25.0
            - 20.0 / (1 + np.exp(-3 * (u + 2.5)))
            + np.where(u > 0, 25 * (10 ** (3 * u) - 1), 0)
        )
        loss = loss * np.exp(0.3 * np.random.default_rng(0).standard_normal(100))
        s = suggest(lrs, loss)
        assert s.signal
        # nothing read on the flat start: every descent reading sits within the descent
        assert math.log10(s.steep) >= -4.0
        assert math.log10(s.valley) >= -4.0

    def test_all_nan_falls_back_to_the_middle(self) -> None:
        lrs = np.logspace(-6, 0, 50)
        s = suggest(lrs, np.full(50, np.nan))
        assert s.diverge_index == 0
        assert s.diverge == lrs[0]
        assert s.fallbacks == ("steep", "min10", "valley")  # it "rose" at its divergence
        assert not s.signal and s.rise == s.diverge
        assert s.steep == s.min10 == s.valley == pytest.approx(1e-3)

    def test_rising_curve_has_no_descent(self) -> None:
        lrs = np.logspace(-6, 0, 50)
        s = suggest(lrs, np.linspace(1.0, 1.5, 50))
        assert not s.signal
        assert {"steep", "min10", "valley"} <= set(s.fallbacks)
        assert_inside(s, lrs)

    @given(
        st.lists(
            st.one_of(st.floats(-1e6, 1e6), st.sampled_from([math.nan, math.inf, -math.inf])),
            min_size=1,
            max_size=30,
        ),
        st.integers(0, 20),
        st.integers(0, 20),
        st.sampled_from([0.0, 0.5, 0.98]),
    )
    @FAST
    def test_never_crashes_on_short_or_broken_curves(
        self, losses: list[float], skip_start: int, skip_end: int, beta: float
    ) -> None:
        lrs = np.logspace(-5, -1, len(losses))
        s = suggest(lrs, losses, skip_start=skip_start, skip_end=skip_end, beta=beta)
        assert_inside(s, lrs)
        assert CurveSuggestions.from_dict(json.loads(json.dumps(s.to_dict()))) == s

    def test_extreme_magnitudes(self) -> None:
        lrs = np.logspace(-5, 0, 12)
        for loss in ([1e300, -1e300] * 6, [1e308, 1e308, -1e308] * 4, [5e-324, 0.0] * 6):
            assert_inside(suggest(lrs, loss), lrs)

    @pytest.mark.parametrize(
        ("lrs", "losses", "match"),
        [
            ([], [], "at least one LR"),
            ([1e-3, 0.0], [1.0, 1.0], "positive and finite"),
            ([1e-3, math.nan], [1.0, 1.0], "positive and finite"),
            ([1e-3, 1e-3], [1.0, 1.0], "strictly increasing"),
            ([1e-3, 1e-2], [1.0], "same length"),
            ([[1e-3, 1e-2]], [[1.0, 1.0]], "1-D"),
        ],
    )
    def test_rejects_bad_input(self, lrs: list, losses: list, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            suggest(lrs, losses)

    def test_rejects_negative_trims(self) -> None:
        with pytest.raises(ValueError, match="skip_end must be >= 0"):
            suggest([1e-3, 1e-2], [1.0, 1.0], skip_end=-1)


class TestSummarize:
    def test_geometric_median_and_spread(self) -> None:
        runs = [_suggestions(valley=v) for v in (1e-3, 1e-2, 1e-1)]
        valley = summarize(runs)["valley"]
        assert valley.median == pytest.approx(1e-2)
        assert valley.spread_decades == pytest.approx(1.0)  # std (ddof=1) of -3, -2, -1
        assert valley.values == (1e-3, 1e-2, 1e-1)
        assert valley.n_fallback == 0

    def test_even_count_median_is_the_geometric_mean_of_the_middle_two(self) -> None:
        runs = [_suggestions(steep=v) for v in (1e-4, 1e-3, 1e-1, 1.0)]
        assert summarize(runs)["steep"].median == pytest.approx(math.sqrt(1e-3 * 1e-1))

    def test_single_repeat_has_zero_spread(self) -> None:
        summary = summarize([_suggestions()])
        assert set(summary) == set(SUGGESTION_NAMES)
        assert all(s.spread_decades == 0.0 for s in summary.values())

    def test_fallbacks_are_left_out_unless_all_fell_back(self) -> None:
        runs = [
            _suggestions(valley=1e-2),
            _suggestions(valley=1e-5, fallbacks=("valley",)),
            _suggestions(valley=1e-2),
        ]
        valley = summarize(runs)["valley"]
        assert valley.median == pytest.approx(1e-2)
        assert valley.spread_decades == 0.0
        assert valley.n_fallback == 1
        assert len(valley.values) == 3
        only = summarize([runs[1]])["valley"]
        assert only.median == pytest.approx(1e-5)
        assert only.n_fallback == 1

    def test_a_repeat_that_never_diverged_has_no_say_in_the_diverge_median(self) -> None:
        # 10 is the end of the ramp, not where that repeat diverged
        runs = [_suggestions(diverge=v, diverged=v < 10) for v in (2.72, 3.94, 10.0)]
        diverge = summarize(runs)["diverge"]
        assert diverge.median == pytest.approx(math.sqrt(2.72 * 3.94))
        assert diverge.spread_decades == pytest.approx(np.std(np.log10([2.72, 3.94]), ddof=1))
        assert diverge.values == (2.72, 3.94, 10.0)
        assert diverge.n_fallback == 1

    def test_diverge_median_is_the_ramp_end_when_no_repeat_diverged(self) -> None:
        runs = [_suggestions(diverge=10.0, diverged=False) for _ in range(3)]
        diverge = summarize(runs)["diverge"]
        assert diverge.median == pytest.approx(10.0)
        assert diverge.n_fallback == 3

    def test_json_round_trip(self) -> None:
        lrs, loss = synthetic_curve(noise=0.05)
        summary = summarize([suggest(lrs, loss), suggest(lrs, loss[::-1])])
        data = json.loads(json.dumps({k: v.to_dict() for k, v in summary.items()}))
        assert {k: SuggestionSummary.from_dict(v) for k, v in data.items()} == summary

    def test_rejects_no_repeats(self) -> None:
        with pytest.raises(ValueError, match="at least one"):
            summarize([])


def _divergence_index_vectorised(s: np.ndarray, *, factor: float, skip_start: int) -> int | None:
    """The divergence rule recomputed for every step at once, straight from its docstring."""
    bad = np.flatnonzero(~np.isfinite(s))
    n_finite = int(bad[0]) if bad.size else s.size
    stop = None if n_finite == s.size else n_finite
    if n_finite <= skip_start:
        return stop
    s = s[:n_finite]
    index = np.arange(n_finite)
    best = np.minimum.accumulate(s)
    best_at = np.maximum.accumulate(np.where(s == best, index, 0))
    peak = np.maximum.accumulate(s)[np.maximum(best_at, skip_start)]
    with np.errstate(over="ignore"):
        scale = np.maximum.reduce(
            [np.maximum(best, 0.0), peak - best, 1e-9 * np.abs(best), np.full_like(s, 1e-12)]
        )
        over = (s - best > (factor - 1.0) * scale) & (index >= skip_start)
    hits = np.flatnonzero(over)
    return int(hits[0]) if hits.size else stop


def _suggestions(
    *,
    steep: float = 1e-3,
    min10: float = 1e-3,
    valley: float = 1e-3,
    diverge: float = 1e-1,
    diverged: bool = False,
    fallbacks: tuple[str, ...] = (),
) -> CurveSuggestions:
    return CurveSuggestions(
        steep=steep,
        min10=min10,
        valley=valley,
        diverge=diverge,
        diverge_index=50 if diverged else None,
        stopped_early=diverged,
        fallbacks=fallbacks,
    )
