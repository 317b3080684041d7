"""Calibrate the ``max_lr`` prior's defaults by measurement (``lrsearch calibrate-prior``).

Per workload: the range test, then one-cycle over a ``max_lr`` grid around its suggestions; where
the best falls relative to each, how wide the good region is; :func:`choose_defaults` decides.
"""

from __future__ import annotations

import itertools
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
from lrsearch.prior import ANCHORS, DEFAULT_LOW_DECADES, optimizer_family
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
        "family": optimizer_family(workload.optimizer_name),
        "epochs": s.epochs or workload.epochs,
        "metric": workload.metric.name,
        "range_test": {k: v for k, v in test.to_dict().items() if k != "repeats"},
        "grid_step_decades": math.log10(grid[1] / grid[0]),
        "sweep": rows,
        **found,
        "offsets": {n: math.log10(found["best_max_lr"] / v) for n, v in suggestions.items()},
    }


def _calibrate_in_child(spec: str, s: SweepSettings) -> dict[str, Any]:
    """:func:`calibrate_workload` in a worker process: one torch thread, lines on stderr."""
    import sys

    import torch

    torch.set_num_threads(1)
    return calibrate_workload(spec, s, lambda line: print(line, file=sys.stderr, flush=True))


def _sweep_all(
    workloads: Sequence[str],
    s: SweepSettings,
    log: Log,
    jobs: int,
    on_done: Callable[[dict[str, Any]], None],
) -> dict[str, dict[str, Any]]:
    """Each workload's sweep by name, each handed to ``on_done`` as soon as it finishes."""
    swept: dict[str, dict[str, Any]] = {}
    if jobs <= 1 or len(workloads) <= 1:
        for w in workloads:
            swept[w] = calibrate_workload(w, s, log)
            on_done(swept[w])
        return swept
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")  # torch and fork do not mix
    with ProcessPoolExecutor(min(jobs, len(workloads)), mp_context=context) as pool:
        futures = {pool.submit(_calibrate_in_child, w, s): w for w in workloads}
        for future in as_completed(futures):
            swept[futures[future]] = future.result()
            on_done(swept[futures[future]])
    return swept


def _round_up(x: float, step: float = 0.05) -> float:
    return round(math.ceil(round(x / step, 6)) * step, 2)


def _round(x: float, step: float = 0.05) -> float:
    return round(round(x / step) * step, 2) + 0.0


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
        "offset_decades": _round(float(offsets[anchor].mean())),
        "sigma_floor": _round_up(sigma),
        "low_decades": DEFAULT_LOW_DECADES,
        "high_factor": 1.0 if over <= 0.0 else math.ceil(10 ** (over + 1)) / 10,
        "offset_mean_by_anchor": {a: float(v.mean()) for a, v in offsets.items()},
        "offset_std_by_anchor": std,
        "predictive_sigma_decades": sigma,
        "grid_step_decades": step,
        "max_best_over_diverge": 10**over,
    }


def _interpolated(sweep: Sequence[Row], lr: float) -> float | None:
    """The sweep's mean metric at ``lr``, linear in log10(max_lr) between grid points (None
    outside the grid or next to a diverged point)."""
    x = math.log10(lr)
    for p0, p1 in itertools.pairwise(sweep):
        x0, x1 = math.log10(p0["max_lr"]), math.log10(p1["max_lr"])
        if x0 <= x <= x1:
            if p0["mean"] is None or p1["mean"] is None:
                return None
            t = (x - x0) / (x1 - x0)
            return float(p0["mean"] + t * (p1["mean"] - p0["mean"]))
    return None


def _family_offset(others: Sequence[Row], anchor: str, family: str) -> float | None:
    """The mean offset of ``anchor`` over the workloads of ``family``, None if there are none."""
    same = [r["offsets"][anchor] for r in others if r["family"] == family]
    return float(np.mean(same)) if same else None


def _family_sigma(others: Sequence[Row], anchor: str) -> float:
    """The by-family rule's own width: the spread of the offsets around their family's mean
    (one degree of freedom per family used), widened like :func:`choose_defaults`'s."""
    residuals = [
        r["offsets"][anchor] - (_family_offset(others, anchor, r["family"]) or 0.0) for r in others
    ]
    dof = len(others) - len({r["family"] for r in others})
    var = sum(x * x for x in residuals) / dof if dof > 0 else 0.0
    step = max(r["grid_step_decades"] for r in others)
    return math.sqrt(var * (1 + 1 / len(others)) + step**2 / 12)


