"""Trainers: one small interface (:class:`Trainer`) behind every way a trial trains.

- :class:`WorkloadTrainer`: lrsearch's built-in loop on a :class:`~lrsearch.workloads.Workload`.
- :class:`LoopTrainer`: your own ``train(ctx)`` function, given a :class:`TrialContext`.

:func:`trainer_for` picks one from a study's config when the study opens; the objective, the
range test (:mod:`lrsearch.range_test`'s ramp and readings, for every trainer) and ``lrsearch
train --from-study`` call it without asking which it is.
"""

from __future__ import annotations

from lrsearch.trainers._base import (
    NO_HOOKS,
    EpochCallback,
    MetricsCallback,
    StepCallback,
    Trainer,
    TrainHooks,
)
from lrsearch.trainers._choose import build_workload, trainer_for
from lrsearch.trainers._context import Mode, TrialContext, TrialDriver
from lrsearch.trainers._loop import NEVER_REPORTED, LoopTrainer
from lrsearch.trainers._standin import LoopFunction, load_loop, loop_workload
from lrsearch.trainers._workload import WorkloadTrainer

__all__ = [
    "NEVER_REPORTED",
    "NO_HOOKS",
    "EpochCallback",
    "LoopFunction",
    "LoopTrainer",
    "MetricsCallback",
    "Mode",
    "StepCallback",
    "TrainHooks",
    "Trainer",
    "TrialContext",
    "TrialDriver",
    "WorkloadTrainer",
    "build_workload",
    "load_loop",
    "loop_workload",
    "trainer_for",
]
