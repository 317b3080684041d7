"""Can a misplaced prior sink a study? The startup rules measured on a synthetic study.

    python -m lrsearch.harness.prior_robustness --seeds 32 --out docs/bench/prior-robustness.json

Each study runs lrsearch's sampler as ``lrsearch run`` does (the prior's centre enqueued as the
first trial, then ``n_startup_trials`` startup draws, then TPE) for 16 trials on a synthetic
landscape shaped like the max_lr sweeps of docs/prior-calibration.md: the validation accuracy is
a bell over log10(max_lr) (0.5 decades wide below the optimum, 0.35 above), at chance from
about 1.5 decades away, training diverges (chance) 0.8 decades above the optimum; a second
parameter adds a little, and each trial gets a little noise. The prior is 0.25 decades wide,
its centre ``shift`` decades from the optimum and its upper cut 0.6 decades above the
optimum (where the range test's rise puts it), as a study would build it.

Per rule (explore share, contradiction check) and shift: how many trials until the first one in
the good region (within 0.3 decades of the optimum), the share of seeds that found one within
1/8 and 1/4 of the budget, and the median best value at 1/8, 1/4, 1/2 and all of it.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

__all__ = ["RULES", "SHIFTS", "main", "measure"]

SHIFTS = (0.0, -1.0, -2.0, -3.0, 1.0, 2.0)
RULES = (
    *(("prior", share, check) for share in (0.0, 0.34, 0.5) for check in (False, True)),
    *(("bracket", share, False) for share in (0.0, 0.34)),
)
TRIALS = 16
GOOD_DECADES = 0.3
_CHANCE, _TOP = 10.0, 95.0


def accuracy(x: float, other: float, noise: float) -> float:
    """The synthetic validation accuracy at ``x`` decades from the optimum."""
    if x > 0.8:
        return _CHANCE  # diverged
    width = 0.5 if x < 0 else 0.35
    return (
        _CHANCE
        + (_TOP - _CHANCE) * math.exp(-0.5 * (x / width) ** 2)
        - 3.0 * abs(other - 0.3)
        + noise
    )


def _study(
    startup: str, share: float, check: bool, shift: float, seed: int
) -> list[tuple[float, float]]:
    """(decades from the optimum, value) of each trial, in order."""
    import numpy as np
    import optuna

    from lrsearch.prior import LRPrior
    from lrsearch.sampler import PriorGuidedSampler
    from lrsearch.trials import ORIGIN, PRIOR_CENTRE

    optimum = -2.0
    high = 10 ** (optimum + 0.6)
    center = min(10 ** (optimum + shift), high)
    prior = LRPrior(center=center, sigma_decades=0.25, low=center / 100, high=high)
    sampler = PriorGuidedSampler(
        prior,
        n_startup_trials=5,
        seed=seed,
        explore_share=share,
        contradiction=check,
        startup=startup,
    )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({"max_lr": prior.center}, user_attrs={ORIGIN: PRIOR_CENTRE})
    rng = np.random.default_rng(seed + 10_000)
    out: list[tuple[float, float]] = []

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("max_lr", prior.low, prior.high, log=True)
        other = trial.suggest_float("weight_decay", 0.0, 1.0)
        x = math.log10(lr) - optimum
        value = accuracy(x, other, float(rng.normal(0, 0.5)))
        out.append((x, value))
        return value

    study.optimize(objective, n_trials=TRIALS)
    return out


def _summary(runs: list[list[tuple[float, float]]]) -> dict[str, Any]:
    firsts = [
        next((i + 1 for i, (x, _) in enumerate(run) if abs(x) <= GOOD_DECADES), TRIALS + 1)
        for run in runs
    ]
    fractions = {"1/8": TRIALS // 8, "1/4": TRIALS // 4, "1/2": TRIALS // 2, "1": TRIALS}
    return {
        "median_trials_to_good": statistics.median(firsts),
        "found_by_1/8": sum(f <= TRIALS // 8 for f in firsts) / len(firsts),
        "found_by_1/4": sum(f <= TRIALS // 4 for f in firsts) / len(firsts),
        "median_best": {
            name: round(statistics.median(max(v for _, v in run[:n]) for run in runs), 2)
            for name, n in fractions.items()
        },
    }


def measure(seeds: int = 16) -> dict[str, Any]:
    """``{"share=S check=C": {shift: summary}}`` over ``seeds`` studies each."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict[str, Any] = {}
    for startup, share, check in RULES:
        key = f"{startup} share={share:g} check={'on' if check else 'off'}"
        out[key] = {
            f"{shift:+g}": _summary(
                [_study(startup, share, check, shift, seed) for seed in range(seeds)]
            )
            for shift in SHIFTS
        }
        print(
            key,
            {k: (v["median_trials_to_good"], v["median_best"]["1"]) for k, v in out[key].items()},
            flush=True,
        )
    return {"seeds": seeds, "trials": TRIALS, "good_decades": GOOD_DECADES, "rules": out}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = measure(args.seeds)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
