"""The search space: sample a schedule's parameters from a trial, then build the schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lrsearch import policies
from lrsearch.policies import (
    DEFAULT_POLICY,
    LRFREE_DEFAULTS,
    MOMENTUM_PARAMS,
    SMITH_DEFAULTS,
)

if TYPE_CHECKING:
    from optuna.trial import BaseTrial

    from lrsearch.config import Range, SpaceSection
    from lrsearch.prior import LRPrior
    from lrsearch.schedules import Schedule

__all__ = [
    "build_schedule",
    "default_params",
    "derived_params",
    "lrfree_policy",
    "suggest_params",
]


def lrfree_policy(space: SpaceSection) -> str | None:
    """The LR-free optimizer's policy this space searches (``schedulefree``, ``prodigy``), or
    None for a space over ``max_lr`` (the range test's prior places it)."""
    return space.policies[0] if space.policies[0] in LRFREE_DEFAULTS else None


def _suggest(trial: BaseTrial, name: str, r: Range) -> float:
    if r.low == r.high:
        return r.low
    return trial.suggest_float(name, r.low, r.high, log=r.log)


def suggest_params(
    trial: BaseTrial, space: SpaceSection, prior: LRPrior, *, momentum: bool = True
) -> dict[str, Any]:
    """Sample every parameter of a trial; ``max_lr`` spans the prior's bounds on a log scale.

    ``momentum=False`` (the study's optimizer has none: Adagrad, say; see
    :attr:`lrsearch.study.TrialPlan.drives_momentum`) leaves ``momentum_high`` and
    ``momentum_low`` out: they are not sampled, and the schedule leaves momentum alone.

    An LR-free optimizer's study (policy ``schedulefree`` or ``prodigy``) samples what its
    user would tune instead (:func:`_suggest_lrfree`); the prior is not used.
    """
    if lrfree_policy(space) is not None:
        return _suggest_lrfree(trial, space)
    params: dict[str, Any] = {
        "policy": trial.suggest_categorical("policy", space.policies)
        if len(space.policies) > 1
        else space.policies[0],
        "max_lr": trial.suggest_float("max_lr", prior.low, prior.high, log=True),
    }
    params["div_factor"] = _suggest(trial, "div_factor", space.div_factor)
    reads = policies.get_policy(params["policy"]).defaults
    for name in ("cycle_frac", "annihilation"):
        if name in reads:
            params[name] = _suggest(trial, name, getattr(space, name))
    if momentum:
        params["momentum_high"] = _suggest(trial, "momentum_high", space.momentum_high)
        params["momentum_low"] = min(
            _suggest(trial, "momentum_low", space.momentum_low), params["momentum_high"]
        )
    params["weight_decay"] = _suggest(trial, "weight_decay", space.weight_decay)
    return params


def _suggest_lrfree(trial: BaseTrial, space: SpaceSection) -> dict[str, Any]:
    """Schedule-Free: its ``lr`` and ``warmup_frac``; Prodigy: ``d_coef`` and
    ``warmup_frac``; both: ``weight_decay``. No ``max_lr``, no momentum (Schedule-Free's
    averaging needs its beta1 fixed)."""
    policy = space.policies[0]
    params: dict[str, Any] = {"policy": policy}
    for name in LRFREE_DEFAULTS[policy]:
        params[name] = _suggest(trial, name, getattr(space, name))
    params["weight_decay"] = _suggest(trial, "weight_decay", space.weight_decay)
    return params


def _clip(value: float, r: Range) -> float:
    return min(max(value, r.low), r.high)


def default_params(space: SpaceSection, prior: LRPrior, *, momentum: bool = True) -> dict[str, Any]:
    """The first trial: the prior's centre, Smith's defaults clipped into the space.

    ``momentum=False`` leaves the momentum parameters out, as :func:`suggest_params` does.
    An LR-free optimizer's first trial is its published defaults (clipped into the space).
    """
    policy = lrfree_policy(space)
    if policy is not None:
        first = {**LRFREE_DEFAULTS[policy], "weight_decay": SMITH_DEFAULTS["weight_decay"]}
        return {
            name: _clip(value, getattr(space, name))
            for name, value in first.items()
            if getattr(space, name).low != getattr(space, name).high
        }
    params: dict[str, Any] = {"max_lr": prior.center}
    if len(space.policies) > 1:
        params["policy"] = DEFAULT_POLICY if DEFAULT_POLICY in space.policies else space.policies[0]
    for name, value in SMITH_DEFAULTS.items():
        if not momentum and name in MOMENTUM_PARAMS:
            continue
        r = getattr(space, name)
        if r.low != r.high:
            params[name] = _clip(value, r)
    return params


def build_schedule(
    params: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    """The schedule a trial's parameters describe (``policy`` defaults to one-cycle)."""
    return policies.build_schedule(
        params.get("policy", DEFAULT_POLICY),
        params,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
    )


def derived_params(schedule: Schedule, total_steps: int) -> dict[str, Any]:
    """What a person wants to see besides the sampled values: lower/final LR, step counts."""
    out: dict[str, Any] = {"total_steps": total_steps}
    for attr in ("lower_lr", "final_lr", "cycle_steps"):
        value = getattr(schedule, attr, None)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            out[attr] = value
    return out
