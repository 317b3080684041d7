from __future__ import annotations

import math

import pytest
import torch

from lrsearch.schedules import Constant, MetricDriven, OneCycle, PlateauDecay, Schedule
from lrsearch.training import StepInfo, train
from lrsearch.workloads import get_workload


@pytest.fixture(scope="module")
def blobs():
    return get_workload("tests.tiny_workloads:blobs")


def _one_cycle(w, epochs: int, max_lr: float = 0.2) -> OneCycle:
    return OneCycle(max_lr, epochs * w.steps_per_epoch())


def test_learns_and_reports_every_step(blobs) -> None:
    steps: list[StepInfo] = []
    epochs = []
    schedule = _one_cycle(blobs, 3)
    result = train(
        blobs,
        schedule,
        epochs=3,
        on_step=steps.append,
        on_epoch=epochs.append,
        update_ratio_every=2,
    )
    assert not result.diverged and result.epochs == 3
    assert result.steps == 3 * blobs.steps_per_epoch() == len(steps)
    assert [s.step for s in steps] == list(range(result.steps))
    assert [s.lr for s in steps] == pytest.approx(list(schedule.lrs()))
    assert [s.momentum for s in steps] == pytest.approx(list(schedule.momenta()))
    assert all((s.update_ratio is not None) == (s.step % 2 == 0) for s in steps)
    assert all(s.update_ratio > 0 for s in steps if s.update_ratio is not None)
    assert [e.epoch for e in epochs] == [1, 2, 3]
    assert result.val_metric == epochs[-1].val_metric > 80.0  # blobs are easy


def test_deterministic_under_seed(blobs) -> None:
    a = train(blobs, _one_cycle(blobs, 2), epochs=2, seed=7)
    b = train(blobs, _one_cycle(blobs, 2), epochs=2, seed=7)
    c = train(blobs, _one_cycle(blobs, 2), epochs=2, seed=8)
    assert [e.val_loss for e in a.history] == [e.val_loss for e in b.history]
    assert [e.val_loss for e in a.history] != [e.val_loss for e in c.history]


def test_update_ratio_is_the_relative_parameter_change(blobs) -> None:
    ratios = []
    train(
        blobs,
        Constant(0.05, total_steps=18),
        epochs=1,
        momentum=0.0,
        update_ratio_every=1,
        on_step=lambda s: ratios.append(s.update_ratio),
    )
    assert all(0 < r < 1 for r in ratios)
    big = []
    train(
        blobs,
        Constant(0.5, total_steps=18),
        epochs=1,
        momentum=0.0,
        update_ratio_every=1,
        on_step=lambda s: big.append(s.update_ratio),
    )
    assert sum(big) > 5 * sum(ratios)  # ~10x the LR, ~10x the update


def test_huge_lr_diverges_and_stops_early(blobs) -> None:
    result = train(blobs, Constant(1e4, total_steps=54), epochs=3)
    assert result.diverged and result.steps < 54
    assert math.isnan(result.val_metric)
    assert "loss" in result.diverge_reason


def test_nan_loss_diverges() -> None:
    w = get_workload("tests.tiny_workloads:blobs")
    poisoned = type(w)(
        **{
            **w.__dict__,
            "loss_fn": lambda o, t: torch.nn.functional.cross_entropy(o, t) * float("nan"),
        }
    )
    result = train(poisoned, Constant(0.1, total_steps=18), epochs=1)
    assert result.diverged and result.steps <= 25 and "non-finite" in result.diverge_reason


def test_on_epoch_can_stop(blobs) -> None:
    result = train(blobs, _one_cycle(blobs, 3), epochs=3, on_epoch=lambda e: e.epoch == 2)
    assert result.stopped and result.epochs == 2 and not result.diverged


def test_plateau_schedule_gets_reports(blobs) -> None:
    schedule = PlateauDecay(0.1, factor=0.5, patience=0)
    result = train(blobs, schedule, epochs=4)
    assert result.epochs == 4
    assert len(schedule.history) == 4


class _HalveEachReport(Schedule):
    """A metric-driven schedule that is not PlateauDecay: the LR halves at every report."""

    kind = "halve-each-report"

    def __init__(self, lr: float) -> None:
        self.lr = lr
        self.reported: list[float] = []

    @property
    def n_reports(self) -> int:
        return len(self.reported)

    def report(self, metric: float) -> float:
        self.reported.append(metric)
        return self.lr_at(self.n_reports)

    def _lr_values(self, steps):
        return self.lr * 0.5 ** steps.astype(float)

    def _params(self) -> dict:
        return {"lr": self.lr}


