"""Summaries of the raw runs: medians over seeds, compute to a target, targets met or missed.

Pure numpy. A curve is a list of points ``[trial_epochs, wall_s, val, test]``: ``val`` is the
best validation value so far, ``test`` the test metric of the trial that holds it (the trial
selection picks, :func:`chosen`); both None until a trial completes, ``test`` None where the
workload has no test split. A section scores its arms on ``test`` where it has one
(``"scored_on": "test"``), else on ``val`` (:func:`score_index`). "Worst" is direction-aware:
a missing value (diverged, or no completed trial) ranks below every real one, and a median
that falls on one is None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "best_at",
    "chosen",
    "first_reach",
    "median_or_none",
    "run_score",
    "score_index",
    "summarize_pruning",
    "summarize_search",
]

Curve = Sequence[Sequence[float | None]]
TE, WALL, VAL, TEST = 0, 1, 2, 3


def chosen(trials: Sequence[Mapping[str, Any]], *, maximize: bool) -> Mapping[str, Any] | None:
    """The trial a validation-based selection picks: the best finite ``"value"`` (validation).

    Its ``"test_metric"`` is what the benchmark reports; the test score plays no part in the
    choice. Ties keep the earlier trial; None if no trial has a finite value.
    """
    best: Mapping[str, Any] | None = None
    for trial in trials:
        value = trial.get("value")
        if value is None or not math.isfinite(value):
            continue
        if best is None or (value > best["value"] if maximize else value < best["value"]):
            best = trial
    return best


def score_index(section: Mapping[str, Any]) -> int:
    """Where a section's curves keep the number it is scored on: test, or validation."""
    return TEST if section.get("scored_on") == "test" else VAL


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


def _at(point: Sequence[float | None], value: int) -> float | None:
    return point[value] if value < len(point) else None


def best_at(curve: Curve, x: float, axis: int = TE, value: int = VAL) -> float | None:
    """The chosen trial's ``value`` (VAL or TEST) at compute ``x`` (trial-epochs or wall
    seconds); None if none yet."""
    best = None
    for point in curve:
        if float(point[axis] or 0.0) > x + 1e-9:
            break
        best = _at(point, value)
    return None if best is None else float(best)


def first_reach(
    curve: Curve, target: float, *, maximize: bool, axis: int = TE, value: int = VAL
) -> float | None:
    """Compute (on ``axis``) at which the chosen trial's ``value`` first reaches ``target``;
    None if never."""
    for point in curve:
        best = _at(point, value)
        if best is not None and (best >= target if maximize else best <= target):
            return float(point[axis] or 0.0)
    return None


# the search target for a metric to minimise: this fraction above the best arm's median best
LOSS_TOLERANCE = 0.01

# summary keys of the anytime view -> the fraction of the budget each is read at
FRACTION_OF_BUDGET = {
    "median_best_at_eighth": 1 / 8,
    "median_best_at_quarter": 1 / 4,
    "median_best_at_half": 1 / 2,
    "median_best": 1.0,
}


def _signs(maximize: bool) -> tuple[float, float]:
    """``(worst value, worst compute)`` for this direction."""
    return (-math.inf if maximize else math.inf), math.inf


