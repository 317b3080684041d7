from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lrsearch import prior as prior_module
from lrsearch.prior import (
    DEFAULT_ANCHOR,
    DEFAULT_HIGH_FACTOR,
    DEFAULT_LOW_DECADES,
    DEFAULT_OFFSET_DECADES,
    DEFAULT_SIGMA_FLOOR,
    LRPrior,
    optimizer_family,
)
from lrsearch.suggest import SUGGESTION_NAMES, SuggestionSummary

FAST = settings(max_examples=40, deadline=None)


@st.composite
def priors(draw: st.DrawFn) -> LRPrior:
    log_low = draw(st.floats(-8.0, 0.0))
    width = draw(st.floats(0.01, 6.0))
    where = draw(st.floats(0.0, 1.0))
    sigma = draw(st.floats(1e-3, 1e3))
    return LRPrior(
        center=10 ** (log_low + where * width),
        sigma_decades=sigma,
        low=10**log_low,
        high=10 ** (log_low + width),
    )


class TestNormalInverse:
    @pytest.mark.parametrize("q", [1e-300, 1e-100, 1e-20, 1e-8, 1e-3, 0.1, 0.3, 0.4999, 0.5])
    def test_lower_ppf_matches_statistics(self, q: float) -> None:
        z = float(prior_module._norm_ppf_lower(np.array(q)))
        assert 0.5 * math.erfc(-z / math.sqrt(2)) == pytest.approx(q, rel=1e-13)
        if q > 1e-300:  # below that NormalDist.inv_cdf is not reliable
            assert z == pytest.approx(NormalDist().inv_cdf(q), rel=1e-12, abs=1e-15)

    def test_scalars_give_floats_and_arrays_give_arrays(self) -> None:
        prior = LRPrior(center=1e-2, sigma_decades=0.5, low=1e-4, high=1e-1)
        for method in (prior.ppf, prior.cdf, prior.logpdf):
            assert type(method(0.01)) is float
            assert type(method(np.float64(0.01))) is float
            assert method(np.array(0.01)).shape == ()
            assert method(np.full((2, 3), 0.01)).shape == (2, 3)
            assert method([0.01, 0.02]).shape == (2,)  # type: ignore[union-attr]

    def test_lower_ppf_of_zero_is_minus_infinity(self) -> None:
        assert prior_module._norm_ppf_lower(np.array([0.0]))[0] == -math.inf


