"""The report's PNGs: search curves with spread over seeds, pruning, storage latency."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lrsearch.harness.bench._config import ARMS, SEARCH_ARMS
from lrsearch.harness.bench._stats import TE, WALL, best_at, score_index, within

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["pruning_png", "search_png", "storage_png"]

COLOURS = {arm: f"C{i}" for i, arm in enumerate(ARMS)}
GRID = 200


def _figure(**kwargs: Any) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def _band(ax: Axes, runs: list[list[Any]], axis: int, end: float, arm: str, value: int) -> None:
    """Median best-so-far over seeds, and the band between the 25th and 75th percentile."""
    xs = np.linspace(0.0, end, GRID)
    values = np.array(
        [[np.nan if (b := best_at(c, x, axis, value)) is None else b for x in xs] for c in runs],
        dtype=np.float64,
    )
    present = np.isfinite(values).sum(axis=0) * 2 > len(runs)  # a majority of seeds has a value
    if not present.any():
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # columns before any trial completed
        q25, q50, q75 = (np.nanpercentile(values, q, axis=0) for q in (25, 50, 75))
    ax.plot(xs[present], q50[present], color=COLOURS[arm], lw=1.8, label=arm)
    ax.fill_between(xs[present], q25[present], q75[present], color=COLOURS[arm], alpha=0.2)


def _what(section: dict[str, Any]) -> str:
    """What the y axis shows: the chosen trial's test metric, or validation without a test split."""
    if section.get("scored_on") == "test":
        return f"test {section['metric']} (chosen on validation)"
    return f"validation {section['metric']} (no test split)"


def _point(ax: Axes, runs: list[dict[str, Any]], axis: int, arm: str) -> None:
    """A one-trial recipe: median compute and metric, whiskers over seeds."""
    pts = np.array(
        [[r["curve"][-1][axis], r["best"]] for r in runs if r["best"] is not None], dtype=np.float64
    )
    if not len(pts):
        return
    x, y = np.median(pts, axis=0)
    ax.errorbar(
        [x],
        [y],
        yerr=[[y - pts[:, 1].min()], [pts[:, 1].max() - y]],
        fmt="o",
        color=COLOURS[arm],
        capsize=3,
        label=arm,
    )


def search_png(name: str, section: dict[str, Any], summary: dict[str, Any], path: Path) -> Path:
    """Best metric (the validation-chosen trial's test score) vs trial-epochs and vs wall time,
    one line per arm."""
    fig = _figure(figsize=(12, 4.5))
    budget = float(section["budget"])
    arms = [arm for arm in ARMS if arm in section["runs"]]
    curves = {arm: [within(r["curve"], budget) for r in section["runs"][arm]] for arm in arms}
    wall_end = max(
        (c[-1][WALL] or 0.0 for arm in arms if arm in SEARCH_ARMS for c in curves[arm]),
        default=1.0,
    )
    for i, (axis, end, label) in enumerate(
        [(TE, budget, "trial-epochs (range test included)"), (WALL, wall_end, "wall time (s)")]
    ):
        ax = fig.add_subplot(1, 2, i + 1)
        for arm in arms:
            if arm in SEARCH_ARMS:
                _band(ax, curves[arm], axis, end, arm, score_index(section))
            else:
                _point(ax, section["runs"][arm], axis, arm)
        _finish_search_axes(ax, summary, label)
    fig.suptitle(
        f"{name}: best {_what(section)} so far (median over "
        f"{len(section['runs']['lrsearch'])} seeds, band: 25-75%)"
    )
    return _save(fig, path)


def _finish_search_axes(ax: Axes, summary: dict[str, Any], label: str) -> None:
    target = summary["target"]
    if target is not None:
        ax.axhline(target, color="grey", ls="--", lw=1, label=f"target {target:.2f}")
        medians = [a["median_best"] for a in summary["arms"].values() if a["median_best"]]
        low = min([*medians, target]) - 2.0
        ax.set_ylim(low, max([*medians, target]) + 1.0)
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")


def pruning_png(sections: dict[str, Any], path: Path) -> Path:
    """Per workload: each pruner's median share of trial-epochs saved against the median
    score lost (the saved-lost plane; up and left is better), one point per pruner."""
    fig = _figure(figsize=(5 * len(sections), 4.5))
    for i, (name, section) in enumerate(sections.items()):
        ax = fig.add_subplot(1, len(sections), i + 1)
        for j, (pruner, p) in enumerate(section["summary"].items()):
            ax.scatter(
                p["median_points_lost"],
                100 * p["median_saved_fraction"],
                color=f"C{j % 10}",
                marker="*" if pruner == "plateau" else "o",
                s=160 if pruner == "plateau" else 50,
                label=pruner,
            )
        ax.axhline(50, color="grey", ls="--", lw=1)
        ax.axvline(0.2, color="grey", ls=":", lw=1)
        ax.set_xlabel(f"median {section['metric']} points lost vs no pruning")
        ax.set_ylabel("trial-epochs saved (%)")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def storage_png(section: dict[str, Any], path: Path) -> Path:
    """p50 and p95 ask+tell latency against the study's size, one colour per worker count;
    one panel per way to the database (direct, through the proxy)."""
    arms = list(dict.fromkeys(r.get("arm", "direct") for r in section["runs"]))
    fig = _figure(figsize=(6.5 * len(arms), 4.5))
    colours = {w: f"C{i}" for i, w in enumerate(sorted({r["workers"] for r in section["runs"]}))}
    first = None
    for j, arm in enumerate(arms):
        ax = fig.add_subplot(1, len(arms), j + 1, sharey=first)
        first = first or ax
        for run in (r for r in section["runs"] if r.get("arm", "direct") == arm):
            who = f"{run['workers']} worker" + ("s" if run["workers"] > 1 else "")
            if run.get("filled"):
                who += f" ({run['filled']:,} written in bulk)"
            xs = [b["trials_done"] for b in run["buckets"]]
            colour = colours[run["workers"]]
            ls = "--" if run.get("filled") else "-"
            ax.plot(xs, [b["p95_ms"] for b in run["buckets"]], color=colour, ls=ls, marker="o")
            ax.plot(xs, [b["p50_ms"] for b in run["buckets"]], color=colour, ls=":", marker=".")
            ax.plot([], [], color=colour, label=who)
        ax.plot([], [], color="black", marker="o", label="p95 per tenth")
        ax.plot([], [], color="black", ls=":", marker=".", label="p50 per tenth")
        ax.axhline(50, color="grey", ls="--", lw=1, label="50 ms")
        ax.set_title(arm)
        ax.set_xlabel("trials in the study")
        ax.set_ylabel("ask + suggest + tell latency (ms)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return _save(fig, path)
