"""The built-in loop as a trainer: a :class:`~lrsearch.workloads.Workload` trained by
:func:`lrsearch.training.train`, range-tested by :func:`lrsearch.range_test.range_test_workload`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lrsearch.prior import optimizer_family
from lrsearch.trainers._base import NO_HOOKS, TrainHooks

if TYPE_CHECKING:
    from lrsearch.range_test import RampPlan, RangeTestResult
    from lrsearch.schedules import Schedule
    from lrsearch.training import TrainResult
    from lrsearch.workloads import Metric, Workload

__all__ = ["WorkloadTrainer"]


@dataclass
class WorkloadTrainer:
    """Trains ``workload`` with lrsearch's own loop.

    Args:
        workload: the task (model, data, loss, optimizer).
        epochs: epochs per trial (default: the workload's).
        batch_size: mini-batch size (default, and after construction: the workload's).
    """

    workload: Workload
    epochs: int = 0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        self.epochs = self.epochs or self.workload.epochs
        self.batch_size = self.batch_size or self.workload.batch_size
        self.steps_per_epoch = self.workload.steps_per_epoch(self.batch_size)
        self.label = f"workload {self.workload.name}"

    @property
    def metric(self) -> Metric:
        return self.workload.metric

    @cached_property
    def drives_momentum(self) -> bool:
        """Builds the model and optimizer once (torch's RNG left as it was) to ask
        :func:`~lrsearch.torch_schedule.momentum_key`."""
        import torch

        from lrsearch.torch_schedule import momentum_key

        with torch.random.fork_rng(devices=[]):
            model = self.workload.build_model()
            optimizer = self.workload.make_optimizer(model, lr=1e-3, momentum=0.9)
        return momentum_key(optimizer) is not None

    @property
    def optimizer_family(self) -> str | None:
        return optimizer_family(self.workload.optimizer_name)

    def train(
        self,
        schedule: Schedule,
        *,
        params: Mapping[str, Any],
        seed: int,
        device: str,
        number: int | None = None,
        hooks: TrainHooks = NO_HOOKS,
    ) -> TrainResult:
        """:func:`lrsearch.training.train` (``hooks.on_metrics`` unused: it logs none)."""
        from lrsearch.training import train

        return train(
            self.workload,
            schedule,
            epochs=self.epochs,
            batch_size=self.batch_size,
            weight_decay=float(params.get("weight_decay", 0.0)),
            device=device,
            seed=seed,
            on_step=hooks.on_step,
            on_epoch=hooks.on_epoch,
            update_ratio_every=hooks.update_ratio_every,
            snapshot_at=hooks.snapshot_at,
            on_snapshot=hooks.on_snapshot,
            resume=hooks.resume,
        )

    def range_test(
        self,
        plan: RampPlan,
        *,
        seed: int,
        device: str,
        on_repeat: Callable[[int, int], None] | None = None,
    ) -> RangeTestResult:
        """:func:`lrsearch.range_test.range_test_workload` on a model initialised under ``seed``."""
        from lrsearch.range_test import range_test_workload

        return range_test_workload(
            self.workload,
            device=device,
            seed=seed,
            batch_size=self.batch_size,
            on_repeat=on_repeat,
            plan=plan,
        )