class TestLRPrior:
    @given(priors(), st.integers(0, 2**32 - 1))
    @FAST
    def test_samples_stay_within_bounds(self, prior: LRPrior, seed: int) -> None:
        samples = prior.sample(np.random.default_rng(seed), 200)
        assert samples.shape == (200,)
        assert np.all((samples >= prior.low) & (samples <= prior.high))
        one = prior.sample(np.random.default_rng(seed))
        assert isinstance(one, float)
        assert prior.low <= one <= prior.high

    def test_sample_shape_and_determinism(self) -> None:
        prior = LRPrior(center=1e-2, sigma_decades=0.5, low=1e-4, high=1e-1)
        a = prior.sample(np.random.default_rng(3), (4, 5))
        assert a.shape == (4, 5)
        np.testing.assert_array_equal(a, prior.sample(np.random.default_rng(3), (4, 5)))

    def test_barely_truncated_moments_match_the_normal(self) -> None:
        prior = LRPrior(center=1e-3, sigma_decades=0.4, low=1e-6, high=1.0)  # +-7.5 sigma
        logs = np.log10(prior.sample(np.random.default_rng(0), 20_000))
        # standard errors: 0.4 / sqrt(20000) = 0.0028 for the mean, ~0.002 for the std
        assert logs.mean() == pytest.approx(-3.0, abs=0.012)
        assert logs.std() == pytest.approx(0.4, abs=0.01)

    def test_one_sided_truncation_matches_the_half_normal(self) -> None:
        # center at high: log10 lr = mu - sigma * |Z|, E|Z| = sqrt(2 / pi)
        prior = LRPrior(center=1e-2, sigma_decades=0.5, low=1e-8, high=1e-2)
        logs = np.log10(prior.sample(np.random.default_rng(1), 20_000))
        assert logs.mean() == pytest.approx(-2 - 0.5 * math.sqrt(2 / math.pi), abs=0.012)
        assert logs.max() <= -2

    @given(priors(), st.floats(0.05, 0.95))
    @settings(max_examples=15, deadline=None)
    def test_interval_mass_by_monte_carlo(self, prior: LRPrior, q: float) -> None:
        lo, hi = prior.interval(q)
        assert prior.low <= lo <= hi <= prior.high
        samples = prior.sample(np.random.default_rng(7), 4000)
        inside = np.mean((samples >= lo) & (samples <= hi))
        assert inside == pytest.approx(q, abs=4.5 * math.sqrt(q * (1 - q) / 4000) + 1e-3)

    @given(priors(), st.floats(0.0, 1.0))
    @FAST
    def test_cdf_inverts_ppf(self, prior: LRPrior, q: float) -> None:
        assert prior.cdf(prior.ppf(q)) == pytest.approx(q, abs=1e-9)

    def test_interval_extremes(self) -> None:
        prior = LRPrior(center=1e-2, sigma_decades=0.5, low=1e-4, high=1e-1)
        assert prior.interval(1.0) == (1e-4, 1e-1)
        lo, hi = prior.interval(0.0)
        assert lo == hi == pytest.approx(prior.ppf(0.5))
        with pytest.raises(ValueError, match="q must be in"):
            prior.interval(1.5)

    @given(priors())
    @settings(max_examples=20, deadline=None)
    def test_density_integrates_to_one_over_log10_lr(self, prior: LRPrior) -> None:
        # Densities are w.r.t. log10(lr), so integrate over u = log10(lr); sample densely
        # around the mode too, where a narrow bell lives.
        a, b, mu = math.log10(prior.low), math.log10(prior.high), math.log10(prior.center)
        s = prior.sigma_decades
        u = np.unique(
            np.concatenate([np.linspace(a, b, 4001), np.linspace(mu - 8 * s, mu + 8 * s, 4001)])
        )
        u = u[(u >= a) & (u <= b)]
        density = np.exp(prior.logpdf(10**u))
        assert np.trapezoid(density, u) == pytest.approx(1.0, abs=2e-3)

    def test_logpdf_matches_the_normal_inside_and_is_minus_inf_outside(self) -> None:
        prior = LRPrior(center=1e-3, sigma_decades=0.5, low=1e-6, high=1e-1)
        mass = NormalDist().cdf(4.0) - NormalDist().cdf(-6.0)
        expected = math.log(NormalDist(-3.0, 0.5).pdf(-2.5) / mass)
        assert prior.logpdf(10**-2.5) == pytest.approx(expected, rel=1e-12)
        assert prior.logpdf(1e-7) == -math.inf
        assert prior.logpdf(0.2) == -math.inf
        out = prior.logpdf(np.array([0.0, -1.0, 1e-3, math.nan]))
        assert out[0] == out[1] == -math.inf
        assert math.isfinite(out[2])
        assert math.isnan(out[3])

    def test_cdf_edges(self) -> None:
        prior = LRPrior(center=1e-3, sigma_decades=0.5, low=1e-6, high=1e-1)
        np.testing.assert_array_equal(prior.cdf(np.array([0.0, 1e-6, 1e-1, 1.0])), [0, 0, 1, 1])
        assert prior.cdf(1e-3) == pytest.approx(
            (0.5 - NormalDist().cdf(-6.0)) / (NormalDist().cdf(4.0) - NormalDist().cdf(-6.0))
        )
        assert isinstance(prior.cdf(1e-3), float)

    def test_far_tail_truncation_keeps_its_precision(self) -> None:
        # Half a bell (center at low, high 3000 sigma away), then a bell so wide that the
        # prior is uniform in log10: both keep their precision.
        prior = LRPrior(center=1e-3, sigma_decades=1e-3, low=1e-3, high=1.0)
        assert prior.cdf(10 ** (-3 + 1e-3)) == pytest.approx(2 * NormalDist().cdf(1.0) - 1)
        wide = LRPrior(center=1e-3, sigma_decades=1e6, low=1e-4, high=1e-2)
        assert wide.cdf(1e-3) == pytest.approx(0.5, rel=1e-9)  # ~uniform in log10
        assert wide.ppf(0.75) == pytest.approx(10**-2.5, rel=1e-9)

    @given(priors())
    @FAST
    def test_json_round_trip(self, prior: LRPrior) -> None:
        assert LRPrior.from_json(prior.to_json()) == prior
        assert LRPrior.from_dict(json.loads(json.dumps(prior.to_dict()))) == prior

    def test_fields_are_plain_floats(self) -> None:
        prior = LRPrior(
            center=np.float32(1e-2),  # type: ignore[arg-type]
            sigma_decades=1,
            low=1e-4,
            high=np.float64(0.1),
        )
        assert all(type(v) is float for v in prior.to_dict().values())
        json.dumps(prior.to_dict())

    @pytest.mark.parametrize(
        ("kwargs", "field"),
        [
            ({"low": 0.0}, "low"),
            ({"low": -1.0}, "low"),
            ({"low": math.nan}, "low"),
            ({"high": 1e-5}, "high"),
            ({"high": math.inf}, "high"),
            ({"center": 1.0}, "center"),
            ({"center": 1e-5}, "center"),
            ({"sigma_decades": 0.0}, "sigma_decades"),
            ({"sigma_decades": math.inf}, "sigma_decades"),
        ],
    )
    def test_validation_names_the_field(self, kwargs: dict, field: str) -> None:
        args = {"center": 1e-2, "sigma_decades": 0.5, "low": 1e-4, "high": 1e-1, **kwargs}
        with pytest.raises(ValueError, match=rf"^{field} must be"):
            LRPrior(**args)

    def test_from_dict_rejects_missing_and_unknown_keys(self) -> None:
        data = LRPrior(center=1e-2, sigma_decades=0.5, low=1e-4, high=1e-1).to_dict()
        with pytest.raises(ValueError, match="missing=\\['high'\\]"):
            LRPrior.from_dict({k: v for k, v in data.items() if k != "high"})
        with pytest.raises(ValueError, match="unknown=\\['mode'\\]"):
            LRPrior.from_dict({**data, "mode": 1.0})
        with pytest.raises(ValueError, match="must be an object"):
            LRPrior.from_json("[1, 2]")

    @pytest.mark.parametrize("q", [-0.1, 1.1, math.nan])
    def test_ppf_rejects_bad_probabilities(self, q: float) -> None:
        prior = LRPrior(center=1e-2, sigma_decades=0.5, low=1e-4, high=1e-1)
        with pytest.raises(ValueError, match="q must be in"):
            prior.ppf(q)


