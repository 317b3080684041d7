"""LR policies by name: how a set of parameters becomes a schedule, and Smith's defaults.

One registry serves both ways a policy is trained: a study trial (``lrsearch.space`` samples
the parameters) and ``lrsearch train --schedule NAME`` (the CLI options are the parameters),
so the same name and parameters always give the same schedule. Parameters use the study's
names: ``max_lr``, ``div_factor``, ``cycle_frac``, ``annihilation``, ``momentum_high``,
``momentum_low``.

This module is stdlib only at import time (the config reads the names without numpy); the
factories import :mod:`lrsearch.schedules` when called. :data:`SMITH_DEFAULTS` lives in
:mod:`lrsearch.defaults`, which ``schedules`` reads too, so ``schedules`` never imports this
module (no import cycle).

Example:
    >>> s = build_schedule("one-cycle", {"max_lr": 0.1, **SMITH_DEFAULTS},
    ...                    total_steps=1000, steps_per_epoch=100)
    >>> s.kind, s.lower_lr, s.momentum
    ('one-cycle', 0.01, (0.95, 0.85))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from lrsearch.defaults import SMITH_DEFAULTS

if TYPE_CHECKING:
    from lrsearch.schedules import Schedule

__all__ = [
    "DEFAULT_POLICY",
    "LRFREE_DEFAULTS",
    "LRFREE_POLICY",
    "MOMENTUM_PARAMS",
    "POLICIES",
    "SMITH_DEFAULTS",
    "Policy",
    "build_schedule",
    "get_policy",
    "study_policies",
]

DEFAULT_POLICY = "one-cycle"
# Optional together: without both, a schedule leaves momentum alone (an optimizer with none).
MOMENTUM_PARAMS = ("momentum_high", "momentum_low")

Factory = Callable[..., "Schedule"]


@dataclass(frozen=True)
class Policy:
    """One LR policy: a factory, the parameters it reads and its fixed options.

    Attributes:
        name: The name studies and ``lrsearch train --schedule`` use.
        factory: ``factory(params, options, *, total_steps, steps_per_epoch) -> Schedule``.
        defaults: The parameters it reads besides ``max_lr``, each at Smith's default.
        options: Fixed settings of its schedule: neither sampled nor CLI options.
        searchable: Whether a study may search over it (``[space] policies``).
        required: The parameters it needs besides ``defaults`` (an LR-free optimizer's
            policy reads its own, not ``max_lr``).
    """

    name: str
    factory: Factory
    defaults: Mapping[str, float]
    options: Mapping[str, Any]
    searchable: bool
    required: tuple[str, ...] = ("max_lr",)

    def build(
        self, params: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
    ) -> Schedule:
        """The schedule ``params`` describe; keys the policy does not read are ignored.

        ``momentum_high`` and ``momentum_low`` may both be left out: the schedule then has
        no momentum (for an optimizer without one, Adagrad say).

        Raises:
            ValueError: if a parameter it reads is missing or out of range (the message
                names it).
        """
        needed = set(self.required) | set(self.defaults)
        if not any(name in params for name in MOMENTUM_PARAMS):
            needed -= set(MOMENTUM_PARAMS)
        missing = sorted(needed - set(params))
        if missing:
            raise ValueError(
                f"policy {self.name!r} needs parameters {missing}, got {sorted(params)}"
            )
        return self.factory(
            params, self.options, total_steps=total_steps, steps_per_epoch=steps_per_epoch
        )


def _momentum(params: Mapping[str, Any]) -> tuple[float, float] | None:
    if not any(name in params for name in MOMENTUM_PARAMS):
        return None
    return params["momentum_high"], params["momentum_low"]


def _one_cycle(
    params: Mapping[str, Any], options: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    from lrsearch.schedules import OneCycle

    return OneCycle(
        params["max_lr"],
        total_steps,
        div_factor=params["div_factor"],
        cycle_frac=params["cycle_frac"],
        annihilation=params["annihilation"],
        momentum=_momentum(params),
    )


def _cyclic(
    params: Mapping[str, Any], options: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    from lrsearch.schedules import Cyclic

    # Four half-cycles in the run, each an epoch or more (Smith suggests 2-10 epochs).
    step_size = max(steps_per_epoch, total_steps // 8)
    return Cyclic(
        params["max_lr"] / params["div_factor"],
        params["max_lr"],
        step_size,
        momentum=_momentum(params),
        **options,
    )


def _constant(
    params: Mapping[str, Any], options: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    from lrsearch.schedules import Constant

    return Constant(params["max_lr"], total_steps=total_steps)


def _plateau(
    params: Mapping[str, Any], options: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    from lrsearch.schedules import PlateauDecay

    return PlateauDecay(params["max_lr"], **options)


def _warmup_steps(params: Mapping[str, Any], total_steps: int) -> int:
    return min(round(params["warmup_frac"] * total_steps), total_steps - 1)


def _schedulefree(
    params: Mapping[str, Any], options: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    from lrsearch.schedules import Warmup

    # Schedule-Free needs no decay: constant after its warm-up (the package's own formula)
    warmup = _warmup_steps(params, total_steps)
    return Warmup(params["lr"], total_steps, warmup_steps=warmup, decay="constant")


def _prodigy(
    params: Mapping[str, Any], options: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    from lrsearch.schedules import Warmup

    # Prodigy's README: lr=1 (the multiplier of its own estimate), cosine annealing over the
    # run, d_coef to push its estimate up or down
    warmup = _warmup_steps(params, total_steps)
    return Warmup(
        1.0,
        total_steps,
        warmup_steps=warmup,
        decay="cos",
        group_settings={"d_coef": params["d_coef"]},
    )


def _smith(*names: str) -> Mapping[str, float]:
    return MappingProxyType({name: SMITH_DEFAULTS[name] for name in names})


_CYCLIC = _smith("div_factor", "momentum_high", "momentum_low")
_NONE = _smith()

POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        p.name: p
        for p in (
            Policy(
                "one-cycle",
                _one_cycle,
                _smith("div_factor", "cycle_frac", "annihilation", "momentum_high", "momentum_low"),
                {},
                searchable=True,
            ),
            # Studies are the product: the study's settings are the policy's.
            Policy("triangular2", _cyclic, _CYCLIC, {"mode": "triangular2"}, searchable=True),
            Policy("plateau", _plateau, _NONE, {"factor": 0.2, "patience": 2}, searchable=True),
            # lrsearch train only.
            Policy("cyclic", _cyclic, _CYCLIC, {"mode": "triangular"}, searchable=False),
            Policy(
                "exp-range",
                _cyclic,
                _CYCLIC,
                {"mode": "exp_range", "gamma": 0.99994},
                searchable=False,
            ),
            Policy("constant", _constant, _NONE, {}, searchable=False),
        )
    }
)
# LR-free optimizers' policies: only a study whose optimizer is one of them searches these
# (they need that optimizer), so ``lrsearch train --schedule`` does not offer them.
_LRFREE_POLICIES: Mapping[str, Policy] = MappingProxyType(
    {
        p.name: p
        for p in (
            Policy("schedulefree", _schedulefree, _NONE, {}, False, ("lr", "warmup_frac")),
            Policy("prodigy", _prodigy, _NONE, {}, False, ("d_coef", "warmup_frac")),
        )
    }
)


# An LR-free optimizer (``[study.training] optimizer``) -> the policy its study searches.
LRFREE_POLICY: Mapping[str, str] = MappingProxyType(
    {"schedulefree_adamw": "schedulefree", "prodigy": "prodigy"}
)
# Their published defaults: Schedule-Free AdamW's lr, Prodigy's d_coef, ~5% warm-up.
LRFREE_DEFAULTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "schedulefree": MappingProxyType({"lr": 0.0025, "warmup_frac": 0.05}),
        "prodigy": MappingProxyType({"d_coef": 1.0, "warmup_frac": 0.05}),
    }
)


def study_policies() -> tuple[str, ...]:
    """The names a study may search over, in registry order."""
    return tuple(name for name, p in POLICIES.items() if p.searchable)


def get_policy(name: str) -> Policy:
    """The policy called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the valid ones.
    """
    try:
        return POLICIES[name] if name in POLICIES else _LRFREE_POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown policy {name!r}; valid policies: {', '.join(POLICIES)}"
        ) from None


def build_schedule(
    policy: str, params: Mapping[str, Any], *, total_steps: int, steps_per_epoch: int
) -> Schedule:
    """The schedule policy ``policy`` builds from ``params`` for a run of ``total_steps``.

    Raises:
        ValueError: for an unknown policy (listing the valid ones), or a missing or
            out-of-range parameter (naming it).
    """
    return get_policy(policy).build(
        params, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )
