"""Optimizers: a workload's optimizer setting (a name, a class or a factory) resolved to one.

A factory must build its parameter groups at ``lr`` (or multiples of it): the schedule
drives every group, keeping their ratios; :func:`from_factory` checks it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lrsearch.errors import WorkloadError

__all__ = [
    "OPTIMIZERS",
    "OptimizerFactory",
    "builtin_optimizer",
    "check_optimizer",
    "from_factory",
    "optimizer_class",
    "takes_lr",
]

OPTIMIZERS = ("sgd", "adam", "adamw")
OptimizerFactory = Callable[..., torch.optim.Optimizer]


def check_optimizer(optimizer: Any) -> None:
    if isinstance(optimizer, str):
        optimizer_class(optimizer)
    elif not callable(optimizer):
        raise ValueError(
            "optimizer must be a name, a torch.optim optimizer class or a factory "
            f"factory(model, lr) -> Optimizer, got {type(optimizer).__name__}"
        )


def optimizer_class(name: str) -> Callable[..., torch.optim.Optimizer]:
    """A ``torch.optim`` optimizer class by name, case-insensitive (``"adagrad"``), or an
    LR-free optimizer's factory (``"schedulefree_adamw"``, ``"prodigy"``: lrsearch.lrfree)."""
    from lrsearch.lrfree import LRFREE_OPTIMIZERS, lrfree_factory

    if name.lower() in LRFREE_OPTIMIZERS:
        return lrfree_factory(name.lower())
    classes = {
        n.lower(): cls
        for n, cls in vars(torch.optim).items()
        if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer) and n != "Optimizer"
    }
    if name.lower() not in classes:
        raise ValueError(
            f"optimizer must be one of {', '.join(OPTIMIZERS)}, an LR-free one "
            f"({', '.join(LRFREE_OPTIMIZERS)}) or a torch.optim optimizer "
            f"({', '.join(sorted(classes))}), got {name!r}"
        )
    return classes[name.lower()]


def _accepted(fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """The ``options`` that ``fn`` names as parameters (None values left out)."""
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return {}
    return {k: v for k, v in options.items() if k in names and v is not None}


def takes_lr(factory: Callable[..., Any]) -> bool:
    try:
        inspect.signature(factory).bind(None, 1.0)
    except TypeError:
        return False
    except ValueError:
        return True  # no signature to read: assume the documented factory(model, lr)
    return True


def builtin_optimizer(
    name: str, model: nn.Module, lr: float, momentum: float | None, weight_decay: float
) -> torch.optim.Optimizer:
    params = model.parameters()
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum or 0.0, weight_decay=weight_decay)
    betas = (momentum if momentum is not None else 0.9, 0.999)
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, betas=betas, weight_decay=weight_decay)


def _first_arg(factory: Callable[..., Any], model: nn.Module) -> Any:
    """What a factory gets first: ``model.parameters()`` if it names it ``params``, else the model."""
    try:
        first = next(iter(inspect.signature(factory).parameters), "")
    except (TypeError, ValueError):
        first = ""
    return model.parameters() if first == "params" else model


def from_factory(
    factory: Callable[..., Any], model: nn.Module, lr: float, extra: dict[str, Any]
) -> torch.optim.Optimizer:
    """Call an optimizer class or a user's factory; check that its param groups follow ``lr``."""
    kwargs = _accepted(factory, extra)
    if not takes_lr(factory):
        return _optimizer_or_fail(factory(_first_arg(factory, model), **kwargs))
    optimizer = _optimizer_or_fail(factory(_first_arg(factory, model), lr, **kwargs))
    if isinstance(factory, type):
        return optimizer
    # Build once more at twice the LR: every group must follow, or the schedule cannot
    # drive it (a factory that hard-codes lr=1e-3 would silently ignore the search).
    probe = _optimizer_or_fail(factory(_first_arg(factory, model), 2 * lr, **kwargs))
    built = [g["lr"] for g in optimizer.param_groups]
    doubled = [g["lr"] for g in probe.param_groups]
    follows = len(built) == len(doubled) and any(b > 0 for b in built)
    if not follows or not all(
        math.isclose(d, 2 * b, rel_tol=1e-9) for b, d in zip(built, doubled, strict=True)
    ):
        raise WorkloadError(
            f"the optimizer factory ignores lr: built with lr={lr:g} its param groups have "
            f"lr {built} — fix: build every group at lr or a multiple of it, e.g. "
            "torch.optim.SGD([{'params': a}, {'params': b, 'lr': lr * 0.1}], lr=lr)"
        )
    return optimizer


def _optimizer_or_fail(obj: Any) -> torch.optim.Optimizer:
    if not isinstance(obj, torch.optim.Optimizer):
        raise WorkloadError(
            f"the optimizer factory returned {type(obj).__name__}, expected a torch.optim.Optimizer"
        )
    return obj