def _summary(
    medians: dict[str, float],
    spreads: dict[str, float] | None = None,
    fallback: tuple[str, ...] = (),
) -> dict:
    spreads = spreads or {}
    medians = {"rise": medians.get("diverge", 1e-3), **medians}
    return {
        name: SuggestionSummary(
            median=medians.get(name, 1e-3),
            spread_decades=spreads.get(name, 0.0),
            values=(medians.get(name, 1e-3),),
            n_fallback=int(name in fallback),
        )
        for name in SUGGESTION_NAMES
    }


class TestFromSuggestions:
    def test_defaults_are_sane(self) -> None:
        assert DEFAULT_ANCHOR in ("steep", "min10", "valley")
        assert DEFAULT_SIGMA_FLOOR > 0
        assert DEFAULT_LOW_DECADES > 0
        assert DEFAULT_HIGH_FACTOR > 0
        assert math.isfinite(DEFAULT_OFFSET_DECADES)
        prior = LRPrior.from_suggestions(_summary({DEFAULT_ANCHOR: 1e-3, "diverge": 1e-1}))
        assert prior.low < prior.center <= prior.high

    def test_builds_from_the_anchor(self) -> None:
        summary = _summary({"min10": 2e-3, "diverge": 0.5}, {"min10": 0.4})
        prior = LRPrior.from_suggestions(
            summary,
            anchor="min10",
            offset_decades=0.5,
            sigma_floor_decades=0.1,
            low_decades=3.0,
            high_factor=0.8,
        )
        assert prior.center == pytest.approx(2e-3 * 10**0.5)
        assert prior.sigma_decades == 0.4
        assert prior.high == pytest.approx(0.4)
        assert prior.low == pytest.approx(prior.center / 1e3)

    def test_the_cut_sits_above_the_rise_and_never_above_the_divergence(self) -> None:
        summary = _summary({"valley": 1e-3, "rise": 1e-2, "diverge": 1.0})
        prior = LRPrior.from_suggestions(summary, anchor="valley", cut_decades=0.3)
        assert prior.high == pytest.approx(1e-2 * 10**0.3)
        late = _summary({"valley": 1e-3, "rise": 0.9, "diverge": 1.0})
        assert LRPrior.from_suggestions(late, cut_decades=0.3).high == pytest.approx(1.0)

    def test_no_signal_centres_below_the_rise_and_stays_wide(self) -> None:
        from lrsearch.prior import NO_SIGNAL_LOW_DECADES, NO_SIGNAL_OFFSET_DECADES, NO_SIGNAL_SIGMA

        # every valley a fallback: the curve never descended (the GRU of issue 19)
        summary = _summary({"valley": 1e-6, "rise": 0.2, "diverge": 1.0}, fallback=("valley",))
        prior = LRPrior.from_suggestions(summary, anchor="valley")
        assert prior.center == pytest.approx(min(0.2 * 10**NO_SIGNAL_OFFSET_DECADES, prior.high))
        assert prior.sigma_decades == NO_SIGNAL_SIGMA
        assert prior.low == pytest.approx(prior.center / 10**NO_SIGNAL_LOW_DECADES)
        assert prior.center > 1e-3  # nowhere near the noise the fallback valley stands for

    def test_repeats_that_disagree_on_the_signal_widen_the_prior(self) -> None:
        from lrsearch.prior import NO_SIGNAL_SIGMA

        read = SuggestionSummary(median=1e-3, spread_decades=0.0, values=(1e-3, 1e-6), n_fallback=1)
        summary = {**_summary({"valley": 1e-3, "diverge": 1.0}), "valley": read}
        prior = LRPrior.from_suggestions(summary, anchor="valley", sigma_floor_decades=0.25)
        assert prior.center == pytest.approx(1e-3 * 10**DEFAULT_OFFSET_DECADES)
        assert prior.sigma_decades == NO_SIGNAL_SIGMA

    def test_sigma_floor(self) -> None:
        summary = _summary({"valley": 1e-3, "diverge": 1e-1}, {"valley": 0.01})
        prior = LRPrior.from_suggestions(summary, anchor="valley", sigma_floor_decades=0.3)
        assert prior.sigma_decades == 0.3

    def test_an_offset_per_optimizer_family_where_calibrated(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import lrsearch.prior as prior_module

        summary = _summary({"valley": 1e-2, "diverge": 1.0})
        pooled = LRPrior.from_suggestions(summary, anchor="valley", family="adam")
        assert pooled.center == pytest.approx(1e-2 * 10**DEFAULT_OFFSET_DECADES)
        monkeypatch.setattr(prior_module, "DEFAULT_OFFSET_BY_FAMILY", {"adam": -0.5})
        adam = LRPrior.from_suggestions(summary, anchor="valley", family="adam")
        sgd = LRPrior.from_suggestions(summary, anchor="valley", family="sgd")
        given = LRPrior.from_suggestions(summary, anchor="valley", family="adam", offset_decades=0)
        assert adam.center == pytest.approx(1e-2 * 10**-0.5)
        assert sgd.center == pooled.center and given.center == pytest.approx(1e-2)

    @pytest.mark.parametrize(
        ("name", "family"),
        [("sgd", "sgd"), ("AdamW", "adam"), ("adamw_two_groups", "adam"), ("NAdam", "adam"),
         ("Adagrad", "sgd"), ("RMSprop", "sgd")],
    )  # fmt: skip
    def test_optimizer_family(self, name: str, family: str) -> None:
        assert optimizer_family(name) == family

    def test_center_is_clamped_to_the_divergence_cut(self) -> None:
        summary = _summary({"steep": 1e-1, "diverge": 1e-2})
        prior = LRPrior.from_suggestions(summary, anchor="steep", high_factor=1.0)
        assert prior.center == prior.high == pytest.approx(1e-2)
        assert prior.low < prior.center

    @given(
        st.floats(-7, 0),
        st.floats(-7, 1),
        st.floats(0, 2),
        st.floats(-1, 1),
        st.floats(0.1, 4),
        st.floats(0.1, 3),
    )
    @FAST
    def test_always_valid(
        self, anchor: float, diverge: float, spread: float, offset: float, low: float, high: float
    ) -> None:
        summary = _summary({"valley": 10**anchor, "diverge": 10**diverge}, {"valley": spread})
        prior = LRPrior.from_suggestions(
            summary, anchor="valley", offset_decades=offset, low_decades=low, high_factor=high
        )
        assert prior.low < prior.center <= prior.high

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"anchor": "diverge"}, "anchor must be one of steep, min10, valley"),
            ({"anchor": "nope"}, "anchor must be one of"),
            ({"sigma_floor_decades": 0.0}, "sigma_floor_decades must be"),
            ({"low_decades": -1.0}, "low_decades must be"),
            ({"high_factor": 0.0}, "high_factor must be"),
            ({"offset_decades": math.nan}, "offset_decades must be"),
        ],
    )
    def test_rejects_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            LRPrior.from_suggestions(_summary({}), **kwargs)

    def test_rejects_a_summary_without_the_anchor(self) -> None:
        summary = _summary({})
        del summary["valley"]
        with pytest.raises(ValueError, match="no 'valley' entry"):
            LRPrior.from_suggestions(summary, anchor="valley")
