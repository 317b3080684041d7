"""The trainer interface: what the search asks of whatever trains a trial.

The built-in loop (:class:`~lrsearch.trainers.WorkloadTrainer`) and a user's own loop
(:class:`~lrsearch.trainers.LoopTrainer`) implement it; :func:`~lrsearch.trainers.trainer_for`
chooses one when a study opens. The objective, the range test and ``lrsearch train
--from-study`` call it and never ask which kind it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from lrsearch.range_test import RampPlan, RangeTestResult
    from lrsearch.schedules import Schedule
    from lrsearch.training import EpochInfo, Snapshot, StepInfo, TrainResult
    from lrsearch.workloads import Metric, Workload

__all__ = ["NO_HOOKS", "EpochCallback", "MetricsCallback", "StepCallback", "TrainHooks", "Trainer"]

StepCallback = Callable[["StepInfo"], None]
EpochCallback = Callable[["EpochInfo"], bool]  # True: stop now (pruned)
MetricsCallback = Callable[[int, Mapping[str, float]], None]  # a loop's own step metrics


@dataclass(frozen=True)
class TrainHooks:
    """Where a training run's steps and epochs go, and the snapshots it keeps.

    Attributes:
        on_step: every optimizer step, in order (in chunks: losses are read back in batches).
        on_epoch: after each epoch's validation; True stops the run (pruned).
        on_metrics: a trainer's own step metrics (a loop's ``ctx.log(step, name=value)``).
        update_ratio_every: measure the update-to-weight ratio every N steps (0: never).
        snapshot_at: after this epoch hand a snapshot to ``on_snapshot``; a trainer that
            keeps none never calls it.
        on_snapshot: gets the snapshot.
        resume: go on from this snapshot (only ever handed to a trainer that made it).
        on_checkpoint: at every epoch boundary but the last, gets a function that takes a
            snapshot (only when a checkpoint is due: a copy costs time): what a preempted
            trial's retry resumes from (:mod:`lrsearch.checkpoints`); a trainer that keeps
            none never calls it.
    """

    on_step: StepCallback | None = None
    on_epoch: EpochCallback | None = None
    on_metrics: MetricsCallback | None = None
    update_ratio_every: int = 0
    snapshot_at: int | None = None
    on_snapshot: Callable[[Snapshot], None] | None = None
    resume: Snapshot | None = None
    on_checkpoint: Callable[[Callable[[], Snapshot]], None] | None = None


NO_HOOKS = TrainHooks()


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
        hooks: TrainHooks = NO_HOOKS,
    ) -> TrainResult:
        """Train under ``schedule`` with the sampled ``params`` (``number``: the trial's, where
        it is one); steps and epochs go to ``hooks``."""
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
