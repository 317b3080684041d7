"""How strongly, and for how long, should the prior weight TPE's acquisition? (piBO settings)

    python -m lrsearch.harness.pibo_check --out docs/bench/pibo-synthetic.json

A synthetic study, so that every (``pibo_beta``, ``pibo_fade``) pair can be tried on many seeds
in a minute: the objective is the distance, in decades, of ``max_lr`` from an optimum placed
``shift`` decades from the prior's centre (prior width 0.25 decades, lrsearch's default), plus
a second parameter's own distance term, so that TPE has two things to learn. Each study runs
lrsearch's sampler (5 prior-drawn startup trials, then TPE, weighted by the prior) for 20
trials; reported is the median over seeds of the best value (0 is the optimum). A good setting
is small where the prior is right (shift 0) and no worse than TPE alone (beta 0) where it is
wrong. Training runs measure the chosen setting: ``lrsearch bench`` (arm lrsearch-pibo) and
``python -m lrsearch.harness.variants_check`` (a misplaced prior with and without it).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]

SHIFTS = (-2.5, -1.5, 0.0, 1.0)
SETTINGS = (
    (0.0, 1.0),  # TPE alone
    *((beta, fade) for beta in (0.5, 1.0, 2.0, 5.0) for fade in (0.5, 1.0, 2.0)),
)


def _best(beta: float, fade: float, shift: float, seed: int, trials: int) -> float:
    import optuna

    from lrsearch.prior import LRPrior
    from lrsearch.sampler import PriorGuidedSampler

    prior = LRPrior(center=0.1, sigma_decades=0.25, low=1e-5, high=10.0)
    optimum = math.log10(prior.center) + shift
    sampler = PriorGuidedSampler(
        prior, n_startup_trials=5, pibo_beta=beta, pibo_fade=fade, seed=seed
    )
    study = optuna.create_study(sampler=sampler)

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("max_lr", prior.low, prior.high, log=True)
        other = trial.suggest_float("weight_decay", 0.0, 1.0)
        return abs(math.log10(lr) - optimum) + 0.5 * abs(other - 0.3)

    study.optimize(objective, n_trials=trials)
    return float(study.best_value)


def measure(seeds: int = 8, trials: int = 20) -> dict[str, Any]:
    """Median best value per (beta, fade) and shift: ``{"beta=B fade=F": {shift: value}}``."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {}
    for beta, fade in SETTINGS:
        key = f"beta={beta:g} fade={fade:g}"
        out[key] = {
            f"{shift:+g}": statistics.median(
                _best(beta, fade, shift, seed, trials) for seed in range(seeds)
            )
            for shift in SHIFTS
        }
    return {"seeds": seeds, "trials": trials, "median_best": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = measure(args.seeds, args.trials)
    print("setting            " + "  ".join(f"shift {s:+g}" for s in SHIFTS))
    for key, row in result["median_best"].items():
        print(f"{key:18s} " + "  ".join(f"{v:8.3f}" for v in row.values()), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
