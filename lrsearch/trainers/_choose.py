"""Which trainer a study trains with: decided here, once, from its config."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lrsearch.errors import ConfigError
from lrsearch.trainers._loop import LoopTrainer
from lrsearch.trainers._workload import WorkloadTrainer
from lrsearch.workloads import Metric

if TYPE_CHECKING:
    from lrsearch.config import StudyConfig
    from lrsearch.trainers._base import Trainer
    from lrsearch.workloads import Workload

__all__ = ["build_workload", "trainer_for"]


def trainer_for(config: StudyConfig, workload: Workload | None = None) -> Trainer:
    """The trainer of the study ``config`` describes: its own loop, or the built-in loop on
    its workload (``workload`` where the caller has built it already).

    Raises:
        WorkloadError: the loop or workload does not import or build.
        ConfigError: the workload refuses a ``[study.training]`` option.
    """
    study = config.study
    if study.loop is not None:  # the one place that asks: everything else calls the trainer
        assert study.metric and study.direction and study.steps_per_epoch and study.epochs
        return LoopTrainer.load(
            study.loop,
            metric=Metric(study.metric, study.direction),
            epochs=study.epochs,
            steps_per_epoch=study.steps_per_epoch,
        )
    return WorkloadTrainer(
        workload or _workload(config), epochs=study.epochs or 0, batch_size=study.batch_size
    )


def build_workload(config: StudyConfig) -> Workload:
    """What the study trains, as a workload (a loop's stand-in: its name, metric, sizes)."""
    return trainer_for(config).workload


def _workload(config: StudyConfig) -> Workload:
    """The study file's workload, built (and checked) from its name and options."""
    from lrsearch.workloads import get_workload

    workload = get_workload(config.study.workload, **config.study.workload_options)
    for key, value in config.study.training.options().items():  # one by one: errors name it
        try:
            workload = workload.with_options(**{key: value})
        except ValueError as exc:
            raise ConfigError(
                f"study.training.{key}: workload {workload.name!r} refuses {value!r}: {exc}"
            ) from None
    return workload
