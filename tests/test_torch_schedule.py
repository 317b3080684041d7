from __future__ import annotations

import pytest
import torch

from lrsearch.schedules import Constant, OneCycle
from lrsearch.torch_schedule import ScheduleDriver


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