def _predict(others: Sequence[Row], r: Row, by_family: bool) -> dict[str, Any]:
    """Where the rule calibrated on ``others`` puts ``r``'s prior, and how far its best is."""
    rule = choose_defaults(others)
    anchor, offset = rule["anchor"], float(rule["offset_mean_by_anchor"][rule["anchor"]])
    if by_family:
        own = _family_offset(others, anchor, r["family"])
        offset = offset if own is None else own
    width = _family_sigma(others, anchor) if by_family else rule["predictive_sigma_decades"]
    suggestions = r["range_test"]["suggestions"]
    centre = min(suggestions[anchor]["median"] * 10.0**offset, suggestions["diverge"]["median"])
    sigma = max(width, suggestions[anchor]["spread_decades"])
    error = math.log10(r["best_max_lr"] / centre)
    at_centre = _interpolated(r["sweep"], centre)
    lost = None if at_centre is None else abs(r["best_metric"] - at_centre)
    return {
        "anchor": anchor,
        "offset_decades": offset,
        "centre": centre,
        "sigma_decades": sigma,
        "error_decades": error,
        "z": error / sigma,
        "lost_at_centre": lost,
    }


def held_out(results: Sequence[Row]) -> dict[str, Any]:
    """Leave-one-workload-out: each workload's prior from the rule calibrated on the others.

    Two rules: ``pooled`` (one anchor and offset for every workload, :func:`choose_defaults`)
    and ``by_family`` (the same anchor, the offset averaged over the other workloads of the
    held-out one's optimizer family, the pooled one where it has none). Per workload: the
    centre, the error ``log10(best / centre)`` in decades, in sigmas of the rule's own width
    (from the others only), and what the sweep scores at the centre against its best. Per
    rule: the RMS and largest error and the largest |z|. Needs at least three workloads.
    """
    if len(results) < 3:
        return {}
    rules: dict[str, Any] = {}
    for name, by_family in (("pooled", False), ("by_family", True)):
        rows = [
            {
                "workload": r["workload"],
                "family": r["family"],
                **_predict([o for o in results if o is not r], r, by_family),
            }
            for r in results
        ]
        errors = np.array([row["error_decades"] for row in rows])
        rules[name] = {
            "rows": rows,
            "rms_error_decades": float(np.sqrt(np.mean(errors**2))),
            "max_abs_error_decades": float(np.max(np.abs(errors))),
            "max_abs_z": float(max(abs(row["z"]) for row in rows)),
        }
    better = (
        "by_family"
        if (rules["by_family"]["rms_error_decades"] < rules["pooled"]["rms_error_decades"])
        else "pooled"
    )
    return {**rules, "chosen": better}


