"""Does the prior hold on workloads it was not calibrated on? Calibrate on one half, judge on the other.

    python -m lrsearch.harness.prior_check --jobs 2 --out docs/bench/prior-check.json

Per workload of the suite (:mod:`lrsearch.harness.suite`): range tests under three seeds, sized
as a study of 16 trials x 8 epochs sizes them (at most 5% of its steps), and a max_lr sweep of
one-cycle at Smith's defaults over a fixed grid (10^-5 .. 10, three points a decade, two
training seeds, 8 epochs), which does not depend on what the range test read. From the sweep:
the best max_lr, the good region (the unbroken run of grid points around the best within 2% of
its value) and where training improves at all (the lowest grid point that gains a tenth of the
sweep's range over its worst value).

The rules (the valley's offset, the prior's width, the cut above the rise, the no-signal centre)
are chosen on the ``CALIBRATION`` half only (:func:`choose`), then judged on the ``HELD_OUT``
half (:func:`judge`): per workload and range-test seed, the centre's distance from the best and
from the good region (decades, and sigmas of the prior), whether a reading the prior used lies
below where training improves at all (spurious), how many swept points inside the prior's
bounds diverged, and what the range test cost.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lrsearch.policies import SMITH_DEFAULTS
from lrsearch.prior import (
    DEFAULT_ANCHOR,
    DEFAULT_CUT_DECADES,
    DEFAULT_OFFSET_DECADES,
    DEFAULT_SIGMA_FLOOR,
    NO_SIGNAL_OFFSET_DECADES,
    NO_SIGNAL_SIGMA,
    LRPrior,
    has_signal,
    optimizer_family,
)
from lrsearch.range_test import fit_budget, range_test_workload
from lrsearch.schedules import OneCycle
from lrsearch.suggest import SuggestionSummary
from lrsearch.training import train
from lrsearch.workloads import get_workload

__all__ = ["GRID", "choose", "judge", "main", "measure_workload", "render_markdown"]

GRID: tuple[float, ...] = tuple(float(10.0**x) for x in np.arange(-5.0, 1.0 + 1e-9, 1.0 / 3.0))
EPOCHS = 8
TRIALS = 16
RANGE_TEST_SEEDS = 3
SWEEP_SEEDS = 2
GOOD_FRACTION = 0.02  # the good region: within 2% of the best value
TRAINS_FRACTION = 0.1  # training improves at all: a tenth of the sweep's range above its worst
ONE_CYCLE: dict[str, Any] = {
    **{name: SMITH_DEFAULTS[name] for name in ("div_factor", "cycle_frac", "annihilation")},
    "momentum": [SMITH_DEFAULTS["momentum_high"], SMITH_DEFAULTS["momentum_low"]],
}
Row = Mapping[str, Any]
Log = Callable[[str], None]


def _sweep_point(workload: Any, max_lr: float, log: Log) -> dict[str, Any]:
    steps = EPOCHS * workload.steps_per_epoch()
    metrics = []
    for seed in range(SWEEP_SEEDS):
        result = train(workload, OneCycle(max_lr, steps, **ONE_CYCLE), epochs=EPOCHS, seed=seed)
        ok = not result.diverged and math.isfinite(result.val_metric)
        metrics.append(float(result.val_metric) if ok else None)
    mean = None if None in metrics else float(np.mean([m for m in metrics if m is not None]))
    log(f"{workload.name}: max_lr={max_lr:.3g} -> {metrics}")
    return {"max_lr": max_lr, "metrics": metrics, "mean": mean}


def analyse_sweep(rows: Sequence[Row], direction: str) -> dict[str, Any]:
    """Best point, good region and where training improves at all, from a fixed-grid sweep.

    A point where a seed diverged scores as the worst value. ``trains_from`` is the lowest
    max_lr whose mean gains ``TRAINS_FRACTION`` of the sweep's range over its worst point.
    """
    sign = 1.0 if direction == "maximize" else -1.0
    finite = [sign * r["mean"] for r in rows if r["mean"] is not None]
    if not finite:
        raise ValueError("every max_lr of the sweep diverged; nothing to judge against")
    worst, top = min(finite), max(finite)
    scores = [worst if r["mean"] is None else sign * r["mean"] for r in rows]
    best = lo = hi = int(np.argmax(scores))
    margin = GOOD_FRACTION * max(abs(top), 1e-12)
    while lo > 0 and scores[lo - 1] >= top - margin:
        lo -= 1
    while hi < len(rows) - 1 and scores[hi + 1] >= top - margin:
        hi += 1
    trains = next(i for i, v in enumerate(scores) if v >= worst + TRAINS_FRACTION * (top - worst))
    return {
        "best_max_lr": rows[best]["max_lr"],
        "best_metric": rows[best]["mean"],
        "good_low": rows[lo]["max_lr"],
        "good_high": rows[hi]["max_lr"],
        "trains_from": rows[trains]["max_lr"],
        "diverged_from": next((r["max_lr"] for r in rows if None in r["metrics"]), None),
    }


def _range_tests(workload: Any, budget: int, log: Log) -> list[dict[str, Any]]:
    """The workload's range test under each seed, sized for a study of ``budget`` steps."""
    repeats, num_iter = fit_budget(budget, per_epoch=workload.steps_per_epoch())
    tests = []
    for seed in range(RANGE_TEST_SEEDS):
        result = range_test_workload(workload, seed=seed, repeats=repeats, num_iter=num_iter)
        tests.append(
            {
                "seed": seed,
                "suggestions": {k: v.to_dict() for k, v in result.summary.items()},
                "steps": int(result.settings["steps"]),
                "seconds": result.seconds,
            }
        )
        log(f"{workload.name}: range test seed {seed} done")
    return tests


