"""Calibrate the ``max_lr`` prior's defaults by measurement (``lrsearch calibrate-prior``).

Per workload: the range test, then one-cycle over a ``max_lr`` grid around its suggestions; where
the best falls relative to each, how wide the good region is; :func:`choose_defaults` decides.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lrsearch.policies import SMITH_DEFAULTS
from lrsearch.prior import ANCHORS, DEFAULT_LOW_DECADES
from lrsearch.range_test import range_test_workload
from lrsearch.schedules import OneCycle
from lrsearch.suggest import SUGGESTION_NAMES
from lrsearch.training import train
from lrsearch.workloads import Workload, get_workload

__all__ = ["SweepSettings", "calibrate", "choose_defaults", "render_markdown", "sweep_grid"]

# Smith's one-cycle defaults (SGD, no weight decay); only max_lr varies in the sweep.
ONE_CYCLE: dict[str, Any] = {
    **{name: SMITH_DEFAULTS[name] for name in ("div_factor", "cycle_frac", "annihilation")},
    "momentum": [SMITH_DEFAULTS["momentum_high"], SMITH_DEFAULTS["momentum_low"]],
}
# choose_defaults keys, each the DEFAULT_<KEY.upper()> constant of lrsearch.prior it chooses.
DEFAULTS = ("anchor", "offset_decades", "sigma_floor", "low_decades", "high_factor")
Log = Callable[[str], None]
Row = Mapping[str, Any]


@dataclass(frozen=True)
class SweepSettings:
    """How each workload is swept (one-cycle at Smith's defaults, only ``max_lr`` varies)."""

    points: int = 9  # max_lr grid points (>= 3), log-spaced over span_decades
    span_decades: float = 2.5  # centred on the middle of the steep/min10/valley suggestions
    seeds: int = 2  # training seeds per point: 0 .. seeds - 1
    epochs: int | None = None  # training epochs; None: each workload's own
    device: str = "cpu"  # "cpu" or "cuda:N"
    tolerance: float = 0.5  # how far (metric units) below the best a point still counts as good
    range_test_repeats: int = 3  # the range test itself runs at its defaults


def sweep_grid(suggestions: Mapping[str, float], points: int, span_decades: float) -> list[float]:
    """``points`` LRs evenly spaced in log10 over ``span_decades``, centred on the geometric
    middle of the lowest and highest of the steep/min10/valley suggestions."""
    logs = [math.log10(suggestions[name]) for name in ANCHORS]
    mid, half = (min(logs) + max(logs)) / 2, span_decades / 2
    return [float(v) for v in 10.0 ** np.linspace(mid - half, mid + half, points)]


def _train_point(workload: Workload, max_lr: float, s: SweepSettings, log: Log) -> dict[str, Any]:
    """Final validation metric per seed (None: diverged) and their mean (None if any is)."""
    epochs = s.epochs or workload.epochs
    cycle = OneCycle(max_lr, epochs * workload.steps_per_epoch(), **ONE_CYCLE)
    runs = [train(workload, cycle, epochs=epochs, device=s.device, seed=k) for k in range(s.seeds)]
    metrics = [None if r.diverged else r.val_metric for r in runs]
    mean = None if None in metrics else float(np.mean([r.val_metric for r in runs]))
    log(f"{workload.name}: max_lr={max_lr:.4g} -> {metrics}")
    return {"max_lr": max_lr, "metrics": metrics, "mean": mean}


def _analyse(rows: Sequence[Row], direction: str, tolerance: float) -> dict[str, Any]:
    """The best point (highest mean; a diverged seed rules a point out) and the good region:
    the unbroken run of points around it within ``tolerance``."""
    sign = 1.0 if direction == "maximize" else -1.0
    scores = [-math.inf if r["mean"] is None else sign * r["mean"] for r in rows]
    best = lo = hi = int(np.argmax(scores))
    if math.isinf(scores[best]):
        raise ValueError("every max_lr of the sweep diverged; nothing to calibrate against")
    while lo > 0 and scores[lo - 1] >= scores[best] - tolerance:
        lo -= 1
    while hi < len(rows) - 1 and scores[hi + 1] >= scores[best] - tolerance:
        hi += 1
    return {
        "best_max_lr": rows[best]["max_lr"],
        "best_metric": rows[best]["mean"],
        "best_at_edge": best in (0, len(rows) - 1),
        "good_low": rows[lo]["max_lr"],
        "good_high": rows[hi]["max_lr"],
        "good_width_decades": math.log10(rows[hi]["max_lr"] / rows[lo]["max_lr"]),
    }


def calibrate_workload(spec: str, s: SweepSettings, log: Log) -> dict[str, Any]:
    """Range-test one workload (a name or ``module:function``), sweep one-cycle ``max_lr``
    around its suggestions, and place the best: ``offsets[name] = log10(best / name)``."""
    workload = get_workload(spec)
    test = range_test_workload(workload, device=s.device, repeats=s.range_test_repeats)
    suggestions = {name: summary.median for name, summary in test.summary.items()}
    grid = sweep_grid(suggestions, s.points, s.span_decades)
    rows = [_train_point(workload, lr, s, log) for lr in grid]
    found = _analyse(rows, workload.metric.direction, s.tolerance)
    return {
        "workload": spec,
        "epochs": s.epochs or workload.epochs,
        "metric": workload.metric.name,
        "range_test": {k: v for k, v in test.to_dict().items() if k != "repeats"},
        "grid_step_decades": math.log10(grid[1] / grid[0]),
        "sweep": rows,
        **found,
        "offsets": {n: math.log10(found["best_max_lr"] / v) for n, v in suggestions.items()},
    }


def choose_defaults(results: Sequence[Row]) -> dict[str, Any]:
    """The prior defaults the measurements support.

    Anchor: the suggestion whose offset to the best varies least across workloads (sample std
    ``s``; ties, to 0.001, go to the earlier of steep, min10, valley). Offset: its mean offset, to
    0.05 decades. Sigma floor: how far a new workload's best may fall from that centre,
    ``sqrt(s**2 * (1 + 1/n) + step**2 / 12)`` (``s`` widened for the estimated mean, plus the
    grid's quantisation), rounded up to 0.05. High factor: 1 unless some best lies above diverge.
    """
    offsets = {a: np.array([r["offsets"][a] for r in results]) for a in ANCHORS}
    std = {a: float(v.std(ddof=1)) if v.size > 1 else 0.0 for a, v in offsets.items()}
    anchor = min(ANCHORS, key=lambda a: (round(std[a], 3), ANCHORS.index(a)))
    step = max(r["grid_step_decades"] for r in results)
    sigma = math.sqrt(std[anchor] ** 2 * (1 + 1 / len(results)) + step**2 / 12)
    over = max(r["offsets"]["diverge"] for r in results)  # log10(best / diverge)
    return {
        "anchor": anchor,
        "offset_decades": round(round(float(offsets[anchor].mean()) / 0.05) * 0.05, 2) + 0.0,
        "sigma_floor": round(math.ceil(round(sigma / 0.05, 6)) * 0.05, 2),
        "low_decades": DEFAULT_LOW_DECADES,
        "high_factor": 1.0 if over <= 0.0 else math.ceil(10 ** (over + 1)) / 10,
        "offset_mean_by_anchor": {a: float(v.mean()) for a, v in offsets.items()},
        "offset_std_by_anchor": std,
        "predictive_sigma_decades": sigma,
        "grid_step_decades": step,
        "max_best_over_diverge": 10**over,
    }


def _machine() -> str:
    import torch

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = re.search(r"model name\s*:\s*(.+)", info)
    return (
        f"{cpu.group(1) if cpu else platform.machine()} ({os.cpu_count()} cores), "
        f"{platform.platform()}, Python {platform.python_version()}, torch {torch.__version__} "
        f"on {torch.get_num_threads()} thread(s)"
    )


def calibrate(
    workloads: Sequence[str], settings: SweepSettings | None = None, *, log: Log | None = None
) -> dict[str, Any]:
    """Calibrate the prior over ``workloads`` (names or ``module:function``); JSON-ready
    ``{"settings", "machine", "workloads", "choice"}``. ``log`` gets a line per trained point."""
    s = settings or SweepSettings()
    if not workloads or s.points < 3 or s.seeds < 1:
        raise ValueError(f"need a workload, points >= 3, seeds >= 1; got {workloads=}, {s}")
    results = [calibrate_workload(w, s, log or (lambda _: None)) for w in workloads]
    return {
        "settings": {**asdict(s), "one_cycle": ONE_CYCLE},
        "machine": _machine(),
        "workloads": results,
        "choice": choose_defaults(results),
    }


def _summary_row(r: Row) -> str:
    s, end_lr = r["range_test"]["suggestions"], r["range_test"]["settings"]["end_lr"]
    cells = [f"{s[n]['median']:.3g}" for n in SUGGESTION_NAMES]
    cells[-1] += "*" if s["diverge"]["median"] >= end_lr else ""
    cells += [f"{r['best_max_lr']:.3g}" + (" (edge)" if r["best_at_edge"] else "")]
    cells += [f"{r['metric']} {r['best_metric']:.2f}"]
    cells += [f"{r['offsets'][n]:+.2f}" for n in SUGGESTION_NAMES]
    cells += [f"{r['good_low']:.3g} - {r['good_high']:.3g}", f"{r['good_width_decades']:.2f}"]
    return f"| {r['workload']} | {r['epochs']} | {' | '.join(cells)} |"


def _sweep_line(r: Row) -> str:
    means = ["diverged" if p["mean"] is None else f"{p['mean']:.1f}" for p in r["sweep"]]
    points = ", ".join(f"{p['max_lr']:.3g}: {m}" for p, m in zip(r["sweep"], means, strict=True))
    return f"- **{r['workload']}**: {points}"


_REPORT = """\
# Prior calibration: where the best one-cycle `max_lr` falls

Produced by (the raw numbers are in the `.json` next to this file):

    {command}

Machine: {machine}, device `{device}`.

Method: range test (defaults, {range_test_repeats} repeats); one-cycle ({one_cycle}, SGD, \
weight decay 0) at {points} `max_lr` values log-spaced over {span_decades:g} decades around \
steep/min10/valley, {seeds} seeds each. Best: highest mean final validation metric. Good region: \
the unbroken run of points around the best within {tolerance:g} of it. \
Δ = log10(best / suggestion), decades.

| workload | epochs | steep | min10 | valley | diverge | best max_lr | best \
| Δsteep | Δmin10 | Δvalley | Δdiverge | good region | width (dec) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{rows}

\\* most repeats never diverged: `diverge` is the end of the ramp, a lower bound.

## Chosen defaults (`lrsearch/prior.py`)

{defaults}

- **anchor `{anchor}`**: its offset to the best varies least across the {n} workloads \
(Δ mean ± sample std, decades: {per_anchor}).
- **offset {offset_decades:+.2f} decades**: the mean Δ{anchor}, to 0.05 decades.
- **sigma floor {sigma_floor:.2f} decades**: how far a new workload's best may fall from the \
centre: sqrt({std:.2f}² · (1 + 1/{n}) + {grid_step_decades:.2f}² / 12) = \
{predictive_sigma_decades:.3f} (the offsets' spread, widened for the estimated mean, plus the \
grid's quantisation), rounded up to 0.05.
- **high factor {high_factor:g}**: the largest best / diverge is {max_best_over_diverge:.3g}.

## Sweeps: `max_lr`: mean final validation metric (per seed in the `.json`)

{sweeps}
"""


def render_markdown(result: Row, *, command: str) -> str:
    """The calibration as markdown: how it ran, the table, the defaults and why, the sweeps."""
    s, c, results = result["settings"], result["choice"], result["workloads"]
    means, stds = c["offset_mean_by_anchor"], c["offset_std_by_anchor"]
    return _REPORT.format(
        **{**s, "one_cycle": ", ".join(f"{k} {v}" for k, v in s["one_cycle"].items())},
        **c,
        command=command,
        machine=result["machine"],
        rows="\n".join(_summary_row(r) for r in results),
        defaults="\n".join(f"    DEFAULT_{k.upper()} = {json.dumps(c[k])}" for k in DEFAULTS),
        n=len(results),
        per_anchor=", ".join(f"{a} {m:+.2f} ± {stds[a]:.2f}" for a, m in means.items()),
        std=stds[c["anchor"]],
        sweeps="\n".join(_sweep_line(r) for r in results),
    )