def final_choice(results: Sequence[Row], held: Row) -> dict[str, Any]:
    """:func:`choose_defaults` on every workload, its width taken from the held-out errors.

    With a leave-one-workload-out analysis (three or more workloads) the sigma floor is the
    RMS held-out error of the rule that had the smaller one, rounded up to 0.05 decades, and
    where that rule is ``by_family`` each family's mean offset is chosen too.
    """
    choice = choose_defaults(results)
    if not held:
        return choice
    rule = held["chosen"]
    choice["rule"] = rule
    choice["sigma_floor"] = _round_up(held[rule]["rms_error_decades"])
    if rule == "by_family":
        anchor = choice["anchor"]
        families = sorted({r["family"] for r in results})
        choice["offset_by_family"] = {
            f: _round(_family_offset(results, anchor, f) or 0.0) for f in families
        }
    return choice


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
    workloads: Sequence[str],
    settings: SweepSettings | None = None,
    *,
    log: Log | None = None,
    jobs: int = 1,
    reuse: Row | None = None,
    on_workload: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Calibrate the prior over ``workloads`` (names or ``module:function``); JSON-ready
    ``{"settings", "machine", "workloads", "choice", "held_out"}``.

    Args:
        log: gets a line per trained point (from worker processes they go to stderr).
        jobs: workloads swept at once, each in its own process on one torch thread.
        reuse: an earlier result; its workloads swept with the same settings are not swept
            again (add a workload to a calibration without redoing the others).
        on_workload: called with the partial result (``settings``, ``workloads`` so far)
            each time a workload's sweep finishes: save it, and a crash later loses nothing.
    """
    s = settings or SweepSettings()
    if not workloads or s.points < 3 or s.seeds < 1 or jobs < 1:
        raise ValueError(
            f"need a workload, points >= 3, seeds >= 1, jobs >= 1; got {workloads=}, {s}, {jobs=}"
        )
    done: dict[str, dict[str, Any]] = {}
    if reuse is not None and _same_settings(reuse.get("settings", {}), s):
        done = {r["workload"]: r for r in reuse.get("workloads", [])}
    todo = [w for w in workloads if w not in done]
    settings_dict = {**asdict(s), "one_cycle": ONE_CYCLE}

    def finished(result: dict[str, Any]) -> None:
        done[result["workload"]] = result
        if on_workload is not None:
            on_workload({"settings": settings_dict, "workloads": list(done.values())})

    _sweep_all(todo, s, log or (lambda _: None), jobs, finished)
    results = [done[w] for w in workloads]
    return {
        "settings": settings_dict,
        "machine": _machine(),
        "workloads": results,
        "held_out": (held := held_out(results)),
        "choice": final_choice(results, held),
    }


def _same_settings(recorded: Row, s: SweepSettings) -> bool:
    mine = {**asdict(s), "one_cycle": ONE_CYCLE}
    return all(recorded.get(k) == v for k, v in mine.items() if k != "device")


def _summary_row(r: Row) -> str:
    s, end_lr = r["range_test"]["suggestions"], r["range_test"]["settings"]["end_lr"]
    cells = [f"{s[n]['median']:.3g}" for n in SUGGESTION_NAMES]
    cells[-1] += "*" if s["diverge"]["median"] >= end_lr else ""
    cells += [f"{r['best_max_lr']:.3g}" + (" (edge)" if r["best_at_edge"] else "")]
    cells += [f"{r['metric']} {r['best_metric']:.2f}"]
    cells += [f"{r['offsets'][n]:+.2f}" for n in SUGGESTION_NAMES]
    cells += [f"{r['good_low']:.3g} - {r['good_high']:.3g}", f"{r['good_width_decades']:.2f}"]
    return f"| {r['workload']} | {r.get('family', 'sgd')} | {r['epochs']} | {' | '.join(cells)} |"


def _sweep_line(r: Row) -> str:
    means = ["diverged" if p["mean"] is None else f"{p['mean']:.1f}" for p in r["sweep"]]
    points = ", ".join(f"{p['max_lr']:.3g}: {m}" for p, m in zip(r["sweep"], means, strict=True))
    return f"- **{r['workload']}**: {points}"


_REPORT = """\
# Prior calibration: where the best one-cycle `max_lr` falls

Produced by (the raw numbers are in the `.json` next to this file):

    {command}

Machine: {machine}, device `{device}`.