def test_any_metric_driven_schedule_gets_reports_and_sets_the_lr(blobs) -> None:
    schedule = _HalveEachReport(0.2)
    assert isinstance(schedule, MetricDriven)
    steps: list[StepInfo] = []
    result = train(blobs, schedule, epochs=3, on_step=steps.append)
    assert schedule.reported == [e.val_loss for e in result.history]
    # every step of epoch e runs at the LR in force after the e reports before it
    assert [s.lr for s in steps] == [0.2 * 0.5**s.epoch for s in steps]
    assert {s.epoch for s in steps} == {0, 1, 2}


def test_a_step_schedule_is_not_reported_to(blobs) -> None:
    # A schedule with a stray `report` but no `n_reports` is stepped by the optimizer step.
    schedule = OneCycle(0.2, 2 * blobs.steps_per_epoch())
    schedule.report = lambda metric: pytest.fail("reported to a step schedule")  # type: ignore[attr-defined]
    steps: list[StepInfo] = []
    train(blobs, schedule, epochs=2, on_step=steps.append)
    assert [s.lr for s in steps] == pytest.approx(list(schedule.lrs()))


@pytest.mark.parametrize(
    ("kwargs", "needle"), [({"epochs": 0}, "epochs"), ({"batch_size": 0}, "batch_size")]
)
def test_bad_arguments(blobs, kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle):
        train(blobs, Constant(0.1), **kwargs)


@pytest.mark.slow
@pytest.mark.xfail(
    reason="the 92.5% bar was set when mnist1d-cnn trained on all 4,000 MNIST-1D training "
    "samples; since the honest three-way split it trains on 3,000 and scored 89.3/89.3/90.4 "
    "(validation) at this fixed max_lr=0.1. Tuned schedules reach ~94% test (docs/workloads.md). "
    "Left failing on purpose rather than lowering the bar; see the issue note.",
    strict=False,
)
def test_mnist1d_cnn_one_cycle_median_of_three() -> None:
    w = get_workload("mnist1d-cnn")
    accs = []
    for seed in range(3):
        schedule = OneCycle(0.1, 30 * w.steps_per_epoch())
        accs.append(train(w, schedule, epochs=30, seed=seed).val_metric)
    assert sorted(accs)[1] >= 92.5, accs


@pytest.mark.parametrize("with_test", [False, True])
def test_a_run_resumed_from_a_snapshot_continues_it_exactly(with_test: bool) -> None:
    """Annihilation branching's base: a tail trained from the cycle end's snapshot is the run
    that trained the whole way under that tail, bit for bit on the CPU."""
    w = get_workload(f"tests.tiny_workloads:{'blobs_with_test' if with_test else 'blobs'}")
    total = 6 * w.steps_per_epoch()

    def schedule(annihilation: float) -> OneCycle:
        return OneCycle(0.3, total, cycle_frac=0.5, annihilation=annihilation)

    snaps = []
    first = train(w, schedule(10.0), epochs=6, seed=3, snapshot_at=3, on_snapshot=snaps.append)
    assert len(snaps) == 1 and snaps[0].epoch == 3 and snaps[0].step == 3 * w.steps_per_epoch()
    for annihilation in (10.0, 1000.0):
        whole = train(w, schedule(annihilation), epochs=6, seed=3)
        seen: list[int] = []
        tail = train(
            w,
            schedule(annihilation),
            epochs=6,
            seed=3,
            resume=snaps[0],
            on_epoch=lambda e, seen=seen: seen.append(e.epoch),
        )
        assert seen == [4, 5, 6]  # callbacks see the tail only
        assert [e.val_metric for e in tail.history] == [e.val_metric for e in whole.history]
        assert tail.val_loss == whole.val_loss and tail.steps == whole.steps
        assert tail.steps_trained == 3 * w.steps_per_epoch()
        if with_test:
            assert tail.test_loss == whole.test_loss
    assert first.val_loss == train(w, schedule(10.0), epochs=6, seed=3).val_loss


def test_a_metric_driven_schedule_cannot_resume(blobs) -> None:
    from lrsearch.errors import WorkloadError

    snaps = []
    train(blobs, _one_cycle(blobs, 2), epochs=2, snapshot_at=1, on_snapshot=snaps.append)
    with pytest.raises(WorkloadError, match="cannot resume"):
        train(blobs, PlateauDecay(0.1), epochs=2, resume=snaps[0])
