"""Summaries of the raw runs: medians over seeds, compute to a target, targets met or missed.

Pure numpy. A curve is a list of points ``[trial_epochs, wall_s, best_so_far]`` (best None
until a trial completes). "Worst" is direction-aware: a missing value (diverged, or no
completed trial) ranks below every real one, and a median that falls on one is None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["best_at", "first_reach", "median_or_none", "summarize_pruning", "summarize_search"]

Curve = Sequence[Sequence[float | None]]
TE, WALL, BEST = 0, 1, 2


def median_or_none(values: Sequence[float | None], *, worst: float) -> float | None:
    """Median with None counted as ``worst`` (``±inf``); None if the median is not finite."""
    if not values:
        return None
    filled = np.array([worst if v is None else v for v in values], dtype=np.float64)
    middle = np.sort(filled)[[(len(filled) - 1) // 2, len(filled) // 2]]
    out = float(middle.mean())
    return out if math.isfinite(out) else None


def quantile(values: Sequence[float | None], q: float, *, worst: float) -> float | None:
    filled = np.array([worst if v is None else v for v in values], dtype=np.float64)
    if not filled.size:
        return None
    out = float(np.quantile(filled, q, method="nearest"))
    return out if math.isfinite(out) else None


def within(curve: Curve, budget: float) -> list[Sequence[float | None]]:
    """The points spent within ``budget`` trial-epochs (a trial crossing it does not count)."""
    return [p for p in curve if float(p[TE] or 0.0) <= budget + 1e-9]


def best_at(curve: Curve, x: float, axis: int = TE) -> float | None:
    """Best value reached by compute ``x`` (trial-epochs or wall seconds); None if none yet."""
    best = None
    for point in curve:
        if float(point[axis] or 0.0) > x + 1e-9:
            break
        best = point[BEST]
    return None if best is None else float(best)


def first_reach(curve: Curve, target: float, *, maximize: bool, axis: int = TE) -> float | None:
    """Compute (on ``axis``) at which the best first reaches ``target``; None if never."""
    for point in curve:
        best = point[BEST]
        if best is not None and (best >= target if maximize else best <= target):
            return float(point[axis] or 0.0)
    return None


def _signs(maximize: bool) -> tuple[float, float]:
    """``(worst value, worst compute)`` for this direction."""
    return (-math.inf if maximize else math.inf), math.inf


def summarize_search(section: dict[str, Any], *, tolerance: float) -> dict[str, Any]:
    """Per arm: best at the budget, compute to the target; the target itself.

    The target is ``tolerance`` points short of the best arm's median best (median over
    seeds, so one lucky seed does not set it).
    """
    maximize = section["direction"] == "maximize"
    worst, never = _signs(maximize)
    budget = float(section["budget"])
    curves = {
        arm: [within(r["curve"], budget) for r in runs] for arm, runs in section["runs"].items()
    }
    finals = {arm: [best_at(c, budget) for c in cs] for arm, cs in curves.items()}
    medians = {arm: median_or_none(v, worst=worst) for arm, v in finals.items()}
    real = [m for m in medians.values() if m is not None]
    target = None
    if real:
        target = max(real) - tolerance if maximize else min(real) + tolerance
    arms: dict[str, Any] = {}
    for arm, runs in section["runs"].items():
        to_te = [
            first_reach(c, target, maximize=maximize) if target is not None else None
            for c in curves[arm]
        ]
        to_wall = [
            first_reach(c, target, maximize=maximize, axis=WALL) if target is not None else None
            for c in curves[arm]
        ]
        arms[arm] = {
            "seeds": len(runs),
            "median_best": medians[arm],
            "q25_best": quantile(finals[arm], 0.25, worst=worst),
            "q75_best": quantile(finals[arm], 0.75, worst=worst),
            # anytime view: how good the search is a quarter and half way into its budget
            "median_best_at_quarter": median_or_none(
                [best_at(c, budget / 4) for c in curves[arm]], worst=worst
            ),
            "median_best_at_half": median_or_none(
                [best_at(c, budget / 2) for c in curves[arm]], worst=worst
            ),
            "median_trial_epochs_to_target": median_or_none(to_te, worst=never),
            "median_wall_s_to_target": median_or_none(to_wall, worst=never),
            "reached_target": sum(v is not None for v in to_te),
            # what was spent within the budget: the trial crossing it is left out
            "median_trials": float(np.median([len(c) - 1 for c in curves[arm]])),
            "median_trial_epochs": float(np.median([c[-1][TE] or 0.0 for c in curves[arm]])),
            "median_wall_s": float(np.median([c[-1][WALL] or 0.0 for c in curves[arm]])),
            "median_range_test_trial_epochs": float(
                np.median([r["range_test_trial_epochs"] for r in runs])
            ),
        }
    return {"target": target, "arms": arms}


def summarize_pruning(section: dict[str, Any]) -> dict[str, Any]:
    """Per pruner: trial-epochs and best (medians), and both paired with ``none`` per seed."""
    maximize = section["direction"] == "maximize"
    worst, _ = _signs(maximize)
    runs = section["runs"]
    base = {r["seed"]: r for r in runs.get("none", [])}
    out: dict[str, Any] = {}
    for pruner, rows in runs.items():
        saved, lost = [], []
        for r in rows:
            ref = base.get(r["seed"])
            if ref is None:
                continue
            saved.append(1.0 - r["trial_epochs"] / ref["trial_epochs"])
            if r["best"] is not None and ref["best"] is not None:
                gap = ref["best"] - r["best"]
                lost.append(gap if maximize else -gap)
        out[pruner] = {
            "seeds": len(rows),
            "median_trial_epochs": float(np.median([r["trial_epochs"] for r in rows])),
            "median_best": median_or_none([r["best"] for r in rows], worst=worst),
            "median_pruned": float(np.median([r["pruned"] for r in rows])),
            "median_wall_s": float(np.median([r["wall_s"] for r in rows])),
            "median_saved_fraction": float(np.median(saved)) if saved else 0.0,
            "median_points_lost": float(np.median(lost)) if lost else 0.0,
        }
    return out