def measure_workload(spec: str, log: Log = lambda _: None) -> dict[str, Any]:
    """Range tests (three seeds, study-sized) and the fixed-grid sweep of one workload."""
    workload = get_workload(spec, epochs=EPOCHS)
    budget = TRIALS * EPOCHS * workload.steps_per_epoch()
    repeats, num_iter = fit_budget(budget, per_epoch=workload.steps_per_epoch())
    tests = _range_tests(workload, budget, log)
    rows = [_sweep_point(workload, lr, log) for lr in GRID]
    return {
        "workload": spec,
        "family": optimizer_family(workload.optimizer_name),
        "optimizer": workload.optimizer_name,
        "metric": workload.metric.name,
        "direction": workload.metric.direction,
        "budget_steps": budget,
        "range_test_size": [repeats, num_iter],
        "range_tests": tests,
        "sweep": rows,
        **analyse_sweep(rows, workload.metric.direction),
    }


def _summary(test: Row) -> dict[str, SuggestionSummary]:
    return {k: SuggestionSummary.from_dict(v) for k, v in test["suggestions"].items()}


def _signal(test: Row) -> bool:
    return has_signal(_summary(test)[DEFAULT_ANCHOR])


def _log_ratio(a: float, b: float) -> float:
    return math.log10(a / b)


def _round_up(x: float, step: float = 0.05) -> float:
    return round(math.ceil(round(x / step, 6)) * step, 2)


def _round(x: float, step: float = 0.05) -> float:
    return round(round(x / step) * step, 2) + 0.0


def _rms(values: Sequence[float]) -> float:
    return math.sqrt(sum(v * v for v in values) / len(values)) if values else 0.0


