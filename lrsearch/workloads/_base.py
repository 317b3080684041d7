"""The workload protocol: what a training task gives lrsearch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

Direction = Literal["maximize", "minimize"]
MetricFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

OPTIMIZERS = ("sgd", "adam", "adamw")


@dataclass(frozen=True)
class Metric:
    """The validation metric a study optimises.

    Attributes:
        name: shown in tables and logged to MLflow (``val_<name>``).
        direction: ``"maximize"`` or ``"minimize"``.
        fn: ``fn(outputs, targets)`` over a whole validation set, returning a scalar tensor.
    """

    name: str
    direction: Direction
    fn: MetricFn


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy in percent."""
    return (outputs.argmax(dim=1) == targets).float().mean() * 100.0


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error."""
    return nn.functional.mse_loss(outputs, targets)


ACCURACY = Metric("accuracy", "maximize", accuracy)
MSE = Metric("mse", "minimize", mse)


@dataclass(frozen=True)
class Workload:
    """A training task: model, data, loss, metric and its usual training settings.

    Data is held as in-memory tensors ``(inputs, targets)``; the built-in tasks are small
    enough, and it keeps batching free of DataLoader overhead.

    Attributes:
        name: registry name or import path.
        build_model: returns a freshly initialised model (seed torch before calling).
        train_data: ``(inputs, targets)`` for training.
        val_data: ``(inputs, targets)`` for validation.
        loss_fn: ``loss_fn(outputs, targets)`` -> scalar tensor.
        metric: the validation metric.
        optimizer: ``"sgd"``, ``"adam"`` or ``"adamw"``.
        batch_size: default mini-batch size.
        epochs: default number of epochs.
        info: free-form facts logged with a study (data source, parameter count, ...).
    """

    name: str
    build_model: Callable[[], nn.Module]
    train_data: tuple[torch.Tensor, torch.Tensor]
    val_data: tuple[torch.Tensor, torch.Tensor]
    loss_fn: LossFn
    metric: Metric
    optimizer: str = "sgd"
    batch_size: int = 100
    epochs: int = 10
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}"
            )
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        for label, (x, y) in (("train_data", self.train_data), ("val_data", self.val_data)):
            if len(x) != len(y) or len(x) == 0:
                raise ValueError(f"{label} must be two non-empty tensors of equal length")

    @property
    def n_train(self) -> int:
        return len(self.train_data[0])

    def steps_per_epoch(self, batch_size: int | None = None) -> int:
        """Optimizer steps in one epoch (the last, partial batch is dropped)."""
        return max(1, self.n_train // (batch_size or self.batch_size))

    def make_optimizer(
        self,
        model: nn.Module,
        *,
        lr: float,
        momentum: float | None = None,
        weight_decay: float = 0.0,
    ) -> torch.optim.Optimizer:
        """Build the workload's optimizer; ``momentum`` is SGD's momentum or Adam's beta1."""
        params = model.parameters()
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=lr, momentum=momentum or 0.0, weight_decay=weight_decay
            )
        betas = (momentum if momentum is not None else 0.9, 0.999)
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=betas, weight_decay=weight_decay)