def summarize_search(section: dict[str, Any], *, tolerance: float) -> dict[str, Any]:
    """Per arm: best at the budget, compute to the target; the target itself.

    "Best" is the score (test where the section has a test split, see :func:`score_index`)
    of the trial with the best validation value so far; ``median_best_val`` keeps that
    trial's validation value. The target is ``tolerance`` points short of the best arm's
    median best (for a metric to minimise, a loss: ``LOSS_TOLERANCE`` of it, 1%) (median over seeds, so one lucky seed does not set it).
    """
    maximize = section["direction"] == "maximize"
    worst, never = _signs(maximize)
    budget = float(section["budget"])
    score = score_index(section)
    curves = {
        arm: [within(r["curve"], budget) for r in runs] for arm, runs in section["runs"].items()
    }
    finals = {arm: [best_at(c, budget, value=score) for c in cs] for arm, cs in curves.items()}
    medians = {arm: median_or_none(v, worst=worst) for arm, v in finals.items()}
    real = [m for m in medians.values() if m is not None]
    target = None
    if real:
        target = max(real) - tolerance if maximize else min(real) * (1 + LOSS_TOLERANCE)
    arms: dict[str, Any] = {}
    for arm, runs in section["runs"].items():
        to_te = [
            first_reach(c, target, maximize=maximize, value=score) if target is not None else None
            for c in curves[arm]
        ]
        to_wall = [
            first_reach(c, target, maximize=maximize, axis=WALL, value=score)
            if target is not None
            else None
            for c in curves[arm]
        ]
        arms[arm] = {
            "seeds": len(runs),
            "median_best": medians[arm],
            "median_best_val": median_or_none(
                [best_at(c, budget) for c in curves[arm]], worst=worst
            ),
            "q25_best": quantile(finals[arm], 0.25, worst=worst),
            "q75_best": quantile(finals[arm], 0.75, worst=worst),
            # anytime view: how good the search is an eighth, a quarter and half way in
            "median_best_at_eighth": median_or_none(
                [best_at(c, budget / 8, value=score) for c in curves[arm]], worst=worst
            ),
            "median_best_at_quarter": median_or_none(
                [best_at(c, budget / 4, value=score) for c in curves[arm]], worst=worst
            ),
            "median_best_at_half": median_or_none(
                [best_at(c, budget / 2, value=score) for c in curves[arm]], worst=worst
            ),
            # and how much the seeds disagree there: (25%, 75%) of the best at each fraction
            "iqr_best_at": {
                key: [
                    quantile(
                        [best_at(c, budget * f, value=score) for c in curves[arm]], q, worst=worst
                    )
                    for q in (0.25, 0.75)
                ]
                for key, f in FRACTION_OF_BUDGET.items()
            },
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
    return {"target": target, "scored_on": _scored_on(section), "arms": arms}


def _scored_on(section: Mapping[str, Any]) -> str:
    return "test" if score_index(section) == TEST else "validation"


def run_score(section: Mapping[str, Any], run: Mapping[str, Any]) -> float | None:
    """A run's score: its chosen trial's test metric, or its validation value without one."""
    key = "best_test" if score_index(section) == TEST else "best_val"
    value = run.get(key, run.get("best"))
    return None if value is None else float(value)


def summarize_pruning(section: dict[str, Any]) -> dict[str, Any]:
    """Per pruner: trial-epochs and best (medians), and both paired with ``none`` per seed.

    Best and lost are scored like the search (the validation-chosen trial's test metric
    where the section has a test split); ``median_best_val`` keeps the validation value.
    """
    maximize = section["direction"] == "maximize"
    worst, _ = _signs(maximize)
    runs = section["runs"]
    base = {r["seed"]: r for r in runs.get("none", [])}
    out: dict[str, Any] = {}
    for pruner, rows in runs.items():
        saved, lost, relative = [], [], []
        for r in rows:
            ref = base.get(r["seed"])
            if ref is None:
                continue
            saved.append(1.0 - r["trial_epochs"] / ref["trial_epochs"])
            ours, theirs = run_score(section, r), run_score(section, ref)
            if ours is not None and theirs is not None:
                gap = theirs - ours if maximize else ours - theirs
                lost.append(gap)
                relative.append(gap / abs(theirs) if theirs else 0.0)
        out[pruner] = {
            "seeds": len(rows),
            "scored_on": _scored_on(section),
            "median_trial_epochs": float(np.median([r["trial_epochs"] for r in rows])),
            "median_best": median_or_none([run_score(section, r) for r in rows], worst=worst),
            "median_best_val": median_or_none(
                [r.get("best_val", r.get("best")) for r in rows], worst=worst
            ),
            "median_pruned": float(np.median([r["pruned"] for r in rows])),
            "median_wall_s": float(np.median([r["wall_s"] for r in rows])),
            "median_saved_fraction": float(np.median(saved)) if saved else 0.0,
            "median_points_lost": float(np.median(lost)) if lost else 0.0,
            "max_points_lost": float(max(lost)) if lost else 0.0,
            "median_relative_lost": float(np.median(relative)) if relative else 0.0,
            # seeds in which a trial of the top 3 without pruning was pruned
            "seeds_top3_pruned": int(sum(bool(r.get("top3_pruned")) for r in rows)),
        }
    return out
