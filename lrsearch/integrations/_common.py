"""What the Lightning and Hugging Face integrations share: per-step losses, checks."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import torch

from lrsearch.errors import WorkloadError

if TYPE_CHECKING:
    from lrsearch import TrialContext

__all__ = [
    "Driver",
    "StepLosses",
    "check_steps_per_epoch",
    "refuse_owned",
    "set_weight_decay",
]


class Driver(Protocol):
    """What ``ctx.attach`` returns: one ``step()`` before every optimizer step, counted."""

    steps: int

    def step(self) -> tuple[float, float | None]: ...


class StepLosses:
    """Per-step training losses, summed over each optimizer step's micro-batches.

    A trainer hands over each micro-batch's loss as a tensor (:meth:`add`, already divided by
    the gradient-accumulation steps, as both trainers do for backward) and closes the window
    at each optimizer step (:meth:`step_done`): the window's sum is that step's loss, logged
    as a tensor with ``ctx.log``, which reads the losses back in batches (one device sync per
    ``sync_every`` steps; every step in a range test, whose ramp stops on the loss it sees).
    """

    def __init__(self, ctx: TrialContext) -> None:
        self._ctx = ctx
        self._window: torch.Tensor | None = None

    def add(self, loss: Any) -> None:
        """One micro-batch's loss (a tensor, or a dict with ``"loss"``); others are skipped."""
        if isinstance(loss, Mapping):
            loss = loss.get("loss")
        if not isinstance(loss, torch.Tensor):
            return
        loss = loss.detach().float()
        self._window = loss if self._window is None else self._window + loss

    def step_done(self, step: int) -> None:
        """The optimizer took step ``step`` (0-based): its loss is the window's."""
        if self._window is not None:
            self._ctx.log(step, loss=self._window.reshape(()))
            self._window = None

    def flush(self) -> None:
        """Read the logged losses back now (one sync): a divergence is seen at once."""
        self._ctx.flush()


def check_steps_per_epoch(ctx: TrialContext, actual: int, where: str) -> None:
    """Refuse a trainer whose optimizer steps per epoch differ from the study file's.

    The schedule is laid over ``epochs * steps_per_epoch`` steps: another count would cut it
    short or never anneal it.
    """
    if actual != ctx.steps_per_epoch:
        raise WorkloadError(
            f"the trainer takes {actual} optimizer steps per epoch ({where}) but the study "
            f"file says steps_per_epoch = {ctx.steps_per_epoch}; set steps_per_epoch = {actual}"
        )


def refuse_owned(given: Iterable[str], owned: Mapping[str, str], what: str) -> None:
    """One line for the first option lrsearch sets itself (``owned``: name -> why)."""
    for name in given:
        if name in owned:
            raise WorkloadError(f"{what} {name!r} is set by lrsearch ({owned[name]}); leave it out")


def set_weight_decay(optimizer: torch.optim.Optimizer, weight_decay: float) -> None:
    """The sampled weight decay on every group that decays (> 0); groups at 0 stay at 0."""
    for group in optimizer.param_groups:
        if group.get("weight_decay", 0.0) > 0:
            group["weight_decay"] = weight_decay
