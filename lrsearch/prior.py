"""The range test as a prior: a truncated log-normal over one-cycle ``max_lr``.

Pure numpy + stdlib. ``log10(max_lr)`` is normal with mean ``log10(center)`` and standard
deviation ``sigma_decades``, truncated to ``[log10(low), log10(high)]``. The normal CDF and its
inverse are computed here (``math.erfc`` plus Halley refinement), so scipy is not needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

from lrsearch.suggest import SUGGESTION_NAMES, SuggestionSummary

__all__ = [
    "DEFAULT_ANCHOR",
    "DEFAULT_CUT_DECADES",
    "DEFAULT_HIGH_FACTOR",
    "DEFAULT_LOW_DECADES",
    "DEFAULT_OFFSET_BY_FAMILY",
    "DEFAULT_OFFSET_DECADES",
    "DEFAULT_SIGMA_FLOOR",
    "LRPrior",
    "has_signal",
    "optimizer_family",
]

# Defaults for LRPrior.from_suggestions, chosen by measurement on a calibration half and judged
# on a held-out half: `python -m lrsearch.harness.prior_check --earlier docs/prior-calibration.json`
# (docs/bench/prior-check.{json,md}, docs/prior-calibration.md; tests/test_calibration.py holds
# these constants to its "rule").
#
# Calibration: the seven calibration workloads of the suite (lrsearch.harness.suite: LSTM, a
# residual MLP regression, tabular, ViT, CNN with BatchNorm, embedding bag, logistic regression;
# SGD, Adam, AdamW, RMSprop, Adagrad) and the eight of the earlier calibration (MLPs, a CNN, a
# BatchNorm ResNet, the char transformer, AdamW variants), range-tested as a study of 16 trials
# sizes its test. The valley of the noise-aware readings has the smallest leave-one-workload-out
# error (RMS 0.53 decades; steep 0.88, min10 1.19, rise 1.05), at an offset of -0.05 decades:
# the prior is 0.55 decades wide (the earlier 0.25 came from eight similar workloads and held
# on none of the new kinds). No calibration workload's good region reached above its rise, so
# the upper cut sits at the rise (not at the divergence LR); where a curve has no signal, the
# best lay a median 1.2 decades below the rise, spread 0.7.
DEFAULT_ANCHOR = "valley"
DEFAULT_OFFSET_DECADES = -0.05
DEFAULT_SIGMA_FLOOR = 0.55
DEFAULT_LOW_DECADES = 2.0
DEFAULT_HIGH_FACTOR = 1.0
# The offset for a study whose optimizer family is known (an own loop's is not: it gets
# DEFAULT_OFFSET_DECADES); empty where one offset serves every family.
DEFAULT_OFFSET_BY_FAMILY: dict[str, float] = {}
# The upper cut: the LR where the range test's loss first climbed significantly above its
# minimum (``rise``), times 10**DEFAULT_CUT_DECADES, and never above the divergence LR. A trial
# spends far more steps near max_lr than the ramp does, so the LR where a 100-step ramp blows
# up is too permissive a cut (issue 19: every divergence fell 0.1-1 decade below it).
DEFAULT_CUT_DECADES = 0.0
# A curve without a significant descent ("no clear signal") says only where the loss rises: the
# prior is then centred NO_SIGNAL_OFFSET_DECADES from the rise, NO_SIGNAL_SIGMA wide, and cut
# NO_SIGNAL_LOW_DECADES below its centre. Where only some repeats descend, the prior is at
# least NO_SIGNAL_SIGMA wide.
NO_SIGNAL_OFFSET_DECADES = -1.2
NO_SIGNAL_SIGMA = 0.7
NO_SIGNAL_LOW_DECADES = 3.0
# A curve that neither descends nor rises nor diverges says nothing: the prior is centred on
# the ramp's geometric middle (the fallback reading), NO_INFO_SIGMA wide.
NO_INFO_SIGMA = 1.0

ANCHORS: tuple[str, ...] = tuple(n for n in SUGGESTION_NAMES if n not in ("rise", "diverge"))

_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
_HALLEY_STEPS = 3

FloatArray = NDArray[np.float64]
_erfc = np.frompyfunc(math.erfc, 1, 1)
_erf = np.frompyfunc(math.erf, 1, 1)


def has_signal(reading: SuggestionSummary) -> bool:
    """Whether at least one repeat read this suggestion off a significant descent."""
    return reading.n_fallback < len(reading.values)


def optimizer_family(optimizer_name: str) -> str:
    """``"adam"`` for the Adam family (Adam, AdamW, NAdam, a factory named after one), else
    ``"sgd"``: the families whose best LRs sit differently relative to the range test."""
    return "adam" if "adam" in optimizer_name.lower() else "sgd"


@dataclass(frozen=True)
class LRPrior:
    """A log-normal over ``max_lr``, truncated to ``[low, high]``.

    Attributes:
        center: the mode, and the median before truncation (an LR).
        sigma_decades: standard deviation of ``log10(max_lr)`` before truncation.
        low: the smallest LR the prior allows.
        high: the largest LR the prior allows (usually the range test's divergence LR).

    Example:
        >>> prior = LRPrior(center=1e-2, sigma_decades=0.5, low=1e-4, high=1e-1)
        >>> lr = prior.sample(np.random.default_rng(0))
        >>> bool(prior.low <= lr <= prior.high)
        True
    """

    center: float
    sigma_decades: float
    low: float
    high: float

    def __post_init__(self) -> None:
        for f in fields(self):
            object.__setattr__(self, f.name, float(getattr(self, f.name)))
        low, high, center, sigma_decades = self.low, self.high, self.center, self.sigma_decades
        if not (0.0 < low < math.inf):
            raise ValueError(f"low must be positive and finite, got {low=}")
        if not (low < high < math.inf):
            raise ValueError(f"high must be finite and > low={low}, got {high=}")
        if not (low <= center <= high):
            raise ValueError(f"center must be in [low, high] = [{low}, {high}], got {center=}")
        if not (0.0 < sigma_decades < math.inf):
            raise ValueError(f"sigma_decades must be positive and finite, got {sigma_decades=}")

    # Standardised truncation bounds: alpha <= 0 <= beta because center is inside them.
    @property
    def _mu(self) -> float:
        return math.log10(self.center)

    @property
    def _alpha(self) -> float:
        return (math.log10(self.low) - self._mu) / self.sigma_decades

    @property
    def _beta(self) -> float:
        return (math.log10(self.high) - self._mu) / self.sigma_decades

    @property
    def _mass(self) -> float:
        # Phi(beta) - Phi(alpha) as a sum of two non-negative terms: no cancellation, even
        # when the bounds are much closer than sigma.
        return 0.5 * (math.erf(self._beta / _SQRT2) + math.erf(-self._alpha / _SQRT2))

    @overload
    def sample(self, rng: np.random.Generator, size: None = None) -> float: ...

    @overload
    def sample(self, rng: np.random.Generator, size: int | tuple[int, ...]) -> FloatArray: ...

    def sample(
        self, rng: np.random.Generator, size: int | tuple[int, ...] | None = None
    ) -> float | FloatArray:
        """Draw LRs from the prior (exactly, by inverting its CDF).

        Args:
            rng: the random generator to draw from.
            size: None for one float, else the shape of the array returned.
        """
        u = rng.random(size)
        return self.ppf(u)

    @overload
    def ppf(self, q: float) -> float: ...

    @overload
    def ppf(self, q: NDArray[Any]) -> FloatArray: ...

    @overload
    def ppf(self, q: ArrayLike) -> float | FloatArray: ...

    def ppf(self, q: ArrayLike) -> float | FloatArray:
        """The LR below which the prior holds mass ``q`` (the inverse of :meth:`cdf`).

        Args:
            q: probabilities in ``[0, 1]``; a float gives a float, an array an array.
        """
        p = np.asarray(q, dtype=np.float64)
        if np.any(~((p >= 0.0) & (p <= 1.0))):
            raise ValueError(f"q must be in [0, 1], got {q=}")
        return _like_input(self._ppf_array(p), q)

    def _ppf_array(self, p: FloatArray) -> FloatArray:
        z = _truncated_norm_ppf(p, self._alpha, self._beta, self._mass)
        return np.clip(10.0 ** (self._mu + self.sigma_decades * z), self.low, self.high)

    @overload
    def logpdf(self, lr: float) -> float: ...

    @overload
    def logpdf(self, lr: NDArray[Any]) -> FloatArray: ...

    @overload
    def logpdf(self, lr: ArrayLike) -> float | FloatArray: ...

    def logpdf(self, lr: ArrayLike) -> float | FloatArray:
        """Natural log of the density **with respect to log10(lr)**; ``-inf`` outside bounds.

        The density with respect to ``lr`` itself is ``exp(logpdf(lr)) / (lr * ln 10)``. The
        log10 form is the one that plots as a bell on a log-LR axis and does not depend on
        the LR's units.
        """
        x = np.asarray(lr, dtype=np.float64)
        inside = (x >= self.low) & (x <= self.high)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.log10(np.where(inside, x, self.center)) - self._mu) / self.sigma_decades
        norm = math.log(self.sigma_decades) + _LOG_SQRT_2PI + math.log(self._mass)
        out = np.where(inside, -0.5 * z * z - norm, -np.inf)
        out = np.where(np.isnan(x), np.nan, out)
        return _like_input(out, lr)

    @overload
    def cdf(self, lr: float) -> float: ...

    @overload
    def cdf(self, lr: NDArray[Any]) -> FloatArray: ...

    @overload
    def cdf(self, lr: ArrayLike) -> float | FloatArray: ...

    def cdf(self, lr: ArrayLike) -> float | FloatArray:
        """Probability that a draw is ``<= lr``: 0 below ``low``, 1 from ``high`` on."""
        x = np.asarray(lr, dtype=np.float64)
        clipped = np.clip(np.nan_to_num(x, nan=self.center), self.low, self.high)
        z = (np.log10(clipped) - self._mu) / self.sigma_decades
        alpha = self._alpha
        # Phi(z) - Phi(alpha): with erfc on the lower side (both tails tiny, no cancellation),
        # with erf on the upper side (z >= 0 >= alpha, a sum of non-negative terms).
        lower = 0.5 * (_erfc_array(-z / _SQRT2) - math.erfc(-alpha / _SQRT2))
        upper = 0.5 * (_erf_array(z / _SQRT2) + math.erf(-alpha / _SQRT2))
        out = np.clip(np.where(z <= 0, lower, upper) / self._mass, 0.0, 1.0)
        out = np.where(np.isnan(x), np.nan, out)
        return _like_input(out, lr)

    def interval(self, q: float) -> tuple[float, float]:
        """The central interval ``(lo, hi)`` of LRs holding mass ``q`` of the prior.

        ``q = 1`` gives ``(low, high)``; ``q = 0`` gives the median twice.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q=}")
        lo, hi = self._ppf_array(np.array([(1.0 - q) / 2.0, (1.0 + q) / 2.0]))
        return float(lo), float(hi)

    @classmethod
    def from_suggestions(
        cls,
        summary: Mapping[str, SuggestionSummary],
        *,
        anchor: str = DEFAULT_ANCHOR,
        offset_decades: float | None = None,
        family: str | None = None,
        sigma_floor_decades: float = DEFAULT_SIGMA_FLOOR,
        low_decades: float = DEFAULT_LOW_DECADES,
        high_factor: float = DEFAULT_HIGH_FACTOR,
        cut_decades: float = DEFAULT_CUT_DECADES,
    ) -> LRPrior:
        """Build the prior from the range test's suggestions (:func:`lrsearch.suggest.summarize`).

        - ``high = min(rise.median * 10 ** cut_decades, diverge.median * high_factor)``;
        - ``center = min(anchor.median * 10 ** offset_decades, high)``;
        - ``sigma_decades = max(anchor.spread_decades, sigma_floor_decades)``;
        - ``low = center / 10 ** low_decades``.

        Where no repeat's curve had a significant descent (every anchor value a fallback: "no
        clear signal"), the centre is ``rise.median * 10 ** NO_SIGNAL_OFFSET_DECADES``, the
        width ``NO_SIGNAL_SIGMA`` and the lower cut ``NO_SIGNAL_LOW_DECADES`` below the
        centre; where only some had one, the width is at least ``NO_SIGNAL_SIGMA``.

        Args:
            summary: ``summarize()`` output; must hold ``anchor`` and ``"diverge"``.
            anchor: which suggestion centres the prior: one of ``steep``, ``min10``, ``valley``.
            offset_decades: shift of the centre from the anchor, in decades (+ is higher);
                None: the calibrated one for ``family`` (or for every family).
            family: the optimizer family (:func:`optimizer_family`), where known.
            sigma_floor_decades: smallest width, in decades, whatever the repeats agree on.
            low_decades: how many decades below the centre the prior is cut; > 0.
            high_factor: the upper cut at most this multiple of the divergence LR; > 0.
            cut_decades: the upper cut, in decades above the rise; finite.
        """
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {', '.join(ANCHORS)}, got {anchor=}")
        for name in (anchor, "diverge"):
            if name not in summary:
                raise ValueError(f"summary has no {name!r} entry, got keys {sorted(summary)}")
        if not (0.0 < sigma_floor_decades < math.inf):
            raise ValueError(
                f"sigma_floor_decades must be positive and finite, got {sigma_floor_decades=}"
            )
        if not (0.0 < low_decades < math.inf):
            raise ValueError(f"low_decades must be positive and finite, got {low_decades=}")
        if not (0.0 < high_factor < math.inf):
            raise ValueError(f"high_factor must be positive and finite, got {high_factor=}")
        if offset_decades is None:
            offset_decades = DEFAULT_OFFSET_BY_FAMILY.get(family or "", DEFAULT_OFFSET_DECADES)
        if not math.isfinite(offset_decades):
            raise ValueError(f"offset_decades must be finite, got {offset_decades=}")
        if not math.isfinite(cut_decades):
            raise ValueError(f"cut_decades must be finite, got {cut_decades=}")
        read = summary[anchor]
        rise = summary["rise"].median if "rise" in summary else summary["diverge"].median
        high = min(rise * 10.0**cut_decades, summary["diverge"].median * high_factor)
        if has_signal(read):
            center = read.median * 10.0**offset_decades
            sigma = max(read.spread_decades, sigma_floor_decades)
            if read.n_fallback:  # the repeats disagree on whether the curve says anything
                sigma = max(sigma, NO_SIGNAL_SIGMA)
        elif "rise" not in summary or has_signal(summary["rise"]):
            center = rise * 10.0**NO_SIGNAL_OFFSET_DECADES
            sigma = max(NO_SIGNAL_SIGMA, sigma_floor_decades)
            low_decades = max(low_decades, NO_SIGNAL_LOW_DECADES)
        else:  # no descent, no rise, no divergence: the test says nothing; the ramp's middle
            center = read.median
            sigma = max(NO_INFO_SIGMA, sigma_floor_decades)
            low_decades = max(low_decades, NO_SIGNAL_LOW_DECADES)
        center = min(center, high)
        return cls(center=center, sigma_decades=sigma, low=center / 10.0**low_decades, high=high)

    def to_dict(self) -> dict[str, float]:
        """``{"center", "sigma_decades", "low", "high"}``; :meth:`from_dict` reverses it."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LRPrior:
        """Rebuild from :meth:`to_dict` output; unknown or missing keys are an error."""
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(
                f"LRPrior dict must have keys {sorted(names)}, got {missing=} {unknown=}"
            )
        return cls(**{name: float(data[name]) for name in names})

    def to_json(self) -> str:
        """The :meth:`to_dict` form as a JSON string (floats round-trip exactly)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LRPrior:
        """Rebuild from :meth:`to_json` output."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"LRPrior JSON must be an object, got {type(data).__name__}")
        return cls.from_dict(data)


def _truncated_norm_ppf(p: FloatArray, alpha: float, beta: float, mass: float) -> FloatArray:
    """z with (Phi(z) - Phi(alpha)) / mass = p, for alpha <= 0 <= beta, inside [alpha, beta]."""
    below = 0.5 * math.erfc(-alpha / _SQRT2)  # Phi(alpha), accurate because alpha <= 0
    above = 0.5 * math.erfc(beta / _SQRT2)  # 1 - Phi(beta), accurate because beta >= 0
    # Work with whichever tail is smaller, where the probabilities carry full precision.
    lower_tail = below + p * mass
    upper_tail = above + (1.0 - p) * mass
    z = np.where(
        lower_tail <= 0.5,
        _norm_ppf_lower(np.minimum(lower_tail, 0.5)),
        -_norm_ppf_lower(np.minimum(upper_tail, 0.5)),
    )
    return np.clip(z, alpha, beta)


def _norm_ppf_lower(q: FloatArray) -> FloatArray:
    """Inverse standard normal CDF for q in [0, 0.5] (so the result is <= 0).

    Starts from the Abramowitz & Stegun 26.2.23 rational approximation (error < 4.5e-4) and
    polishes it with Halley steps on ``Phi(z) - q``, which converge cubically.
    """
    q = np.asarray(q, dtype=np.float64)
    safe = np.clip(q, np.finfo(np.float64).tiny, 0.5)
    t = np.sqrt(-2.0 * np.log(safe))
    num = 2.515517 + t * (0.802853 + t * 0.010328)
    den = 1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308))
    z = -(t - num / den)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for _ in range(_HALLEY_STEPS):
            pdf = np.exp(-0.5 * z * z - _LOG_SQRT_2PI)
            step = (0.5 * _erfc_array(-z / _SQRT2) - safe) / pdf
            z_new = z - step / (1.0 + 0.5 * z * step)
            z = np.where(np.isfinite(z_new), z_new, z)
    z = np.minimum(z, 0.0)
    return np.where(q <= 0.0, -np.inf, z)


def _erfc_array(x: ArrayLike) -> FloatArray:
    return np.asarray(_erfc(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def _erf_array(x: ArrayLike) -> FloatArray:
    return np.asarray(_erf(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def _like_input(values: FloatArray, given: ArrayLike) -> float | FloatArray:
    """An array for an array input (of its shape), a float for a scalar one."""
    out = np.asarray(values, dtype=np.float64)
    return out if isinstance(given, np.ndarray) or out.ndim else float(out)
