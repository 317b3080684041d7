"""Drive a torch optimizer's learning rate and momentum from a pure schedule."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lrsearch.schedules import Schedule

__all__ = ["ScheduleDriver", "momentum_key"]

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


def momentum_key(optimizer: torch.optim.Optimizer) -> str | None:
    """The param-group key that holds the optimizer's momentum, or None where it has none.

    ``"momentum"`` for SGD (and RMSprop), ``"betas"`` for the Adam family (its beta1);
    Adagrad, Adadelta and the like have none.
    """
    group = optimizer.param_groups[0]
    return "betas" if "betas" in group else "momentum" if "momentum" in group else None


def _lr_ratios(optimizer: torch.optim.Optimizer, base_lr: float | None) -> list[float]:
    """Each group's LR over ``base_lr`` (the first group's LR where not given)."""
    lrs = [float(group["lr"]) for group in optimizer.param_groups]
    base = lrs[0] if base_lr is None else base_lr
    if not base > 0:  # nothing to scale from: every group runs at the schedule's LR
        return [1.0] * len(lrs)
    return [lr / base for lr in lrs]


class ScheduleDriver:
    """Sets an optimizer's LR (and momentum) from a schedule, one call per optimizer step.

    Parameter groups keep their proportions: a group built at 0.1x the base LR runs at
    0.1x the schedule's LR throughout. The base is ``base_lr`` (the LR the optimizer was
    built with) or, where not given, the first group's LR when the driver attaches; groups
    added later run at the schedule's LR.

    Momentum means SGD's ``momentum`` or the Adam family's ``betas[0]``, set on every group;
    optimizers with neither (Adagrad, say) get the LR only, and ``drives_momentum`` is then
    False, so a search can leave its momentum parameters out.

    Example:
        >>> from lrsearch.schedules import OneCycle
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> schedule = OneCycle(0.1, total_steps=100)
        >>> driver = ScheduleDriver(optimizer, schedule)
        >>> for step in range(100):
        ...     lr, momentum = driver.apply(step)  # before forward/backward/step
        >>> optimizer.param_groups[0]["lr"] == schedule.lr_at(99)
        True

    Raises:
        ValueError: if a torch LR scheduler or another driver already drives the optimizer.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: Schedule,
        *,
        base_lr: float | None = None,
    ) -> None:
        other = _driven_elsewhere(optimizer)
        if other is not None:
            raise ValueError(
                f"optimizer is already driven by {other}; give ScheduleDriver an optimizer "
                "without a scheduler (or call .detach() on the old driver)"
            )
        self.optimizer = optimizer
        self.schedule = schedule
        self.lr_ratios = _lr_ratios(optimizer, base_lr)
        self._momentum_key = momentum_key(optimizer)
        # settings the schedule fixes for the run (Prodigy's d_coef): once, on every group
        for group in optimizer.param_groups:
            group.update(getattr(schedule, "group_settings", {}))
        setattr(optimizer, _MARK, self)

    @property
    def drives_momentum(self) -> bool:
        """Whether :meth:`apply` sets momentum: the optimizer has one and the schedule too."""
        return self._momentum_key is not None and self.schedule.momentum_at(0) is not None

    def detach(self) -> None:
        """Release the optimizer so another driver may take it."""
        if getattr(self.optimizer, _MARK, None) is self:
            delattr(self.optimizer, _MARK)

    def apply(self, step: int) -> tuple[float, float | None]:
        """Set LR and momentum for ``step`` on every param group; returns them.

        The LR returned is the schedule's; each group gets it times its own ratio.
        """
        lr = self.schedule.lr_at(step)
        momentum = self.schedule.momentum_at(step) if self._momentum_key else None
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = (self.lr_ratios[i] if i < len(self.lr_ratios) else 1.0) * lr
            if momentum is None:
                continue
            if self._momentum_key == "betas":
                group["betas"] = (momentum, group["betas"][1])
            else:
                group["momentum"] = momentum
        return lr, momentum