Method: range test (defaults, {range_test_repeats} repeats); one-cycle ({one_cycle}, the \
workload's optimizer, weight decay 0) at {points} `max_lr` values log-spaced over \
{span_decades:g} decades around steep/min10/valley, {seeds} seeds each. Best: the best mean \
final validation metric. Good region: the unbroken run of points around the best within \
{tolerance:g} of it. Δ = log10(best / suggestion), decades.

| workload | optimizer | epochs | steep | min10 | valley | diverge | best max_lr | best \
| Δsteep | Δmin10 | Δvalley | Δdiverge | good region | width (dec) |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
{rows}

\\* most repeats never diverged: `diverge` is the end of the ramp, a lower bound.
{held_out}
## Chosen defaults (`lrsearch/prior.py`)

{defaults}

- **anchor `{anchor}`**: its offset to the best varies least across the {n} workloads \
(Δ mean ± sample std, decades: {per_anchor}).
{offset_why}
{sigma_why}
- **high factor {high_factor:g}**: the largest best / diverge is {max_best_over_diverge:.3g}.

## Sweeps: `max_lr`: mean final validation metric (per seed in the `.json`)

{sweeps}
"""

_HELD_OUT = """
## Held out: each workload's prior from the rule calibrated on the others

Leave one workload out: calibrate anchor, offset and width on the other {others} workloads \
(`pooled`: one offset for all; `by_family`: the offset averaged over the other workloads of \
the same optimizer family, pooled where there are none, and the width of the offsets around \
their family's mean), centre the held-out workload's prior by that rule, and see where its \
best `max_lr` falls. Error = log10(best / centre), decades; z = error / the rule's sigma \
(from the other workloads only); lost = the sweep's best minus its value at the centre \
(interpolated; what a first trial there would give away).

| workload | optimizer | rule | anchor | offset | centre | best | error (dec) | sigma | z | lost |
|---|---|---|---|---|---|---|---|---|---|---|
{rows}

{summary} Chosen: **{chosen}** (the smaller RMS error held out).
"""


def _held_out_md(result: Row) -> str:
    held = result.get("held_out") or {}
    if not held:
        return ""
    best = {r["workload"]: r["best_max_lr"] for r in result["workloads"]}
    rows, summary = [], []
    for rule in ("pooled", "by_family"):
        for row in held[rule]["rows"]:
            lost = "-" if row["lost_at_centre"] is None else f"{row['lost_at_centre']:.2f}"
            rows.append(
                f"| {row['workload']} | {row['family']} | {rule} | {row['anchor']} "
                f"| {row['offset_decades']:+.2f} | {row['centre']:.3g} "
                f"| {best[row['workload']]:.3g} | {row['error_decades']:+.2f} "
                f"| {row['sigma_decades']:.2f} | {row['z']:+.2f} | {lost} |"
            )
        h = held[rule]
        summary.append(
            f"`{rule}`: RMS error {h['rms_error_decades']:.2f} decades, largest "
            f"{h['max_abs_error_decades']:.2f}, largest |z| {h['max_abs_z']:.2f}."
        )
    return _HELD_OUT.format(
        others=len(result["workloads"]) - 1,
        rows="\n".join(rows),
        summary=" ".join(summary),
        chosen=held["chosen"],
    )


def _offset_why(c: Row) -> str:
    if "offset_by_family" in c:
        per = ", ".join(f"{f} {v:+.2f}" for f, v in c["offset_by_family"].items())
        return (
            f"- **offset by optimizer family** ({per} decades; the mean Δ{c['anchor']} of each "
            f"family, to 0.05), {c['offset_decades']:+.2f} where the family is unknown (the "
            "mean over all)."
        )
    return f"- **offset {c['offset_decades']:+.2f} decades**: the mean Δ{c['anchor']}, to 0.05 decades."


def _sigma_why(c: Row, held: Row, n: int) -> str:
    if held:
        h = held[c["rule"]]
        return (
            f"- **sigma floor {c['sigma_floor']:.2f} decades**: the RMS held-out error of the "
            f"`{c['rule']}` rule ({h['rms_error_decades']:.3f}), rounded up to 0.05: the width "
            "comes from how far a workload the rule has not seen falls from its centre."
        )
    return (
        f"- **sigma floor {c['sigma_floor']:.2f} decades**: how far a new workload's best may "
        f"fall from the centre: sqrt({c['offset_std_by_anchor'][c['anchor']]:.2f}² · (1 + 1/{n}) + "
        f"{c['grid_step_decades']:.2f}² / 12) = {c['predictive_sigma_decades']:.3f} (the offsets' "
        "spread, widened for the estimated mean, plus the grid's quantisation), rounded up to 0.05."
    )


def render_markdown(result: Row, *, command: str) -> str:
    """The calibration as markdown: how it ran, the table, the defaults and why, the sweeps."""
    s, c, results = result["settings"], result["choice"], result["workloads"]
    means, stds = c["offset_mean_by_anchor"], c["offset_std_by_anchor"]
    defaults = [f"    DEFAULT_{k.upper()} = {json.dumps(c[k])}" for k in DEFAULTS]
    if "offset_by_family" in c:
        defaults.append(f"    DEFAULT_OFFSET_BY_FAMILY = {json.dumps(c['offset_by_family'])}")
    return _REPORT.format(
        **{**s, "one_cycle": ", ".join(f"{k} {v}" for k, v in s["one_cycle"].items())},
        **c,
        command=command,
        machine=result["machine"],
        rows="\n".join(_summary_row(r) for r in results),
        held_out=_held_out_md(result),
        defaults="\n".join(defaults),
        n=len(results),
        per_anchor=", ".join(f"{a} {m:+.2f} ± {stds[a]:.2f}" for a, m in means.items()),
        offset_why=_offset_why(c),
        sigma_why=_sigma_why(c, result.get("held_out") or {}, len(results)),
        sweeps="\n".join(_sweep_line(r) for r in results),
    )
