"""The trainer interface: what the search asks of whatever trains a trial.

The built-in loop (:class:`~lrsearch.trainers.WorkloadTrainer`) and a user's own loop
(:class:`~lrsearch.trainers.LoopTrainer`) implement it; :func:`~lrsearch.trainers.trainer_for`
chooses one when a study opens. The objective, the range test and ``lrsearch train
--from-study`` call it and never ask which kind it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lrsearch.range_test import RampPlan, RangeTestResult
    from lrsearch.schedules import Schedule
    from lrsearch.training import EpochInfo, Snapshot, StepInfo, TrainResult
    from lrsearch.workloads import Metric, Workload

__all__ = ["EpochCallback", "MetricsCallback", "StepCallback", "Trainer"]

StepCallback = Callable[["StepInfo"], None]
EpochCallback = Callable[["EpochInfo"], bool]  # True: stop now (pruned)
MetricsCallback = Callable[[int, Mapping[str, float]], None]  # a loop's own step metrics


class Trainer(Protocol):
    """Trains one schedule (a trial) or runs the LR range test's ramps.

    Attributes:
        workload: what the study trains, as reports and exports describe it (a loop's is a
            stand-in: its name, metric and sizes, no model or data).
        epochs: epochs per trial.
        steps_per_epoch: optimizer steps per epoch.
        batch_size: the mini-batch size, or None where the trainer's own code sets it.
        label: how messages name it, e.g. ``workload digits-mlp``.
    """

    workload: Workload
    epochs: int
    steps_per_epoch: int
    batch_size: int | None
    label: str

    @property
    def metric(self) -> Metric: ...

    @property
    def drives_momentum(self) -> bool:
        """Whether the optimizer has a momentum for the schedule to drive."""
        ...

    @property
    def optimizer_family(self) -> str | None:
        """The optimizer's family for the prior's offset (None: unknown)."""
        ...

    def train(
        self,
        schedule: Schedule,
        *,
        params: Mapping[str, Any],
        seed: int,
        device: str,
        number: int | None = None,
        on_step: StepCallback | None = None,
        on_epoch: EpochCallback | None = None,
        on_metrics: MetricsCallback | None = None,
        update_ratio_every: int = 0,
        snapshot_at: int | None = None,
        on_snapshot: Callable[[Snapshot], None] | None = None,
        resume: Snapshot | None = None,
    ) -> TrainResult:
        """Train under ``schedule`` with the sampled ``params`` (``number``: the trial's, where
        it is one); steps and epochs go to the
        callbacks (``on_epoch`` returning True stops it). A trainer that cannot snapshot
        never calls ``on_snapshot`` (and is never handed a ``resume``)."""
        ...

    def range_test(
        self,
        plan: RampPlan,
        *,
        seed: int,
        device: str,
        on_repeat: Callable[[int, int], None] | None = None,
    ) -> RangeTestResult:
        """Run ``plan``'s repeats from the same start (seeds ``seed + r``), every RNG restored,
        and read them with :func:`lrsearch.range_test.read_ramps`."""
        ...
