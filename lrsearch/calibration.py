"""Calibrate the ``max_lr`` prior's defaults by measurement (``lrsearch calibrate-prior``).

Per workload: the range test, then one-cycle over a geometric ``max_lr`` grid around its
suggestions, a few seeds per point; where the best falls relative to each suggestion, and how
wide the good region is. :func:`choose_defaults` turns that into the prior's defaults.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrsearch.prior import ANCHORS, DEFAULT_LOW_DECADES
from lrsearch.range_test import range_test_workload
from lrsearch.schedules import OneCycle
from lrsearch.suggest import SUGGESTION_NAMES
from lrsearch.training import train
from lrsearch.workloads import Workload, get_workload

__all__ = ["calibrate", "calibrate_workload", "choose_defaults", "render_markdown", "sweep_grid"]

# Smith's one-cycle defaults; only max_lr varies in the sweep.
ONE_CYCLE: dict[str, Any] = {
    "div_factor": 10.0,
    "cycle_frac": 0.9,
    "annihilation": 100.0,
    "momentum": [0.95, 0.85],
}
SPAN_DECADES = 2.5
# choose_defaults keys, each the DEFAULT_<KEY.upper()> constant of lrsearch.prior it chooses.
DEFAULTS = ("anchor", "offset_decades", "sigma_floor", "low_decades", "high_factor")
Log = Callable[[str], None]
Row = Mapping[str, Any]


def sweep_grid(
    suggestions: Mapping[str, float], *, points: int, span_decades: float = SPAN_DECADES
) -> list[float]:
    """``points`` LRs evenly spaced in log10 over ``span_decades``, centred on the geometric
    middle of the lowest and highest of the steep/min10/valley suggestions."""
    if points < 3:
        raise ValueError(f"points must be >= 3, got {points=}")
    logs = [math.log10(suggestions[name]) for name in ANCHORS]
    mid, half = (min(logs) + max(logs)) / 2, span_decades / 2
    return [float(v) for v in 10.0 ** np.linspace(mid - half, mid + half, points)]


def _train_point(
    workload: Workload, max_lr: float, *, seeds: int, epochs: int, device: str, log: Log
) -> dict[str, Any]:
    """Final validation metric per seed (None: diverged) and their mean (None if any is)."""
    runs = [
        train(
            workload,
            OneCycle(max_lr, epochs * workload.steps_per_epoch(), **ONE_CYCLE),
            epochs=epochs,
            weight_decay=0.0,
            device=device,
            seed=k,
        )
        for k in range(seeds)
    ]
    metrics = [None if r.diverged else r.val_metric for r in runs]
    mean = None if None in metrics else float(np.mean([r.val_metric for r in runs]))
    log(f"{workload.name}: max_lr={max_lr:.4g} -> {metrics}")
    return {"max_lr": max_lr, "metrics": metrics, "mean": mean}


def _scores(rows: Sequence[Row], direction: str) -> list[float]:
    """Mean metric signed so that higher is better; a point with a diverged seed is -inf."""
    sign = 1.0 if direction == "maximize" else -1.0
    return [-math.inf if r["mean"] is None else sign * r["mean"] for r in rows]


def _analyse(
    rows: Sequence[Row], suggestions: Mapping[str, float], *, direction: str, tolerance: float
) -> dict[str, Any]:
    """Best point, its offsets from each suggestion, and the good region around it."""
    scores = _scores(rows, direction)
    best = lo = hi = int(np.argmax(scores))
    if math.isinf(scores[best]):
        raise ValueError("every max_lr of the sweep diverged; nothing to calibrate against")
    while lo > 0 and scores[lo - 1] >= scores[best] - tolerance:
        lo -= 1
    while hi < len(rows) - 1 and scores[hi + 1] >= scores[best] - tolerance:
        hi += 1
    best_lr, low, high = rows[best]["max_lr"], rows[lo]["max_lr"], rows[hi]["max_lr"]
    return {
        "best_max_lr": best_lr,
        "best_metric": rows[best]["mean"],
        "offsets": {n: math.log10(best_lr / suggestions[n]) for n in SUGGESTION_NAMES},
        "good_low": low,
        "good_high": high,
        "best_at_edge": best in (0, len(rows) - 1),
        "good_width_decades": math.log10(high / low),
    }


def calibrate_workload(
    spec: str,
    *,
    points: int = 9,
    seeds: int = 2,
    epochs: int | None = None,
    device: str = "cpu",
    tolerance: float = 0.5,
    log: Log | None = None,
) -> dict[str, Any]:
    """Range-test one workload (``spec``: name or ``module:function``), sweep one-cycle
    ``max_lr`` at ``points`` grid points with seeds ``0 .. seeds - 1`` for ``epochs`` (default:
    the workload's), and place the best. A point is good within ``tolerance`` (metric units) of
    the best mean; ``log`` gets one line per trained point."""
    workload = get_workload(spec)
    epochs = epochs or workload.epochs
    test = range_test_workload(workload, device=device, repeats=3)
    suggestions = {name: s.median for name, s in test.summary.items()}
    grid = sweep_grid(suggestions, points=points)
    rows = [
        _train_point(
            workload, lr, seeds=seeds, epochs=epochs, device=device, log=log or (lambda _: None)
        )
        for lr in grid
    ]
    direction = workload.metric.direction
    return {
        "workload": spec,
        "epochs": epochs,
        "metric": workload.metric.name,
        "direction": direction,
        "range_test": {
            "suggestions": {name: s.to_dict() for name, s in test.summary.items()},
            "diverged_in_ramp": sum(c.suggestions.stopped_early for c in test.curves),
            "settings": test.settings,
        },
        "grid_step_decades": math.log10(grid[1] / grid[0]),
        "sweep": rows,
        **_analyse(rows, suggestions, direction=direction, tolerance=tolerance),
    }


def _regret(result: Row, anchor: str, offset: float) -> float:
    """Metric lost vs. the best by training at ``anchor * 10**offset`` (log-linear interpolation;
    a diverged point counts as the sweep's worst finished one)."""
    scores = np.array(_scores(result["sweep"], result["direction"]))
    scores[np.isinf(scores)] = scores[np.isfinite(scores)].min()
    xs = np.log10([r["max_lr"] for r in result["sweep"]])
    at = math.log10(result["range_test"]["suggestions"][anchor]["median"]) + offset
    return float(scores.max() - np.interp(at, xs, scores))


def choose_defaults(results: Sequence[Row]) -> dict[str, Any]:
    """The prior defaults the measurements support.

    - anchor: the suggestion whose offset to the best varies least across workloads (sample
      standard deviation; ties, to 0.001, go to the earlier of steep, min10, valley);
    - offset: the mean of that anchor's offsets, to 0.05 decades;
    - sigma floor: how far a new workload's best may fall from that centre: the offsets' sample
      std ``s`` widened for the estimated mean, ``s * sqrt(1 + 1/n)``, combined with the grid's
      quantisation, ``step / sqrt(12)``; rounded up to 0.05 decades;
    - high factor: 1 (cut at the divergence LR) unless some best lies above that.
    """
    offsets = {a: np.array([r["offsets"][a] for r in results]) for a in ANCHORS}
    std = {a: float(v.std(ddof=1)) if v.size > 1 else 0.0 for a, v in offsets.items()}
    anchor = min(ANCHORS, key=lambda a: (round(std[a], 3), ANCHORS.index(a)))
    offset = round(round(float(offsets[anchor].mean()) / 0.05) * 0.05, 2) + 0.0
    step = max(r["grid_step_decades"] for r in results)
    sigma = math.sqrt(std[anchor] ** 2 * (1 + 1 / len(results)) + step**2 / 12)
    over = max(
        r["best_max_lr"] / r["range_test"]["suggestions"]["diverge"]["median"] for r in results
    )
    return {
        "anchor": anchor,
        "offset_decades": offset,
        "low_decades": DEFAULT_LOW_DECADES,
        "sigma_floor": round(math.ceil(round(sigma / 0.05, 6)) * 0.05, 2),
        "high_factor": 1.0 if over <= 1.0 else math.ceil(over * 10) / 10,
        "offset_mean_by_anchor": {a: float(v.mean()) for a, v in offsets.items()},
        "offset_std_by_anchor": std,
        "predictive_sigma_decades": sigma,
        "grid_step_decades": step,
        "max_best_over_diverge": over,
        "regret_by_workload": {r["workload"]: _regret(r, anchor, offset) for r in results},
    }


def _machine() -> dict[str, Any]:
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = [ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")]
    return {
        "platform": platform.platform(),
        "cpu": (cpu or [platform.machine()])[0],
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def calibrate(
    workloads: Sequence[str],
    *,
    points: int = 9,
    seeds: int = 2,
    epochs: int | None = None,
    device: str = "cpu",
    tolerance: float = 0.5,
    log: Log | None = None,
) -> dict[str, Any]:
    """Calibrate over ``workloads`` (see :func:`calibrate_workload`); the result is JSON-ready:
    ``{"settings", "machine", "workloads": [...], "choice": choose_defaults(...)}``."""
    if not workloads:
        raise ValueError("workloads must name at least one workload, got none")
    results = [
        calibrate_workload(
            w,
            points=points,
            seeds=seeds,
            epochs=epochs,
            device=device,
            tolerance=tolerance,
            log=log,
        )
        for w in workloads
    ]
    settings = {
        "points": points,
        "seeds": seeds,
        "epochs": epochs,
        "device": device,
        "tolerance": tolerance,
        "span_decades": SPAN_DECADES,
        "range_test_repeats": 3,
        "one_cycle": dict(ONE_CYCLE),
        "weight_decay": 0.0,
    }
    return {
        "settings": settings,
        "machine": _machine(),
        "workloads": results,
        "choice": choose_defaults(results),
    }


def _fmt(value: float | None, spec: str = ".2f") -> str:
    return "diverged" if value is None else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return [f"| {' | '.join(row)} |" for row in (header, ["---"] * len(header), *rows)]


def _summary_row(r: Row) -> list[str]:
    s, end_lr = r["range_test"]["suggestions"], r["range_test"]["settings"]["end_lr"]
    star = "*" if s["diverge"]["median"] >= end_lr else ""
    return [
        r["workload"],
        str(r["epochs"]),
        *(f"{s[n]['median']:.3g}" for n in ANCHORS),
        f"{s['diverge']['median']:.3g}{star}",
        f"{r['best_max_lr']:.3g}" + (" (edge)" if r["best_at_edge"] else ""),
        f"{r['metric']} {_fmt(r['best_metric'])}",
        *(f"{r['offsets'][n]:+.2f}" for n in SUGGESTION_NAMES),
        f"{r['good_low']:.3g} - {r['good_high']:.3g}",
        f"{r['good_width_decades']:.2f}",
    ]


def _why(c: Row, n: int) -> list[str]:
    per = ", ".join(
        f"{a} {m:+.2f} ± {c['offset_std_by_anchor'][a]:.2f}"
        for a, m in c["offset_mean_by_anchor"].items()
    )
    lost = ", ".join(f"{w} {v:.2f}" for w, v in c["regret_by_workload"].items())
    std, step = c["offset_std_by_anchor"][c["anchor"]], c["grid_step_decades"]
    over = c["max_best_over_diverge"]
    return [
        f"- **anchor `{c['anchor']}`**: its offset to the best varies least across the {n} "
        f"workloads (Δ mean ± sample std, decades: {per}).",
        f"- **offset {c['offset_decades']:+.2f} decades**: the mean Δ{c['anchor']}, to 0.05. "
        f"Metric lost vs. the best at this centre (interpolated): {lost}.",
        f"- **sigma floor {c['sigma_floor']:.2f} decades**: how far a new workload's best may fall "
        f"from the centre: sqrt({std:.2f}² · (1 + 1/{n}) + {step:.2f}² / 12) = "
        f"{c['predictive_sigma_decades']:.3f} (spread of the offsets, widened for the estimated "
        "mean, plus the grid's quantisation), rounded up to 0.05.",
        f"- **high factor {c['high_factor']:g}**: the largest best/diverge ratio is {over:.3g}"
        + (": no best lies above the divergence cut." if over <= 1 else "."),
    ]


def _sweep_table(r: Row, anchor: str) -> list[str]:
    ref, rows = r["range_test"]["suggestions"][anchor]["median"], []
    for row in r["sweep"]:
        good = r["good_low"] <= row["max_lr"] <= r["good_high"]
        mark = "best" if row["max_lr"] == r["best_max_lr"] else "good" if good else ""
        rows.append(
            [
                f"{row['max_lr']:.4g}",
                f"{math.log10(row['max_lr'] / ref):+.2f}",
                *(_fmt(m) for m in row["metrics"]),
                _fmt(row["mean"]),
                mark,
            ]
        )
    seeds = [f"seed {i}" for i in range(len(r["sweep"][0]["metrics"]))]
    header = ["max_lr", f"log10(max_lr / {anchor})", *seeds, "mean", ""]
    return [f"### {r['workload']}", "", *_table(header, rows), ""]


def render_markdown(result: Row, *, command: str) -> str:
    """The calibration as markdown: how it ran, the table, the defaults and why, the sweeps."""
    s, m, c = result["settings"], result["machine"], result["choice"]
    oc_text, results = ", ".join(f"{k} {v}" for k, v in s["one_cycle"].items()), result["workloads"]
    head = [
        "workload",
        "epochs",
        *SUGGESTION_NAMES,
        "best max_lr",
        "best",
        *(f"Δ{n}" for n in SUGGESTION_NAMES),
        "good region",
        "width (dec)",
    ]
    sweeps = [line for r in results for line in _sweep_table(r, c["anchor"])]
    return "\n".join(
        [
            "# Prior calibration: where the best one-cycle `max_lr` falls",
            "",
            "Produced by (the raw numbers are in the `.json` next to this file):",
            "",
            f"    {command}",
            "",
            f"Machine: {m['cpu']} ({m['cpu_count']} cores), {m['platform']}, Python {m['python']}, "
            f"torch {m['torch']} on {m['torch_threads']} thread(s), device `{s['device']}`.",
            "",
            f"Method: range test (defaults, {s['range_test_repeats']} repeats); one-cycle ({oc_text}, "
            f"SGD, weight decay 0) at {s['points']} `max_lr` values log-spaced over "
            f"{s['span_decades']:g} decades around steep/min10/valley, {s['seeds']} seeds each. Best: "
            "highest mean final validation metric. Good region: the unbroken run of points around the "
            f"best within {s['tolerance']:g} of it. Δ = log10(best / suggestion), decades.",
            "",
            *_table(head, [_summary_row(r) for r in results]),
            "",
            "\\* most repeats never diverged: `diverge` is the end of the ramp, a lower bound.",
            "",
            "## Chosen defaults (`lrsearch/prior.py`)",
            "",
            *(f"    DEFAULT_{k.upper()} = {json.dumps(c[k])}" for k in DEFAULTS),
            "",
            *_why(c, len(results)),
            "",
            "## Sweeps",
            "",
            *sweeps,
        ]
    )
