"""The search space: sample a schedule's parameters from a trial, then build the schedule."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

    from lrsearch.config import Range, SpaceSection
    from lrsearch.prior import LRPrior
    from lrsearch.schedules import Schedule

__all__ = ["build_schedule", "default_params", "derived_params", "suggest_params"]

# Smith's defaults, used for the first (prior-centre) trial where the space allows them.
SMITH_DEFAULTS = {
    "div_factor": 10.0,
    "cycle_frac": 0.9,
    "annihilation": 100.0,
    "momentum_high": 0.95,
    "momentum_low": 0.85,
    "weight_decay": 1e-4,
}


def _suggest(trial: optuna.Trial, name: str, r: Range) -> float:
    if r.low == r.high:
        return r.low
    return trial.suggest_float(name, r.low, r.high, log=r.log)


def suggest_params(trial: optuna.Trial, space: SpaceSection, prior: LRPrior) -> dict[str, Any]:
    """Sample every parameter of a trial; ``max_lr`` spans the prior's bounds on a log scale."""
    params: dict[str, Any] = {
        "policy": trial.suggest_categorical("policy", space.policies)
        if len(space.policies) > 1
        else space.policies[0],
        "max_lr": trial.suggest_float("max_lr", prior.low, prior.high, log=True),
    }
    params["div_factor"] = _suggest(trial, "div_factor", space.div_factor)
    if params["policy"] == "one-cycle":
        params["cycle_frac"] = _suggest(trial, "cycle_frac", space.cycle_frac)
        params["annihilation"] = _suggest(trial, "annihilation", space.annihilation)
    params["momentum_high"] = _suggest(trial, "momentum_high", space.momentum_high)
    params["momentum_low"] = min(
        _suggest(trial, "momentum_low", space.momentum_low), params["momentum_high"]
    )
    params["weight_decay"] = _suggest(trial, "weight_decay", space.weight_decay)
    return params


def _clip(value: float, r: Range) -> float:
    return min(max(value, r.low), r.high)


def default_params(space: SpaceSection, prior: LRPrior) -> dict[str, Any]:
    """The first trial: the prior's centre, Smith's defaults clipped into the space."""
    params: dict[str, Any] = {"max_lr": prior.center}
    if len(space.policies) > 1:
        params["policy"] = "one-cycle" if "one-cycle" in space.policies else space.policies[0]
    for name, value in SMITH_DEFAULTS.items():
        r = getattr(space, name)
        if r.low != r.high:
            params[name] = _clip(value, r)
    return params


def build_schedule(params: dict[str, Any], *, total_steps: int, steps_per_epoch: int) -> Schedule:
    """The schedule a trial's parameters describe."""
    from lrsearch.schedules import Cyclic, OneCycle, PlateauDecay

    policy = params.get("policy", "one-cycle")
    momentum = (params["momentum_high"], params["momentum_low"])
    if policy == "one-cycle":
        return OneCycle(
            params["max_lr"],
            total_steps,
            div_factor=params["div_factor"],
            cycle_frac=params["cycle_frac"],
            annihilation=params["annihilation"],
            momentum=momentum,
        )
    if policy == "triangular2":
        # Four half-cycles of one epoch's steps or more, as Smith suggests (2-10 epochs each).
        step_size = max(steps_per_epoch, total_steps // 8)
        return Cyclic(
            params["max_lr"] / params["div_factor"],
            params["max_lr"],
            step_size,
            mode="triangular2",
            momentum=momentum,
        )
    if policy == "plateau":
        return PlateauDecay(params["max_lr"], factor=0.2, patience=2)
    raise ValueError(f"unknown policy {policy!r}")


def derived_params(schedule: Schedule, total_steps: int) -> dict[str, Any]:
    """What a person wants to see besides the sampled values: lower/final LR, step counts."""
    out: dict[str, Any] = {"total_steps": total_steps}
    for attr in ("lower_lr", "final_lr", "cycle_steps"):
        value = getattr(schedule, attr, None)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[attr] = value
    return out
