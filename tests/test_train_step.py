"""lrsearch.train_step: one optimizer step under a workload's options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lrsearch.errors import WorkloadError
from lrsearch.train_step import TrainStep, autocast_for

CPU = torch.device("cpu")


def _mse(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return nn.functional.mse_loss(model(x), y)


def _setup(seed: int = 0) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(3, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_micro_batches_step_as_one_batch_does() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    whole_model, whole_opt = _setup()
    whole = TrainStep(whole_model, whole_opt, _mse, device=CPU).run([(x, y)])
    split_model, split_opt = _setup()
    halves = [(x[:4], y[:4]), (x[4:], y[4:])]
    split = TrainStep(split_model, split_opt, _mse, device=CPU).run(halves)
    assert torch.allclose(whole, split)  # equal halves: the mean of means is the mean
    for a, b in zip(whole_model.parameters(), split_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_the_gradient_norm_is_clipped() -> None:
    model, _ = _setup()
    before = [p.detach().clone() for p in model.parameters()]
    step = TrainStep(
        model, torch.optim.SGD(model.parameters(), lr=1.0), _mse, device=CPU, grad_clip=1e-3
    )
    step.run([(torch.randn(4, 3) * 100, torch.randn(4, 1) * 100)])
    moved = torch.cat([(p - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
    assert moved.norm() <= 1e-3 * 1.0001  # lr 1: the step is the clipped gradient


def test_a_first_step_that_does_not_fit_shows_the_batch() -> None:
    model, optimizer = _setup()
    step = TrainStep(model, optimizer, _mse, device=CPU)
    with pytest.raises(WorkloadError, match=r"train batch \(Tensor\[4, 5\] float32.*fix: make"):
        step.run([(torch.randn(4, 5), torch.randn(4, 1))])


def test_a_users_own_bug_keeps_its_type() -> None:
    def broken(model: nn.Module, batch: object) -> torch.Tensor:
        raise RuntimeError("my bug")

    model, optimizer = _setup()
    with pytest.raises(RuntimeError, match="my bug"):
        TrainStep(model, optimizer, broken, device=CPU).run([None])


def test_fp16_needs_cuda_and_says_the_fix() -> None:
    with pytest.raises(WorkloadError, match=r"precision='fp16' needs a CUDA device.*'bf16'"):
        autocast_for("fp16", CPU)
    with autocast_for("fp32", CPU)():
        pass
