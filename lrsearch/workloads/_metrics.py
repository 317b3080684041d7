"""Validation metrics: what a study optimises, and in which direction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

__all__ = ["ACCURACY", "MEAN_LOSS", "MSE", "Direction", "Metric", "MetricFn", "accuracy", "mse"]

Direction = Literal["maximize", "minimize"]
MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Metric:
    """The validation metric a study optimises.

    Attributes:
        name: shown in tables and logged to MLflow (``val_<name>``); not ``"loss"``, which
            names the validation loss.
        direction: ``"maximize"`` or ``"minimize"``.
        fn: ``fn(outputs, targets)`` over a whole validation set, returning a scalar tensor;
            None: the metric is the validation loss itself (see :data:`MEAN_LOSS`).
    """

    name: str
    direction: Direction
    fn: MetricFn | None = None

    def __post_init__(self) -> None:
        if self.name == "loss":
            raise ValueError("metric name 'loss' is taken by the validation loss; use another")


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy in percent."""
    return (outputs.argmax(dim=1) == targets).float().mean() * 100.0


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    return nn.functional.mse_loss(outputs, targets)


ACCURACY = Metric("accuracy", "maximize", accuracy)
MSE = Metric("mse", "minimize", mse)
MEAN_LOSS = Metric("mean_loss", "minimize")  # the validation loss (a step_fn's mean)