def choose(calibration: Sequence[Row]) -> dict[str, Any]:
    """The prior's rules from the calibration half only.

    - offset: the mean over workloads of ``log10(best / valley)`` (tests with a signal);
    - sigma floor: the RMS leave-one-workload-out error of that offset, rounded up;
    - cut: the smallest ``log10(upper cut / rise)`` (0.05 steps) that keeps every calibration
      workload's good region inside, over every test;
    - no-signal offset: the median ``log10(best / rise)``; its width the RMS spread around it.
    """
    per_workload = {
        r["workload"]: [
            _log_ratio(r["best_max_lr"], _summary(t)[DEFAULT_ANCHOR].median)
            for t in r["range_tests"]
            if _signal(t)
        ]
        for r in calibration
    }
    means = {w: float(np.mean(v)) for w, v in per_workload.items() if v}
    offset = float(np.mean(list(means.values())))
    errors = []
    for w, values in per_workload.items():
        others = [m for o, m in means.items() if o != w]
        errors += [v - float(np.mean(others)) for v in values] if others else []
    rises = [(r, _summary(t)["rise"].median) for r in calibration for t in r["range_tests"]]
    cut = max(_log_ratio(r["good_high"], rise) for r, rise in rises)
    from_rise = [_log_ratio(r["best_max_lr"], rise) for r, rise in rises]
    centre = statistics.median(from_rise)
    return {
        "anchor": DEFAULT_ANCHOR,
        "offset_decades": _round(offset),
        "sigma_floor": max(_round_up(_rms(errors)), 0.25),
        "cut_decades": _round_up(cut),
        "no_signal_offset_decades": _round(centre),
        "no_signal_sigma": max(_round_up(_rms([x - centre for x in from_rise])), 0.5),
        "loo_rms_error_decades": _rms(errors),
        "offset_by_workload": means,
        "n_tests": len(rises),
        "n_signal_free": sum(not _signal(t) for r in calibration for t in r["range_tests"]),
    }


def prior_for(test: Row, rule: Row) -> LRPrior:
    """The prior a study builds from this range test under ``rule``."""
    from lrsearch import prior as prior_module

    saved = (prior_module.NO_SIGNAL_OFFSET_DECADES, prior_module.NO_SIGNAL_SIGMA)
    prior_module.NO_SIGNAL_OFFSET_DECADES = rule["no_signal_offset_decades"]
    prior_module.NO_SIGNAL_SIGMA = rule["no_signal_sigma"]
    try:
        return LRPrior.from_suggestions(
            _summary(test),
            anchor=rule["anchor"],
            offset_decades=rule["offset_decades"],
            sigma_floor_decades=rule["sigma_floor"],
            cut_decades=rule["cut_decades"],
        )
    finally:
        prior_module.NO_SIGNAL_OFFSET_DECADES, prior_module.NO_SIGNAL_SIGMA = saved


def _diverged_inside(r: Row, prior: LRPrior) -> tuple[int, int]:
    inside = [p for p in r["sweep"] if prior.low <= p["max_lr"] <= prior.high]
    return sum(None in p["metrics"] for p in inside), len(inside)


def judge(held_out: Sequence[Row], rule: Row) -> dict[str, Any]:
    """Each held-out (workload, range-test seed) against the sweep, under ``rule``."""
    rows = []
    half_step = 1.0 / 6.0
    for r in held_out:
        for t in r["range_tests"]:
            prior = prior_for(t, rule)
            summary = _summary(t)
            signal = _signal(t)
            used = summary[rule["anchor"]].median if signal else summary["rise"].median
            error = _log_ratio(r["best_max_lr"], prior.center)
            to_region = max(
                _log_ratio(r["good_low"], prior.center),
                _log_ratio(prior.center, r["good_high"]),
                0.0,
            )
            diverged, inside = _diverged_inside(r, prior)
            rows.append(
                {
                    "workload": r["workload"],
                    "seed": t["seed"],
                    "signal": signal,
                    "centre": prior.center,
                    "sigma_decades": prior.sigma_decades,
                    "high": prior.high,
                    "error_decades": error,
                    "z": error / prior.sigma_decades,
                    "decades_to_good_region": to_region,
                    "spurious": used < r["trains_from"] * 10**-half_step,
                    "reading_used": used,
                    "diverged_inside": diverged,
                    "grid_inside": inside,
                    "cost_share": t["steps"] / r["budget_steps"],
                }
            )
    n = len(rows)
    return {
        "rows": rows,
        "within_half_decade": sum(x["decades_to_good_region"] <= 0.5 for x in rows) / n,
        "max_decades_to_good_region": max(x["decades_to_good_region"] for x in rows),
        "rms_error_decades": _rms([x["error_decades"] for x in rows]),
        "spurious": sum(x["spurious"] for x in rows),
        "signal_free": sum(not x["signal"] for x in rows),
        "diverged_inside": sum(x["diverged_inside"] for x in rows),
        "grid_inside": sum(x["grid_inside"] for x in rows),
        "max_cost_share": max(x["cost_share"] for x in rows),
        "n": n,
    }


