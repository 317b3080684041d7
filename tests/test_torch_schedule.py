from __future__ import annotations

import pytest
import torch

from lrsearch.schedules import Constant, OneCycle
from lrsearch.torch_schedule import ScheduleDriver, momentum_key


def _model() -> torch.nn.Module:
    return torch.nn.Linear(3, 2)


@pytest.mark.parametrize("kind", ["sgd", "adam", "adamw"])
def test_drives_lr_and_momentum(kind: str) -> None:
    model = _model()
    opt = {
        "sgd": lambda: torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.5),
        "adam": lambda: torch.optim.Adam(model.parameters(), lr=1.0),
        "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=1.0),
    }[kind]()
    schedule = OneCycle(0.2, 50, momentum=(0.95, 0.85))
    driver = ScheduleDriver(opt, schedule)
    assert driver.drives_momentum
    for step in (0, 10, 22, 49):
        driver.apply(step)
        group = opt.param_groups[0]
        assert group["lr"] == pytest.approx(schedule.lr_at(step))
        momentum = group["betas"][0] if kind != "sgd" else group["momentum"]
        assert momentum == pytest.approx(schedule.momentum_at(step))
        if kind != "sgd":
            assert group["betas"][1] == 0.999


def test_optimizer_without_momentum_gets_lr_only() -> None:
    opt = torch.optim.Adagrad(_model().parameters(), lr=1.0)
    driver = ScheduleDriver(opt, OneCycle(0.1, 10))
    assert not driver.drives_momentum
    lr, momentum = driver.apply(3)
    assert momentum is None and opt.param_groups[0]["lr"] == lr


def test_refuses_optimizer_driven_by_torch_scheduler() -> None:
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    with pytest.raises(ValueError, match=r"already driven by a torch\.optim\.lr_scheduler"):
        ScheduleDriver(opt, Constant(0.1))


def test_refuses_second_driver_until_detached() -> None:
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    first = ScheduleDriver(opt, Constant(0.1))
    with pytest.raises(ValueError, match="another lrsearch ScheduleDriver"):
        ScheduleDriver(opt, Constant(0.2))
    first.detach()
    ScheduleDriver(opt, Constant(0.2)).apply(0)
    assert opt.param_groups[0]["lr"] == 0.2


def _two_groups(lr: float, ratio: float = 0.1) -> torch.optim.Optimizer:
    a, b = _model(), _model()
    return torch.optim.SGD(
        [{"params": a.parameters()}, {"params": b.parameters(), "lr": lr * ratio}],
        lr=lr,
        momentum=0.9,
    )


def test_each_group_keeps_its_ratio_to_the_base_lr() -> None:
    opt = _two_groups(0.01)
    schedule = OneCycle(0.2, 50)
    driver = ScheduleDriver(opt, schedule, base_lr=0.01)
    assert driver.lr_ratios == pytest.approx([1.0, 0.1])
    for step in (0, 10, 25, 49):
        lr, _ = driver.apply(step)
        assert lr == schedule.lr_at(step)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([lr, 0.1 * lr])
        assert all(g["momentum"] == schedule.momentum_at(step) for g in opt.param_groups)


def test_ratios_are_to_the_first_group_without_a_base_and_one_when_it_is_zero() -> None:
    opt = _two_groups(0.5, ratio=4.0)
    assert ScheduleDriver(opt, Constant(0.1)).lr_ratios == pytest.approx([1.0, 4.0])
    zero = torch.optim.SGD(_model().parameters(), lr=0.0)
    driver = ScheduleDriver(zero, Constant(0.1))
    driver.apply(0)
    assert driver.lr_ratios == [1.0] and zero.param_groups[0]["lr"] == 0.1


def test_a_group_added_later_runs_at_the_schedules_lr() -> None:
    opt = _two_groups(0.01)
    driver = ScheduleDriver(opt, Constant(0.3), base_lr=0.01)
    opt.add_param_group({"params": _model().parameters(), "lr": 5.0})
    driver.apply(0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.3, 0.03, 0.3])


@pytest.mark.parametrize(
    ("cls", "key"),
    [
        (torch.optim.SGD, "momentum"),
        (torch.optim.RMSprop, "momentum"),
        (torch.optim.NAdam, "betas"),
        (torch.optim.Adagrad, None),
        (torch.optim.Adadelta, None),
    ],
)
def test_momentum_key_names_what_the_driver_moves(cls, key) -> None:
    opt = cls(_model().parameters(), lr=0.1)
    assert momentum_key(opt) == key
    driver = ScheduleDriver(opt, OneCycle(0.1, 10))
    assert driver.drives_momentum is (key is not None)
    driver.detach()
    assert not ScheduleDriver(opt, Constant(0.1)).drives_momentum  # a schedule without one
