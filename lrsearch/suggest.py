"""Learning-rate suggestions from one LR range-test curve, and their summary over repeats.

Pure numpy. A range test ramps the LR geometrically and records one training loss per step;
this module smooths that curve, finds where it diverged, and reads five LRs off it:

- ``steep``: the steepest descent of the smoothed loss on the log10(LR) axis.
- ``min10``: the LR at the minimum smoothed loss, divided by 10.
- ``valley``: two thirds of the way down the descent that ends at the minimum.
- ``rise``: where the smoothed loss first climbs significantly above its minimum.
- ``diverge``: the LR at which the divergence stop fired (or the last LR of the ramp).

Readings know the curve's noise. The per-step noise of the raw loss (from its step-to-step
differences) and, where there are repeats, their spread give each smoothed point a standard
deviation; a descent counts only where the loss falls well above that noise (``SIGNIFICANCE``
standard deviations, and ``MIN_RELATIVE_DROP`` of a non-negative loss's level). A curve without
one has no ``steep``, ``min10`` or ``valley`` (``signal`` is False): on such a curve (a model
that does not learn within the ramp, a loss drowned in batch noise) any point read off the
descent is noise, and the rise is the only signal.

Over the repeats, :func:`summarize` gives each suggestion a geometric median; a repeat whose
suggestion is a stand-in (a fallback, or the ramp's end for a repeat that never diverged) is
left out of it.

Every suggestion is an LR inside ``[lrs[0], lrs[-1]]``, whatever the curve looks like (noise,
NaN/inf tail, flat start, a handful of points, nothing finite at all). When a suggestion cannot
be read off the curve it falls back to the geometric middle of the LRs before divergence and
its name is listed in :attr:`CurveSuggestions.fallbacks`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "DESCENT_NAMES",
    "SUGGESTION_NAMES",
    "CurveSuggestions",
    "DivergenceWatch",
    "LossSmoother",
    "SuggestionSummary",
    "divergence_index",
    "repeat_spread",
    "smooth",
    "smoothed_sd",
    "step_noise",
    "suggest",
    "summarize",
]

SUGGESTION_NAMES: tuple[str, ...] = ("steep", "min10", "valley", "rise", "diverge")
# The readings of a descent: none of them on a curve without a significant one.
DESCENT_NAMES: tuple[str, ...] = ("steep", "min10", "valley")

# Where along the descent the valley suggestion sits, as a fraction of the descent's length in
# log10(LR): 0 is its top, 1 its bottom.
VALLEY_FRACTION = 2.0 / 3.0
# A fall or climb of the smoothed loss is significant when it exceeds this many standard
# deviations of the difference of its two ends, and (for a loss that is never negative) this
# fraction of the loss's level: a drift of a percent is not "training improves".
SIGNIFICANCE = 4.0
MIN_RELATIVE_DROP = 0.05
# Walking back from the minimum, the descent's top is where the curve has stopped climbing:
# over this fraction of the curve's points it gains less than PLATEAU_SIGMAS standard
# deviations (or PLATEAU_OF_DROP of the whole drop).
PLATEAU_WINDOW = 0.1
PLATEAU_SIGMAS = 2.0
PLATEAU_OF_DROP = 0.02

# Floors for the divergence scale, so a perfectly flat curve never "diverges" on rounding noise.
_REL_EPS = 1e-9
_ABS_EPS = 1e-12

FloatArray = NDArray[np.float64]


def smooth(losses: ArrayLike, beta: float = 0.98) -> FloatArray:
    """Bias-corrected exponential moving average of a loss curve.

    ``avg[i] = beta * avg[i-1] + (1 - beta) * losses[i]`` with ``avg[-1] = 0``, and
    ``smoothed[i] = avg[i] / (1 - beta ** (i + 1))``, so a constant curve smooths to itself
    and the first value is the first loss.

    From the first non-finite loss (NaN or +-inf) on, every smoothed value is ``inf``: a
    broken step poisons the average, and ``inf`` reads as "diverged" downstream. No warning
    is raised.

    Args:
        losses: the raw per-step losses, 1-D.
        beta: the EMA decay, in ``[0, 1)``; 0 returns the losses unchanged.

    Returns:
        A float array of the same length.
    """
    smoother = LossSmoother(beta)
    x = _as_1d(losses, "losses")
    return np.array([smoother.add(float(v)) for v in x], dtype=np.float64)


class LossSmoother:
    """:func:`smooth`, one loss at a time (O(1) per step), for a loop that stops on the way.

    Example:
        >>> smoother = LossSmoother(beta=0.5)
        >>> [smoother.add(v) for v in (3.0, 3.0, float("nan"), 1.0)]
        [3.0, 3.0, inf, inf]
    """

    def __init__(self, beta: float = 0.98) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta=}")
        self.beta = beta
        self._avg = 0.0
        self._correction = 1.0
        self._broken = False

    def add(self, loss: float) -> float:
        """The smoothed value after ``loss``: ``inf`` from the first non-finite loss on."""
        self._broken = self._broken or not math.isfinite(loss)
        if self._broken:
            return math.inf
        self._avg = self.beta * self._avg + (1.0 - self.beta) * loss
        self._correction *= self.beta
        return self._avg / (1.0 - self._correction)


def divergence_index(
    smoothed: ArrayLike, *, factor: float = 4.0, skip_start: int = 10
) -> int | None:
    """Index of the first step at which a smoothed loss curve has diverged, or None.

    Step ``i`` has diverged when its smoothed loss is not finite (checked at every step), or,
    from ``skip_start`` on, when

        ``smoothed[i] - best > (factor - 1) * scale``

    where ``best`` is the lowest smoothed loss up to ``i`` and

        ``scale = max(max(best, 0), drop, 1e-9 * |best|, 1e-12)``

    with ``drop`` the height of the descent so far: the highest smoothed loss up to
    ``max(skip_start, index of best)`` minus ``best``.

    Why this scale: for a positive loss whose best is at least as large as the descent that
    led to it, the rule is the classic "loss exceeds ``factor`` times the best". That rule
    breaks for losses that reach zero (anything exceeds ``factor * 0``) or go negative (every
    value exceeds ``factor * best``), and there the loss has no natural zero to be relative
    to, so the curve's own descent is the unit instead: a loss that climbs ``factor - 1``
    descents above its best has diverged. The descent includes the first ``skip_start``
    steps, so the noise of a flat, negative start sets a floor too. Once every loss is
    negative the rule does not change when the curve is shifted by a constant.

    The rule at step ``i`` uses only ``smoothed[: i + 1]``, so it can run online.

    Args:
        smoothed: a smoothed loss curve (see :func:`smooth`).
        factor: how far above the best counts as diverged; must be > 1.
        skip_start: steps before this index are not checked by the ratio rule (the EMA is
            still warming up), only for non-finite values.

    Returns:
        The first diverged index, or None if the curve never diverged.
    """
    watch = DivergenceWatch(factor=factor, skip_start=skip_start)
    for value in _as_1d(smoothed, "smoothed"):
        if watch.add(float(value)):
            break
    return watch.index


class DivergenceWatch:
    """:func:`divergence_index`, one smoothed value at a time (O(1) per step).

    Feed it the smoothed curve step by step; ``add`` returns True from the step the curve
    diverged on, and ``index`` is then that step.

    Example:
        >>> watch = DivergenceWatch(factor=4.0, skip_start=2)
        >>> [watch.add(v) for v in (3.0, 2.0, 1.0, 2.0, 9.0)], watch.index
        ([False, False, False, False, True], 4)
    """

    def __init__(self, *, factor: float = 4.0, skip_start: int = 10) -> None:
        if not (factor > 1.0 and math.isfinite(factor)):
            raise ValueError(f"factor must be finite and > 1, got {factor=}")
        if skip_start < 0:
            raise ValueError(f"skip_start must be >= 0, got {skip_start=}")
        self.factor = factor
        self.skip_start = skip_start
        self.index: int | None = None
        self._best = math.inf
        self._best_at = 0
        self._running_max: list[float] = []  # the highest value up to each step

    def add(self, value: float) -> bool:
        """Take the next smoothed value; True if the curve has diverged by now."""
        if self.index is not None:
            return True
        i = len(self._running_max)
        if not math.isfinite(value):
            self.index = i
            return True
        if value <= self._best:
            self._best, self._best_at = value, i
        self._running_max.append(max(value, self._running_max[-1]) if i else value)
        if i >= self.skip_start:
            peak = self._running_max[max(self._best_at, self.skip_start)]
            # Overflow only for losses near the float limit; inf then compares as it should.
            if value - self._best > (self.factor - 1.0) * _scale(self._best, peak):
                self.index = i
        return self.index is not None


def _scale(best: float, peak: float) -> float:
    """The unit a rise above ``best`` is measured in (see :func:`divergence_index`)."""
    return max(best, 0.0, peak - best, _REL_EPS * abs(best), _ABS_EPS)


@dataclass(frozen=True)
class CurveSuggestions:
    """The LRs suggested by one range-test curve.

    Attributes:
        steep: LR of the steepest descent (most negative d loss / d log10 lr) of the smoothed
            loss, searched over the descent (see ``valley``).
        min10: LR of the minimum smoothed loss divided by 10, clamped into the tested range.
        valley: the point ``VALLEY_FRACTION`` (2/3) of the way, in log10(LR), from the top to
            the bottom of the descent that ends at the minimum; its top is where, walking back
            from the minimum, the curve stops climbing by more than its noise.
        diverge: the LR where the loss blew up: the start of the unbroken run of raw losses
            above the divergence threshold that ends at ``diverge_index`` (the smoothed curve
            fires later by the EMA's lag), or the last LR of the ramp if it never diverged.
        diverge_index: the step at which the divergence stop fired, or None.
        stopped_early: whether the curve diverged before the end of the ramp.
        fallbacks: names of suggestions that could not be read off the curve and are filled
            in instead (the geometric middle of the LRs before divergence; for ``rise``, the
            divergence LR or the ramp's end).
        rise: LR where the smoothed loss first climbs significantly above its minimum (see
            ``SIGNIFICANCE``); where it never does before the divergence stop, ``diverge``.
        signal: whether the curve has a significant descent; without one ``steep``, ``min10``
            and ``valley`` are fallbacks ("no clear signal").
        noise: standard deviation of the raw loss per step (before smoothing) the readings
            were judged against.
    """

    steep: float
    min10: float
    valley: float
    diverge: float
    diverge_index: int | None
    stopped_early: bool
    fallbacks: tuple[str, ...] = ()
    rise: float = math.nan
    signal: bool = True
    noise: float = 0.0

    def __post_init__(self) -> None:
        if math.isnan(self.rise):  # made by hand, or stored before rise was read
            object.__setattr__(self, "rise", self.diverge)

    def is_fallback(self, name: str) -> bool:
        """Whether suggestion ``name`` was filled in rather than read off the curve.

        True for the names in ``fallbacks``, and for ``diverge`` when the curve never
        diverged: its value is then only the end of the ramp.
        """
        return name in self.fallbacks or (name == "diverge" and not self.stopped_early)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it."""
        data = asdict(self)
        data["fallbacks"] = list(self.fallbacks)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CurveSuggestions:
        """Rebuild from :meth:`to_dict` output (also from before ``rise`` was read)."""
        index = data["diverge_index"]
        return cls(
            steep=float(data["steep"]),
            min10=float(data["min10"]),
            valley=float(data["valley"]),
            diverge=float(data["diverge"]),
            diverge_index=None if index is None else int(index),
            stopped_early=bool(data["stopped_early"]),
            fallbacks=tuple(str(name) for name in data.get("fallbacks", ())),
            rise=float(data.get("rise", data["diverge"])),
            signal=bool(data.get("signal", True)),
            noise=float(data.get("noise", 0.0)),
        )


@dataclass(frozen=True)
class SuggestionSummary:
    """One suggestion (e.g. ``valley``) summarised over the repeats of a range test.

    A value is a *fallback* (:meth:`CurveSuggestions.is_fallback`) when the curve did not
    give it: the suggestion's name is in :attr:`CurveSuggestions.fallbacks`, or, for
    ``diverge``, the repeat never diverged (its value is then just the end of the ramp, a
    lower bound on the divergence LR).

    Attributes:
        median: geometric median, i.e. ``10 ** median(log10(values))`` over the values that
            are not fallbacks (over all values if every one is a fallback: for ``diverge``,
            the ramp's end when no repeat diverged).
        spread_decades: sample standard deviation (ddof=1) of ``log10`` of those same values;
            0.0 when there is only one.
        values: the per-repeat values, in repeat order, fallbacks included.
        n_fallback: how many of ``values`` are fallbacks.
    """

    median: float
    spread_decades: float
    values: tuple[float, ...]
    n_fallback: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; :meth:`from_dict` reverses it."""
        data = asdict(self)
        data["values"] = list(self.values)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SuggestionSummary:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            median=float(data["median"]),
            spread_decades=float(data["spread_decades"]),
            values=tuple(float(v) for v in data["values"]),
            n_fallback=int(data.get("n_fallback", 0)),
        )


def suggest(
    lrs: ArrayLike,
    losses: ArrayLike,
    *,
    skip_start: int = 10,
    skip_end: int = 5,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
    noise: float = 0.0,
) -> CurveSuggestions:
    """Read the steep, min10, valley, rise and diverge LRs off one range-test curve.

    The losses are smoothed (:func:`smooth`), the divergence step found
    (:func:`divergence_index`), and the suggestions read off the part before divergence,
    less ``skip_start`` points at the start and ``skip_end`` at the end. Each trim is capped
    at a quarter of the points it trims from, so short curves keep at least half of them.
    Readings are judged against the curve's noise (see the module docstring); a curve
    without a significant descent has ``signal`` False and its descent readings are
    fallbacks. See :class:`CurveSuggestions` for what each suggestion is.

    Args:
        lrs: the LR of each step; positive, finite, strictly increasing.
        losses: the raw loss of each step; NaN/inf allowed (they mean divergence).
        skip_start: points dropped at the start (the EMA warm-up).
        skip_end: points dropped before the divergence step (or the end).
        beta: EMA decay for :func:`smooth`.
        diverge_factor: ``factor`` for :func:`divergence_index`.
        noise: a floor on the standard deviation of the smoothed loss, e.g. the spread
            between the repeats of a range test (:func:`repeat_spread`); 0 uses the curve's
            own noise only.

    Returns:
        The suggestions; every LR lies in ``[lrs[0], lrs[-1]]``.

    Example:
        >>> lrs = np.geomspace(1e-6, 1.0, 200)
        >>> u = np.log10(lrs)
        >>> losses = 2.0 - 1.5 / (1 + np.exp(-3 * (u + 3))) + np.where(u > -1, 10**(4 * (u + 1)), 0)
        >>> s = suggest(lrs, losses)
        >>> bool(s.signal and s.steep < s.min10 * 10 < s.diverge)
        True
        >>> flat = 2.3 + 0.05 * np.random.default_rng(0).standard_normal(200)
        >>> suggest(lrs, flat).signal
        False
    """
    if skip_start < 0:
        raise ValueError(f"skip_start must be >= 0, got {skip_start=}")
    if skip_end < 0:
        raise ValueError(f"skip_end must be >= 0, got {skip_end=}")
    if not (noise >= 0 and math.isfinite(noise)):
        raise ValueError(f"noise must be finite and >= 0, got {noise=}")
    lr = _check_lrs(lrs)
    y = _as_1d(losses, "losses")
    if y.size != lr.size:
        raise ValueError(f"lrs and losses must have the same length, got {lr.size} and {y.size}")
    smoothed = smooth(y, beta)
    n = lr.size
    d = divergence_index(smoothed, factor=diverge_factor, skip_start=min(skip_start, n // 4))
    end = n if d is None else d
    lo = min(skip_start, end // 4)
    hi = end - min(skip_end, end // 4)
    raw_noise = step_noise(y[:end])
    sd = np.maximum(smoothed_sd(raw_noise, n, beta), noise)
    reading = _read_curve(lr[lo:hi], smoothed[lo:hi], sd[lo:hi])
    fallback = _geometric_middle(lr[:end] if end else lr)
    lr_min, lr_max = float(lr[0]), float(lr[-1])
    onset = end if d is None else _explosion_start(y, smoothed, d, diverge_factor, lo)
    diverge = float(lr[min(onset, n - 1)])
    values: dict[str, float] = {}
    for name in DESCENT_NAMES:
        read = reading.get(name)
        values[name] = fallback if read is None else read
    rise = reading.get("rise")
    return CurveSuggestions(
        steep=_clamp(values["steep"], lr_min, lr_max),
        min10=_clamp(values["min10"], lr_min, lr_max),
        valley=_clamp(values["valley"], lr_min, lr_max),
        diverge=diverge,
        diverge_index=d,
        stopped_early=d is not None,
        # a curve that never rose is "risen" at its divergence, or (never diverged) unknown
        fallbacks=tuple(
            name
            for name in SUGGESTION_NAMES[:4]
            if reading.get(name) is None and (name != "rise" or d is None)
        ),
        rise=diverge if rise is None else _clamp(min(rise, diverge), lr_min, lr_max),
        signal=reading.get("min10") is not None,
        noise=raw_noise,
    )


def step_noise(losses: ArrayLike) -> float:
    """Standard deviation of a raw loss curve's step-to-step noise, robust to its trend.

    From the differences of consecutive finite losses (a trend shifts them little, a spike
    touches two of them): ``1.4826 * median(|diff - median(diff)|) / sqrt(2)``, the noise of
    one loss. 0.0 for fewer than three finite losses.
    """
    y = _as_1d(losses, "losses")
    y = y[np.isfinite(y)]
    if y.size < 3:
        return 0.0
    with np.errstate(over="ignore", invalid="ignore"):  # losses near the float limit
        diffs = np.diff(y)
        mad = float(np.median(np.abs(diffs - np.median(diffs))))
    if not math.isfinite(mad):
        return math.inf
    return 1.4826 * mad / math.sqrt(2.0)


def smoothed_sd(noise: float, n: int, beta: float) -> FloatArray:
    """Standard deviation of each point of :func:`smooth` over white noise of sd ``noise``.

    The bias-corrected EMA at step ``i`` weights the losses ``0..i`` by ``(1 - beta) * beta**k
    / (1 - beta**(i + 1))``; its variance is ``noise**2`` times the sum of the squared weights,
    so the first points (few losses averaged) are noisier than the later ones.
    """
    i = np.arange(1, n + 1, dtype=np.float64)
    if beta == 0.0:
        return np.full(n, float(noise))
    with np.errstate(under="ignore"):
        squares = (1.0 - beta) ** 2 * (1.0 - beta ** (2 * i)) / (1.0 - beta**2)
        return float(noise) * np.sqrt(squares) / (1.0 - beta**i)


def repeat_spread(smoothed: Sequence[ArrayLike]) -> float:
    """How far the repeats' smoothed curves sit apart at the same step: the median, over the
    steps every repeat reached with a finite loss, of their standard deviation (ddof=1).

    Repeats share the weights and the ramp and differ only in data order, so this is the
    smoothed loss's noise as the test itself measured it. 0.0 with fewer than two repeats.
    """
    curves = [_as_1d(c, "smoothed") for c in smoothed]
    if len(curves) < 2:
        return 0.0
    n = min(c.size for c in curves)
    stacked = np.stack([c[:n] for c in curves])
    finite = np.all(np.isfinite(stacked), axis=0)
    if not finite.any():
        return 0.0
    return float(np.median(np.std(stacked[:, finite], axis=0, ddof=1)))


def _explosion_start(y: FloatArray, smoothed: FloatArray, d: int, factor: float, first: int) -> int:
    """Where the final, unbroken run of raw losses above the divergence threshold begins.

    The stop fires on the smoothed curve, which trails the raw one by about ``1 / (1 - beta)``
    steps; on a fast ramp that lag is several-fold in LR. The raw losses cross the same
    threshold (as :func:`divergence_index` defines it at step ``d``) first, so walking back
    from ``d`` over raw losses still above it removes the lag without letting an isolated
    early spike count.
    """
    finite = smoothed[:d][np.isfinite(smoothed[:d])]
    if finite.size == 0:
        return d
    best_at = int(np.argmin(finite))
    best = float(finite[best_at])
    peak = float(np.max(finite[: max(best_at, first) + 1]))
    threshold = best + (factor - 1.0) * _scale(best, peak)
    j = d
    while j - 1 > first and not (np.isfinite(y[j - 1]) and y[j - 1] <= threshold):
        j -= 1
    return j


def summarize(per_repeat: Sequence[CurveSuggestions]) -> dict[str, SuggestionSummary]:
    """Summarise each suggestion over the repeats of a range test.

    Args:
        per_repeat: one :class:`CurveSuggestions` per repeat; at least one.

    Fallback values are left out of the median and spread unless every repeat fell back; a
    repeat that never diverged has no ``diverge`` reading (see :class:`SuggestionSummary`).

    Returns:
        ``{"steep": ..., "min10": ..., "valley": ..., "diverge": ...}``, each a
        :class:`SuggestionSummary` (geometric median and spread in decades).
    """
    if not per_repeat:
        raise ValueError("per_repeat must hold at least one CurveSuggestions, got none")
    summary = {}
    for name in SUGGESTION_NAMES:
        values = [float(getattr(s, name)) for s in per_repeat]
        used = [v for v, s in zip(values, per_repeat, strict=True) if not s.is_fallback(name)]
        logs = np.log10(used or values)
        spread = float(np.std(logs, ddof=1)) if logs.size > 1 else 0.0
        summary[name] = SuggestionSummary(
            median=float(10.0 ** np.median(logs)),
            spread_decades=spread,
            values=tuple(values),
            n_fallback=len(values) - len(used),
        )
    return summary


def _read_curve(lr: FloatArray, y: FloatArray, sd: FloatArray) -> dict[str, float | None]:
    """steep, min10, valley and rise LRs from a finite, trimmed curve; a name is missing
    (or None) where the curve does not show it above its noise (``sd`` per point)."""
    if lr.size < 3:
        return {}
    x = np.log10(lr)
    m = int(np.argmin(y))
    picks: dict[str, float | None] = {}
    rise = _rise_index(y, sd, m)
    if rise is not None:
        picks["rise"] = float(lr[rise])
    top = _descent_top(y, sd, m)
    if not _significant(float(y[top]), float(y[m]), float(sd[top]), float(sd[m])):
        return picks
    picks["min10"] = float(lr[m]) / 10.0
    with np.errstate(over="ignore", invalid="ignore"):
        slope = np.gradient(y, x)[top : m + 1]
    picks["steep"] = float(lr[top + int(np.argmin(slope))])
    picks["valley"] = float(10.0 ** (x[top] + VALLEY_FRACTION * (x[m] - x[top])))
    return picks


def _significant(high: float, low: float, sd_high: float, sd_low: float) -> bool:
    """Whether ``high - low`` of the smoothed loss is more than noise (and, for a loss that
    is never negative, more than ``MIN_RELATIVE_DROP`` of its level)."""
    change = high - low
    floor = MIN_RELATIVE_DROP * max(high, low) if min(high, low) >= 0 else 0.0
    return bool(change > SIGNIFICANCE * math.hypot(sd_high, sd_low) and change > floor)


def _rise_index(y: FloatArray, sd: FloatArray, m: int) -> int | None:
    """The first point after the minimum ``m`` significantly above it, or None."""
    for i in range(m + 1, y.size):
        if _significant(float(y[i]), float(y[m]), float(sd[i]), float(sd[m])):
            return i
    return None


def _descent_top(y: FloatArray, sd: FloatArray, m: int) -> int:
    """Where the descent ending at the minimum ``m`` starts.

    Walking back from ``m``, the top is the highest point so far; the walk stops where the
    window of points behind it climbs less than the noise above that top (a plateau, or a
    first, earlier descent's floor). If that leaves no significant descent but the whole
    curve before ``m`` has one, the top is the highest point before ``m``.
    """
    window = max(2, round(PLATEAU_WINDOW * y.size))
    drop = float(np.max(y[: m + 1]) - y[m])
    top = m
    for j in range(m, 0, -1):
        if y[j] > y[top]:
            top = j
        behind = y[max(j - window, 0) : j]
        threshold = max(PLATEAU_SIGMAS * float(sd[j]), PLATEAU_OF_DROP * drop)
        if float(np.max(behind)) - float(y[top]) < threshold:
            break
    else:
        top = int(np.argmax(y[: m + 1]))
    if not _significant(float(y[top]), float(y[m]), float(sd[top]), float(sd[m])):
        top = int(np.argmax(y[: m + 1]))
    return top


def _check_lrs(lrs: ArrayLike) -> FloatArray:
    """The LRs as a float array, after checking they are a usable ramp."""
    lr = _as_1d(lrs, "lrs")
    if lr.size == 0:
        raise ValueError("lrs must hold at least one LR, got an empty array")
    bad = lr[~(np.isfinite(lr) & (lr > 0))]
    if bad.size:
        raise ValueError(f"lrs must be positive and finite, got {float(bad[0])!r}")
    if np.any(np.diff(np.log10(lr)) <= 0):
        raise ValueError("lrs must be strictly increasing (in log10), got a step that is not")
    return lr


def _as_1d(values: ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    return array


def _geometric_middle(lr: FloatArray) -> float:
    return float(math.sqrt(float(lr[0])) * math.sqrt(float(lr[-1])))


def _clamp(value: float, low: float, high: float) -> float:
    return float(min(max(value, low), high))
