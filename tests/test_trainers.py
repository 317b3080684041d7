"""The trainer interface: one contract, run over every implementation."""

from __future__ import annotations

import math

import pytest
import torch

from lrsearch.config import parse_study_config
from lrsearch.range_test import RampPlan
from lrsearch.schedules import OneCycle
from lrsearch.trainers import LoopTrainer, Trainer, TrainHooks, WorkloadTrainer, trainer_for
from lrsearch.training import EpochInfo, StepInfo
from tests.test_trial_context import _config
from tests.tiny_workloads import blobs


def _workload_trainer() -> Trainer:
    return WorkloadTrainer(blobs(epochs=2), epochs=2)


def _loop_trainer() -> Trainer:
    return trainer_for(parse_study_config(_config(epochs=2)))


@pytest.fixture(params=[_workload_trainer, _loop_trainer], ids=["workload", "loop"])
def trainer(request: pytest.FixtureRequest) -> Trainer:
    return request.param()


class TestTrainerContract:
    def test_every_step_runs_at_the_schedules_lr_and_every_epoch_is_reported(
        self, trainer: Trainer
    ) -> None:
        total = trainer.epochs * trainer.steps_per_epoch
        schedule = OneCycle(0.05, total)
        steps: list[StepInfo] = []
        epochs: list[EpochInfo] = []
        hooks = TrainHooks(on_step=steps.append, on_epoch=lambda e: bool(epochs.append(e)))
        params = {"weight_decay": 0.0}
        result = trainer.train(schedule, params=params, seed=3, device="cpu", hooks=hooks)
        assert [s.step for s in steps] == list(range(total))
        assert [s.lr for s in steps] == pytest.approx([schedule.lr_at(k) for k in range(total)])
        assert [e.epoch for e in epochs] == list(range(1, trainer.epochs + 1))
        assert result.steps == total and result.epochs == trainer.epochs
        assert result.val_metric == epochs[-1].val_metric and not result.stopped
        again = trainer.train(schedule, params=params, seed=3, device="cpu")
        assert again.val_metric == result.val_metric  # same seed, same run (CPU)

    def test_true_from_on_epoch_stops_the_run(self, trainer: Trainer) -> None:
        schedule = OneCycle(0.05, trainer.epochs * trainer.steps_per_epoch)
        hooks = TrainHooks(on_epoch=lambda e: True)
        result = trainer.train(schedule, params={}, seed=0, device="cpu", hooks=hooks)
        assert result.stopped and result.epochs == 1 and math.isnan(result.test_metric)

    def test_the_range_test_follows_the_plans_ramp_and_restores_the_rng(
        self, trainer: Trainer
    ) -> None:
        plan = RampPlan.make(num_iter=15, repeats=2, skip_start=2, skip_end=1)
        before = torch.get_rng_state()
        result = trainer.range_test(plan, seed=0, device="cpu")
        assert torch.equal(torch.get_rng_state(), before)
        assert len(result.curves) == 2
        for curve in result.curves:
            n = len(curve.lrs)
            assert 10 <= n <= 15
            assert curve.lrs == pytest.approx([plan.schedule.lr_at(k) for k in range(n)])
        assert result.settings["skip_start"] == 2 and result.settings["skip_end"] == 1
        assert result.prior.low < result.prior.high


def test_the_chooser_gives_each_kind_its_trainer() -> None:
    assert isinstance(_loop_trainer(), LoopTrainer)
    config = parse_study_config({"study": {"name": "x", "workload": "tests.tiny_workloads:blobs"}})
    assert isinstance(trainer_for(config), WorkloadTrainer)
