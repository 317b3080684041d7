"""PNG plots: range-test curves with the prior, schedules, and study summaries."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lrsearch.prior import LRPrior
    from lrsearch.range_test import RangeTestResult
    from lrsearch.schedules import Schedule


@dataclass(frozen=True)
class StudyHistory:
    """What a study's plots show: its complete trials, in order, and the prior."""

    numbers: Sequence[int]
    values: Sequence[float]
    max_lrs: Sequence[float]
    maximize: bool
    prior: LRPrior
    importances: Mapping[str, float]
    counts: Mapping[str, int] = field(default_factory=dict)  # trials by state, and "diverged"
    schedules: Sequence[Schedule] = ()  # of the complete trials, in the same order
    total_steps: int = 0
    metric: str = "metric"  # the workload's, e.g. "accuracy" (trials report val_<metric>)


_PRIOR_COLOUR = "dimgrey"  # not a repeat colour (C0, C1, ...)


def _figure(**kwargs: Any) -> Figure:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def range_test_png(result: RangeTestResult, path: str | Path) -> Path:
    """Loss of every repeat vs LR with the max_lr prior; below, the suggestions per repeat.

    The top panel has each repeat's raw (faint) and smoothed loss on a log-LR axis, and the
    prior's density per decade on its own right-hand axis. The strip below has one row per
    suggestion: a tick per repeat in that repeat's colour, and a black marker at the median
    the prior is built from. Faded ticks are fallbacks, left out of the median: a repeat that
    never diverged has its ``diverge`` tick at the ramp's end.
    """
    fig = _figure(figsize=(8, 6.5))
    ax, strip = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [4, 1.4]})
    _loss_curves(ax, result)
    prior_ax = _prior_density(ax, result)
    _suggestion_strip(strip, result)
    ax.set_xscale("log")
    ax.set_ylabel("training loss (smoothed: solid, raw: faint)")
    ax.set_title(
        f"LR range test ({len(result.curves)} repeats); prior centre {result.prior.center:.3g}"
    )
    entries = [a.get_legend_handles_labels() for a in (ax, prior_ax, strip)]
    ax.legend(
        [h for hs, _ in entries for h in hs],
        [label for _, ls in entries for label in ls],
        fontsize=8,
        loc="upper left",
    )
    strip.set_xlabel("learning rate")
    fig.subplots_adjust(hspace=0.08)
    return _save(fig, path)


def _loss_curves(ax: Any, result: RangeTestResult) -> None:
    """Raw and smoothed loss per repeat; the y range is set by the curves before divergence."""
    finite_sm: list[float] = []
    for r, curve in enumerate(result.curves):
        ax.plot(curve.lrs, curve.losses, color=f"C{r}", alpha=0.25, lw=0.8)
        ax.plot(curve.lrs, curve.smoothed, color=f"C{r}", lw=1.6, label=f"repeat {r + 1}")
        # the blow-up after divergence would flatten the rest of the curve
        stop = curve.suggestions.diverge_index or len(curve.smoothed)
        finite_sm += [v for v in curve.smoothed[:stop] if math.isfinite(v)]
    if finite_sm:
        low, high = min(finite_sm), max(finite_sm)
        pad = 0.1 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + 3 * pad)
    for summary in result.summary.values():
        ax.axvline(summary.median, color="grey", ls=":", lw=0.8)


def _prior_density(ax: Any, result: RangeTestResult) -> Any:
    """The prior's density per decade of max_lr, on a right-hand axis of its own."""
    prior_ax = ax.twinx()
    grid = np.logspace(np.log10(result.prior.low), np.log10(result.prior.high), 200)
    density = np.exp(np.asarray(result.prior.logpdf(grid)))
    prior_ax.fill_between(grid, density, color=_PRIOR_COLOUR, alpha=0.2, label="max_lr prior")
    prior_ax.plot(grid, density, color=_PRIOR_COLOUR, lw=1.0)
    prior_ax.set_ylim(0, density.max() * 3 if density.size else 1)
    prior_ax.set_ylabel("prior density over max_lr (per decade)", color=_PRIOR_COLOUR)
    prior_ax.tick_params(axis="y", colors=_PRIOR_COLOUR)
    return prior_ax


