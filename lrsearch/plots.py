"""PNG plots: range-test curves with the prior, schedules, and study summaries."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from lrsearch.range_test import RangeTestResult
    from lrsearch.schedules import Schedule

MARKERS = {"steep": "v", "min10": "s", "valley": "o", "diverge": "X"}


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
    """Raw and smoothed loss of every repeat vs LR (log axis), suggestions, prior density."""
    fig = _figure(figsize=(8, 5))
    ax = fig.add_subplot()
    finite_sm: list[float] = []
    for r, curve in enumerate(result.curves):
        lrs = np.asarray(curve.lrs)
        colour = f"C{r}"
        ax.plot(lrs, curve.losses, color=colour, alpha=0.25, lw=0.8)
        ax.plot(lrs, curve.smoothed, color=colour, lw=1.6, label=f"repeat {r + 1}")
        # the y range comes from the curve before it diverged: the blow-up would flatten the rest
        stop = curve.suggestions.diverge_index or len(curve.smoothed)
        finite_sm += [v for v in curve.smoothed[:stop] if math.isfinite(v)]
        sug = curve.suggestions
        for name, marker in MARKERS.items():
            lr = getattr(sug, name)
            ax.plot(
                [lr],
                [np.interp(np.log10(lr), np.log10(lrs), curve.smoothed)],
                marker=marker,
                color=colour,
                ms=7,
                ls="none",
            )
    ax.set_xscale("log")
    if finite_sm:
        low, high = min(finite_sm), max(finite_sm)
        pad = 0.1 * (high - low or 1.0)
        ax.set_ylim(low - pad, high + 3 * pad)
    for name, marker in MARKERS.items():
        median = result.summary[name].median
        ax.axvline(median, color="grey", ls=":", lw=0.8)
        ax.plot([], [], marker=marker, color="k", ls="none", label=f"{name} {median:.2g}")
    prior_ax = ax.twinx()
    grid = np.logspace(np.log10(result.prior.low), np.log10(result.prior.high), 200)
    density = np.exp(np.asarray(result.prior.logpdf(grid)))
    prior_ax.fill_between(grid, density, color="tab:green", alpha=0.15, label="max_lr prior")
    prior_ax.set_yticks([])
    prior_ax.set_ylim(0, density.max() * 3 if density.size else 1)
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss (smoothed: solid)")
    ax.set_title(
        f"LR range test ({len(result.curves)} repeats); prior centre {result.prior.center:.3g}"
    )
    handles, labels = ax.get_legend_handles_labels()
    ph, pl = prior_ax.get_legend_handles_labels()
    ax.legend(handles + ph, labels + pl, fontsize=8, loc="upper left")
    return _save(fig, path)


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


def study_pngs(handle: Any, out_dir: Path) -> list[Path]:
    """Optimisation history, parameter importances, and ``max_lr`` vs metric with the prior."""
    from optuna.trial import TrialState

    trials = [t for t in handle.study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not trials:
        return []
    maximize = handle.study.direction.name == "MAXIMIZE"
    paths = [_history_png(trials, maximize, out_dir / "optimization_history.png")]
    if len(trials) >= 3:
        importances = _importances(handle.study)
        if importances:
            paths.append(_importance_png(importances, out_dir / "param_importances.png"))
    paths.append(_max_lr_png(handle, trials, out_dir / "max_lr_vs_metric.png"))
    return paths


def _history_png(trials: list[Any], maximize: bool, path: Path) -> Path:
    fig = _figure(figsize=(7, 4))
    ax = fig.add_subplot()
    numbers = [t.number for t in trials]
    values = [t.value for t in trials]
    best = np.maximum.accumulate(values) if maximize else np.minimum.accumulate(values)
    ax.plot(numbers, values, "o", alpha=0.6, label="trial")
    ax.step(numbers, best, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel("validation metric")
    ax.legend()
    ax.set_title("optimisation history (complete trials)")
    return _save(fig, path)


def _importances(study: Any) -> dict[str, float]:
    import optuna

    try:
        return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}  # too few distinct trials for an estimate


def _importance_png(importances: dict[str, float], path: Path) -> Path:
    fig = _figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    names = list(importances)[::-1]
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlabel("importance (fANOVA)")
    ax.set_title("parameter importances")
    return _save(fig, path)


def _max_lr_png(handle: Any, trials: list[Any], path: Path) -> Path:
    fig = _figure(figsize=(7, 4))
    ax = fig.add_subplot()
    xs = [t.params.get("max_lr", math.nan) for t in trials]
    ax.plot(xs, [t.value for t in trials], "o", label="complete trials")
    ax.set_xscale("log")
    ax.set_xlabel("max_lr")
    ax.set_ylabel("validation metric")
    prior = handle.prior
    dens_ax = ax.twinx()
    grid = np.logspace(np.log10(prior.low), np.log10(prior.high), 200)
    density = np.exp(np.asarray(prior.logpdf(grid)))
    dens_ax.fill_between(grid, density, color="tab:green", alpha=0.15, label="prior")
    dens_ax.set_yticks([])
    dens_ax.set_ylim(0, density.max() * 2.5)
    ax.set_title(f"max_lr vs metric; prior centre {prior.center:.3g}")
    return _save(fig, path)
