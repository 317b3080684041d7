"""Does a variant of lrsearch's search pay? The same search with one setting changed.

    python -m lrsearch.harness.variants_check --workloads digits-mlp,mnist1d-cnn \\
        --seeds 5 --trials 20 --epochs 10 --out docs/bench/branching.json
    python -m lrsearch.harness.variants_check --variants pibo_beta=0,pibo_beta=10 ...

For each workload and seed, the ``lrsearch`` arm of ``lrsearch bench`` (range-test prior,
its sampler and pruner, range test paid) runs once per variant at the same budget of
trial-epochs. Variants: ``tails=N`` (``[branching] tails``: each trial among the best 3 gets N
more annihilation tails, trained from its cycle's end; a tail counts only the epochs it
trained), ``pibo_beta=B`` (``[prior] pibo_beta``), ``startup=prior|bracket`` (``[prior] startup``)
and ``shift=D`` (the prior's centre moved D
decades: a misplaced prior, ``lrsearch.harness.bench._search.misplaced``), or several joined
by ``+`` (``shift=1+pibo_beta=1``). Reported per workload: the median (over
seeds) test metric of the validation-chosen trial at 1/8, 1/4, 1/2 and the whole budget, how
many trials each variant fitted into the budget, and the trial-epochs spent (range test
included) when the first trial within 2% of the best validation value of any variant finished.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

__all__ = ["compare", "main"]


def _variant(spec: str) -> dict[str, Any]:
    """The ``_lrsearch_arm`` options of one variant; ``+`` joins settings (``shift=1+pibo_beta=1``)."""
    options: dict[str, Any] = {}
    for part in spec.split("+"):
        key, _, value = part.partition("=")
        if key == "tails":
            options["tails"] = int(value)
        elif key in ("pibo_beta", "pibo_fade"):
            options.setdefault("prior", {})[key] = float(value)
        elif key == "startup":
            options.setdefault("prior", {})[key] = value
        elif key == "shift":
            options["shift_decades"] = float(value)
        else:
            raise SystemExit(
                f"unknown variant {part!r}: use tails=N, pibo_beta=B, pibo_fade=F or shift=DECADES, "
                "joined by '+'"
            )
    return options


def compare(
    workloads: list[str],
    seeds: int,
    trials: int,
    epochs: int,
    variants: tuple[str, ...] = ("tails=0", "tails=2"),
) -> dict[str, Any]:
    import optuna
    import torch

    from lrsearch.harness.bench._search import RangeTests, Task, _lrsearch_arm
    from lrsearch.harness.bench._stats import TEST, VAL, best_at

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    ranges = RangeTests({"repeats": 3})
    out: dict[str, Any] = {}
    for name in workloads:
        task = Task.load(name, epochs)
        budget = float(trials * epochs)
        score = TEST if task.has_test else VAL
        rows: dict[str, dict[str, Any]] = {}
        every = {
            spec: [
                _lrsearch_arm(task, seed, ranges, budget, trials * 3, **_variant(spec))
                for seed in range(seeds)
            ]
            for spec in variants
        }
        good = _good_value(every, task.maximize)
        for spec, runs in every.items():
            rows[spec] = {
                f"best_at_{label}": _median(
                    [best_at(r["curve"], budget * frac, value=score) for r in runs]
                )
                for label, frac in (
                    ("eighth", 0.125),
                    ("quarter", 0.25),
                    ("half", 0.5),
                    ("budget", 1.0),
                )
            } | {
                "median_trials": statistics.median(r["trials"] for r in runs),
                "median_epochs_to_good": statistics.median(
                    _epochs_to(r["curve"], good, task.maximize) for r in runs
                ),
            }
        out[name] = {
            "direction": task.workload.metric.direction,
            "budget": budget,
            "good_value": good,
            "arms": rows,
        }
    return out


def _good_value(every: dict[str, list[dict[str, Any]]], maximize: bool) -> float:
    """Within 2% of the best validation value any variant's trial reached: a trial in the
    good region."""
    values = [p[2] for runs in every.values() for r in runs for p in r["curve"] if p[2] is not None]
    best = max(values) if maximize else min(values)
    return best - 0.02 * abs(best) if maximize else best + 0.02 * abs(best)


def _epochs_to(curve: list[list[Any]], good: float, maximize: bool) -> float:
    """Trial-epochs spent (range test included) when the first good trial finished; the
    whole spend plus one if none did."""
    for spent, _wall, val, _test in curve:
        if val is not None and (val >= good if maximize else val <= good):
            return float(spent)
    return float(curve[-1][0]) + 1.0 if curve else math.inf


def _median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", default="digits-mlp,mnist1d-cnn")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--variants", default="tails=0,tails=2")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    variants = tuple(args.variants.split(","))
    result = compare(args.workloads.split(","), args.seeds, args.trials, args.epochs, variants)
    for name, section in result.items():
        for arm, row in section["arms"].items():
            cells = "  ".join(
                f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()
            )
            print(f"{name:18s} {arm:14s} {cells}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