def current_rule() -> dict[str, Any]:
    """The defaults lrsearch ships (lrsearch.prior), as a rule :func:`judge` takes."""
    return {
        "anchor": DEFAULT_ANCHOR,
        "offset_decades": DEFAULT_OFFSET_DECADES,
        "sigma_floor": DEFAULT_SIGMA_FLOOR,
        "cut_decades": DEFAULT_CUT_DECADES,
        "no_signal_offset_decades": NO_SIGNAL_OFFSET_DECADES,
        "no_signal_sigma": NO_SIGNAL_SIGMA,
    }


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def render_markdown(result: Row) -> str:
    """The report: the rule chosen on the calibration half, the held-out table and targets."""
    rule, held = result["rule"], result["held_out"]
    lines = [
        "| held-out workload | seed | signal | centre | best (good region) | error (dec) | z "
        "| dec. to region | spurious | diverged inside | cost |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    sweeps = {r["workload"]: r for r in result["measured"]["held_out"]}
    for x in held["rows"]:
        r = sweeps[x["workload"]]
        lines.append(
            f"| {x['workload'].rpartition(':')[2]} | {x['seed']} | {'yes' if x['signal'] else 'no'} "
            f"| {x['centre']:.3g} | {r['best_max_lr']:.3g} ({r['good_low']:.2g}-{r['good_high']:.2g}) "
            f"| {x['error_decades']:+.2f} | {x['z']:+.1f} | {x['decades_to_good_region']:.2f} "
            f"| {'yes' if x['spurious'] else 'no'} | {x['diverged_inside']}/{x['grid_inside']} "
            f"| {x['cost_share']:.1%} |"
        )
    within, worst = held["within_half_decade"], held["max_decades_to_good_region"]
    targets = [
        f"- Centre within 0.5 decades of the good region for >= 90% of pairs: {within:.0%} "
        f"({_verdict(within >= 0.9)}); none more than 1 decade off: worst {worst:.2f} "
        f"({_verdict(worst <= 1.0)}).",
        f"- No spurious reading used by the prior: {held['spurious']} of {held['n']} "
        f"({_verdict(held['spurious'] == 0)}); signal-free curves: {held['signal_free']}.",
        f"- Range test at most 5% of the budget: largest {held['max_cost_share']:.1%} "
        f"({_verdict(held['max_cost_share'] <= 0.05 + 1e-9)}).",
        f"- Swept points inside the prior's bounds that diverged: {held['diverged_inside']} of "
        f"{held['grid_inside']}.",
    ]
    head = (
        f"Rule chosen on the calibration half ({', '.join(r.rpartition(':')[2] for r in result['calibration'])}): "
        f"valley x 10^{rule['offset_decades']:+.2f}, sigma floor {rule['sigma_floor']:.2f} "
        f"(leave-one-out RMS {rule['loo_rms_error_decades']:.2f}), cut rise x 10^{rule['cut_decades']:.2f}, "
        f"no signal: rise x 10^{rule['no_signal_offset_decades']:+.2f}, sigma {rule['no_signal_sigma']:.2f}."
    )
    sizes = result.get("sizes")
    if sizes:
        rms = sizes["rms_error_decades"]
        targets.append(
            f"- The budget-sized range test against 3 x max(100, an epoch) on the calibration "
            f"half: RMS centre error {rms['budget']:.2f} vs {rms['full']:.2f} decades."
        )
    return "\n".join([head, "", *lines, "", *targets]) + "\n"


def compare_sizes(measured: Sequence[Row], rule: Row, log: Log = print) -> dict[str, Any]:
    """What the budget-sized range test loses against the full one (3 x max(100, an epoch)).

    Per workload and range-test seed, the prior's centre under ``rule`` from each size, and
    its distance in decades from the sweep's best; the full tests are run here.
    """
    rows = []
    for r in measured:
        workload = get_workload(r["workload"], epochs=EPOCHS)
        for t in r["range_tests"]:
            full = range_test_workload(workload, seed=t["seed"], repeats=3)
            full_test = {
                "suggestions": {k: v.to_dict() for k, v in full.summary.items()},
                "steps": int(full.settings["steps"]),
            }
            small, big = prior_for(t, rule), prior_for(full_test, rule)
            rows.append(
                {
                    "workload": r["workload"],
                    "seed": t["seed"],
                    "steps": [t["steps"], full_test["steps"]],
                    "error_decades": [
                        _log_ratio(r["best_max_lr"], small.center),
                        _log_ratio(r["best_max_lr"], big.center),
                    ],
                    "signal": [_signal(t), _signal(full_test)],
                }
            )
            log(f"{r['workload']} seed {t['seed']}: {rows[-1]}")
    small_rms = _rms([x["error_decades"][0] for x in rows])
    full_rms = _rms([x["error_decades"][1] for x in rows])
    return {"rows": rows, "rms_error_decades": {"budget": small_rms, "full": full_rms}}


def from_calibration(old: Row, log: Log = lambda _: None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A workload of an earlier ``lrsearch calibrate-prior`` run (its sweep kept: it does not
    depend on the readings) with its range tests run again by this version, study-sized:
    ``(the new part, the kept part)``."""
    workload = get_workload(old["workload"])
    budget = TRIALS * int(old["epochs"]) * workload.steps_per_epoch()
    tests = _range_tests(workload, budget, log)
    keys = ("best_max_lr", "best_metric", "good_low", "good_high", "sweep")
    return {"workload": old["workload"], "budget_steps": budget, "range_tests": tests}, {
        k: old[k] for k in keys
    }


def _measure_in_child(spec: str) -> dict[str, Any]:
    import sys

    import torch

    torch.set_num_threads(1)
    return measure_workload(spec, lambda line: print(line, file=sys.stderr, flush=True))


def measure_all(
    specs: Sequence[str], jobs: int, done: dict[str, Any], save: Callable[[], None]
) -> None:
    """Measure every workload not yet in ``done`` (``jobs`` processes), saving after each."""
    todo = [s for s in specs if s not in done]
    if jobs <= 1:
        for spec in todo:
            done[spec] = _measure_in_child(spec)
            save()
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=context) as pool:
        futures = {pool.submit(_measure_in_child, s): s for s in todo}
        for future in as_completed(futures):
            done[futures[future]] = future.result()
            save()


def main(argv: list[str] | None = None) -> None:
    from lrsearch.harness.suite import CALIBRATION, HELD_OUT

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("docs/bench/prior-check.json"))
    parser.add_argument(
        "--sizes", action="store_true", help="also compare the budget-sized range test to 3x100"
    )
    parser.add_argument(
        "--earlier",
        type=Path,
        default=None,
        help="an earlier calibrate-prior JSON whose workloads join the calibration half "
        "(their sweeps kept, their range tests run again)",
    )
    args = parser.parse_args(argv)
    calibration = [f"lrsearch.harness.suite:{n}" for n in CALIBRATION]
    held = [f"lrsearch.harness.suite:{n}" for n in HELD_OUT]
    done: dict[str, Any] = {}
    if args.out.exists():  # measurements kept: a crash or a new rule loses nothing
        done = json.loads(args.out.read_text()).get("measurements", {})
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        args.out.write_text(json.dumps({"measurements": done}, indent=1) + "\n")

    measure_all([*calibration, *held], args.jobs, done, save)
    suite_calibration = list(calibration)
    if args.earlier is not None:
        for old in json.loads(args.earlier.read_text())["workloads"]:
            if old["workload"] not in done:
                head, kept = from_calibration(old, print)
                done[old["workload"]] = {**head, **kept}
                save()
            calibration.append(old["workload"])
    rule = choose([done[s] for s in calibration])
    result = {
        "measurements": done,
        "calibration": calibration,
        "held_out_names": held,
        "rule": rule,
        "held_out": judge([done[s] for s in held], rule),
        "held_out_current_defaults": judge([done[s] for s in held], current_rule()),
        "measured": {"held_out": [done[s] for s in held]},
    }
    if args.sizes:
        result["sizes"] = compare_sizes([done[s] for s in suite_calibration], rule)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    markdown = render_markdown(result)
    args.out.with_suffix(".md").write_text(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
