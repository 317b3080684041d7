"""Drive a torch optimizer's learning rate and momentum from a pure schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lrsearch.schedules import Schedule

__all__ = ["ScheduleDriver"]

_MARK = "_lrsearch_driver"


def _driven_elsewhere(optimizer: torch.optim.Optimizer) -> str | None:
    """Name what already drives this optimizer's LR, or None."""
    if getattr(optimizer, _MARK, None) is not None:
        return "another lrsearch ScheduleDriver"
    # torch's LRScheduler wraps optimizer.step and stamps 'initial_lr' into every group.
    if hasattr(optimizer.step, "_wrapped_by_lr_sched"):
        return "a torch.optim.lr_scheduler scheduler"
    if any("initial_lr" in group for group in optimizer.param_groups):
        return "a torch.optim.lr_scheduler scheduler ('initial_lr' is set)"
    return None


class ScheduleDriver:
    """Sets an optimizer's LR (and momentum) from a schedule, one call per optimizer step.

    Momentum means SGD's ``momentum`` or the Adam family's ``betas[0]``; optimizers with
    neither get the LR only (``drives_momentum`` is then False).

    Example:
        >>> driver = ScheduleDriver(optimizer, OneCycle(0.1, total_steps=1000))
        >>> for step in range(1000):
        ...     driver.apply(step)   # before forward/backward/step
        ...     ...

    Raises:
        ValueError: if a torch LR scheduler or another driver already drives the optimizer.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: Schedule) -> None:
        other = _driven_elsewhere(optimizer)
        if other is not None:
            raise ValueError(
                f"optimizer is already driven by {other}; give ScheduleDriver an optimizer "
                "without a scheduler (or call .detach() on the old driver)"
            )
        self.optimizer = optimizer
        self.schedule = schedule
        group = optimizer.param_groups[0]
        self._momentum_key = (
            "betas" if "betas" in group else "momentum" if "momentum" in group else None
        )
        setattr(optimizer, _MARK, self)

    @property
    def drives_momentum(self) -> bool:
        return self._momentum_key is not None and self.schedule.momentum_at(0) is not None

    def detach(self) -> None:
        """Release the optimizer so another driver may take it."""
        if getattr(self.optimizer, _MARK, None) is self:
            delattr(self.optimizer, _MARK)

    def apply(self, step: int) -> tuple[float, float | None]:
        """Set LR and momentum for ``step`` on every param group; returns them."""
        lr = self.schedule.lr_at(step)
        momentum = self.schedule.momentum_at(step) if self._momentum_key else None
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if momentum is None:
                continue
            if self._momentum_key == "betas":
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum
        return lr, momentum
