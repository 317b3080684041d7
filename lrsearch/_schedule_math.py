"""The arithmetic under :mod:`lrsearch.schedules`: argument checks that name the argument and
the rule it broke, and piecewise interpolation between knots (numpy and stdlib only)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

__all__ = ["check_choice", "check_count", "check_momentum_pair", "check_number", "piecewise"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def check_count(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {name}={value!r}")
    return int(value)


def check_number(
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is finite and inside the given interval."""
    if high == math.inf:
        rule = f"> {low:g}" if low_open else f">= {low:g}"
    else:
        rule = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number {rule}, got {name}={value!r}")
    x = float(value)
    below = x <= low if low_open else x < low
    above = x >= high if high_open else x > high
    if not math.isfinite(x) or below or above:
        raise ValueError(f"{name} must be {rule}, got {name}={value!r}")
    return x


def check_choice(name: str, value: object, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {name}={value!r}")
    return str(value)


def check_momentum_pair(momentum: Sequence[float] | None) -> tuple[float, float] | None:
    """Check a ``(high, low)`` momentum pair: ``1 > high >= low >= 0``."""
    if momentum is None:
        return None
    if isinstance(momentum, str) or not isinstance(momentum, Sequence) or len(momentum) != 2:
        raise ValueError(f"momentum must be a (high, low) pair or None, got {momentum=}")
    high, low = (check_number("momentum", m, low=0, high=1, high_open=True) for m in momentum)
    if high < low:
        raise ValueError(f"momentum must be (high, low) with high >= low, got {momentum=}")
    return high, low


def piecewise(
    steps: IntArray, knots: Sequence[int], values: Sequence[float], shape: str
) -> FloatArray:
    """Interpolate ``values`` given at increasing step indices ``knots``, evaluated at ``steps``.

    ``steps`` must be ``>= knots[0]``. ``shape="cos"`` eases every segment with half a cosine.
    Knots are hit exactly.
    """
    x = np.asarray(knots, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    seg = np.minimum(np.searchsorted(x, steps, side="right") - 1, len(x) - 2)
    x0, x1, y0, y1 = x[seg], x[seg + 1], y[seg], y[seg + 1]
    t = (steps - x0) / (x1 - x0)
    if shape == "cos":
        t = (1.0 - np.cos(np.pi * t)) / 2.0
    # The same arithmetic as torch's linear anneal, (end - start) * pct + start.
    out = (y1 - y0) * t + y0
    at_end = t >= 1.0
    out[at_end] = y1[at_end]
    return out