def _suggestion_strip(strip: Any, result: RangeTestResult) -> None:
    """One row per suggestion: a tick per repeat, a marker at the median; legend entries."""
    names = list(result.summary)
    for row, (name, summary) in enumerate(result.summary.items()):
        for r, curve in enumerate(result.curves):
            strip.plot(
                [getattr(curve.suggestions, name)],
                [row],
                marker="|",
                ms=14,
                mew=2,
                ls="none",
                color=f"C{r}",
                alpha=0.35 if curve.suggestions.is_fallback(name) else 1.0,
            )
        strip.plot([summary.median], [row], marker="D", color="k", ms=7, ls="none")
        strip.annotate(
            f"{summary.median:.2g}",
            (summary.median, row),
            xytext=(0, 8),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    strip.set_yticks(range(len(names)), names)
    strip.set_ylim(len(names) - 0.5, -0.7)
    strip.grid(axis="y", color="0.9", lw=0.8)
    tick = {"marker": "|", "ms": 10, "mew": 2, "ls": "none", "color": "grey"}
    strip.plot([], [], **tick, label="suggestion per repeat (below)")
    strip.plot([], [], **tick, alpha=0.35, label="fallback or never diverged: not in median")
    strip.plot([], [], marker="D", ms=6, ls="none", color="k", label="median over repeats")


def schedule_png(
    schedule: Schedule, path: str | Path, *, n_steps: int | None = None, title: str | None = None
) -> Path:
    """LR (and momentum, where the schedule has one) against the step."""
    fig = _figure(figsize=(7, 3.5))
    ax = fig.add_subplot()
    lrs = schedule.lrs(n_steps)
    ax.plot(np.arange(len(lrs)), lrs, color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate", color="tab:blue")
    momenta = schedule.momenta(n_steps)
    if momenta is not None:
        ax2 = ax.twinx()
        ax2.plot(np.arange(len(momenta)), momenta, color="tab:orange")
        ax2.set_ylabel("momentum", color="tab:orange")
    ax.set_title(title or type(schedule).__name__)
    return _save(fig, path)


def study_pngs(history: StudyHistory, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importances, and ``max_lr`` vs metric with the prior."""
    if not history.numbers:
        return []
    paths = [
        _history_png(
            history.numbers, history.values, history.maximize, out_dir / "optimization_history.png"
        )
    ]
    if history.importances:
        paths.append(_importance_png(dict(history.importances), out_dir / "param_importances.png"))
    paths.append(_max_lr_png(history, out_dir / "max_lr_vs_metric.png"))
    if history.schedules:
        paths.append(_schedules_png(history, out_dir / "schedules.png"))
    return paths


def _schedules_png(history: StudyHistory, path: Path) -> Path:
    """Every complete trial's LR schedule, coloured by its value; the best one drawn bold.

    One figure for the study instead of one per trial: drawing costs ~0.3 s of CPU, which a
    per-trial PNG took from every trial's training.
    """
    return _save(schedules_figure(history), path)


def schedules_figure(history: StudyHistory) -> Figure:
    """The figure of :func:`_schedules_png`: a colour bar, labelled with the validation
    metric's name, maps each schedule's colour to its trial's value."""
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig = _figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    values = np.asarray(history.values, dtype=float)
    lo, hi = float(values.min()), float(values.max())
    norm = Normalize(lo, hi) if hi > lo else Normalize(lo - 1.0, hi + 1.0)
    cmap = matplotlib.colormaps["viridis" if history.maximize else "viridis_r"]
    best = int(np.argmax(values) if history.maximize else np.argmin(values))
    steps = np.arange(history.total_steps)
    for i, schedule in enumerate(history.schedules):
        colour = cmap(norm(values[i]))
        ax.plot(steps, schedule.lrs(history.total_steps), color=colour, lw=0.9, alpha=0.7)
    ax.plot(
        steps,
        history.schedules[best].lrs(history.total_steps),
        color="black",
        lw=2.2,
        label=f"best: trial {history.numbers[best]} ({values[best]:.4g})",
    )
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    ax.set_title("schedules of the complete trials")
    ax.legend(loc="lower left")
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=f"val_{history.metric}")
    return fig


def _history_png(
    numbers: Sequence[int], values: Sequence[float], maximize: bool, path: Path
) -> Path:
    fig = _figure(figsize=(7, 4))
    ax = fig.add_subplot()
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    ax.plot(numbers, values, "o", alpha=0.6, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation metric")
    ax.legend()
    ax.set_title("optimisation history (complete trials)")
    return _save(fig, path)


def _importance_png(importances: dict[str, float], path: Path) -> Path:
    fig = _figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("parameter importances")
    return _save(fig, path)


def _max_lr_png(history: StudyHistory, path: Path) -> Path:
    fig = _figure(figsize=(7, 4))
    ax = fig.add_subplot()
    ax.plot(history.max_lrs, history.values, "o", label="complete trials")
    ax.set_xscale("log")
    ax.set_xlabel("max_lr")
    ax.set_ylabel("validation metric")
    prior = history.prior
    dens_ax = ax.twinx()
    grid = np.logspace(np.log10(prior.low), np.log10(prior.high), 200)
    density = np.exp(np.asarray(prior.logpdf(grid)))
    dens_ax.fill_between(grid, density, color="tab:green", alpha=0.15, label="prior")
    dens_ax.set_yticks([])
    dens_ax.set_ylim(0, density.max() * 2.5)
    ax.set_title(f"max_lr vs metric; prior centre {prior.center:.3g}")
    return _save(fig, path)
