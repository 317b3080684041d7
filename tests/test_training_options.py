"""Bring your own training: loaders, optimizer factories, grad_clip, accumulate, precision,
step_fn, and the range test honouring (and restoring after) all of them."""

from __future__ import annotations

import copy
import dataclasses
import math
import random
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrsearch.config import parse_study_config
from lrsearch.errors import WorkloadError
from lrsearch.objective import Objective
from lrsearch.prior import LRPrior
from lrsearch.range_test import range_test, range_test_workload
from lrsearch.schedules import Constant, OneCycle
from lrsearch.study import StudyHandle
from lrsearch.torch_schedule import ScheduleDriver
from lrsearch.training import StepInfo, train
from lrsearch.workloads import ACCURACY, MEAN_LOSS, Metric, Workload
from tests import tiny_workloads
from tests.tiny_workloads import blobs, blobs_loader, lm_step, same_order_loader, tiny_lm

BF16_CPU = torch.amp.is_autocast_available("cpu")


def _history(result) -> list[float]:
    return [v for e in result.history for v in (e.train_loss, e.val_loss, e.val_metric)]


def _one_cycle(w: Workload, epochs: int = 2, max_lr: float = 0.2) -> OneCycle:
    return OneCycle(max_lr, epochs * w.steps_per_epoch())


def _recording(cls: type[torch.optim.Optimizer], seen: list[Any], **kw: Any):
    """An optimizer factory(model, lr) whose optimizer reports each step's groups and grads."""

    def factory(model: nn.Module, lr: float) -> torch.optim.Optimizer:
        params = list(model.parameters())
        groups = [{"params": params[:2]}, {"params": params[2:], "lr": lr * 0.1}]
        opt = cls(groups, lr=lr, **kw)

        def hook(o: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            grads = [p.grad for g in o.param_groups for p in g["params"] if p.grad is not None]
            norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
            seen.append(([g["lr"] for g in o.param_groups], norm))

        opt.register_step_pre_hook(hook)
        return opt

    return factory


# --- data as the user has it ------------------------------------------------------------------


def test_a_loader_with_the_tensor_paths_batches_trains_bit_for_bit_the_same() -> None:
    w = blobs(epochs=2)
    calls: list[tuple[int, int]] = []
    same = same_order_loader(*w.train_data, w.batch_size)

    def factory(epoch: int, seed: int) -> DataLoader:
        calls.append((epoch, seed))
        return same(epoch, seed)

    loader = dataclasses.replace(
        w, train_data=factory, val_data=DataLoader(TensorDataset(*w.val_data))
    )
    assert loader.steps_per_epoch() == w.steps_per_epoch()
    a, b = [], []
    plain = train(w, _one_cycle(w), seed=4, on_step=a.append)
    from_loader = train(loader, _one_cycle(w), seed=4, on_step=b.append)
    assert [s.loss for s in a] == [s.loss for s in b]
    assert [e.train_loss for e in plain.history] == [e.train_loss for e in from_loader.history]
    # validation batches of 1 are scored over all outputs at once, like the tensors
    assert _history(plain) == pytest.approx(_history(from_loader), rel=1e-6)
    assert [c for c in calls if c != (0, 0)] == [(0, 4), (1, 4)]  # (0, 0): len() for the plan


def test_a_shuffling_dataloader_trains_and_is_deterministic_under_seed() -> None:
    w = blobs_loader(epochs=3)
    assert w.steps_per_epoch() == len(w.train_data) == 6
    a = train(w, _one_cycle(w, 3), seed=1)
    b = train(w, _one_cycle(w, 3), seed=1)
    assert _history(a) == _history(b) and a.steps == 18
    assert a.val_metric > 80.0


def test_a_loader_without_len_needs_batches_per_epoch() -> None:
    base = blobs()
    x, y = base.train_data

    def stream():
        g = torch.Generator().manual_seed(0)
        while True:
            idx = torch.randint(0, len(x), (32,), generator=g)
            yield x[idx], y[idx]

    class Endless:
        def __iter__(self):
            return stream()

    w = dataclasses.replace(base, train_data=Endless())
    with pytest.raises(WorkloadError, match=r"no len.*batches_per_epoch"):
        w.steps_per_epoch()
    w = w.with_options(batches_per_epoch=5, accumulate=1)
    result = train(w, Constant(0.1), epochs=2)
    assert result.steps == 10 and not result.diverged


def test_a_loader_that_runs_dry_is_an_error_not_a_short_epoch() -> None:
    base = blobs()
    w = dataclasses.replace(
        base,
        train_data=DataLoader(TensorDataset(*base.train_data), batch_size=32),
        batches_per_epoch=9,
    )
    with pytest.raises(WorkloadError, match=r"ran out after 6 batches.*batches_per_epoch"):
        train(w, Constant(0.1), epochs=1)


def test_a_loaders_batch_size_cannot_be_overridden() -> None:
    w = blobs_loader()
    with pytest.raises(WorkloadError, match=r"batch_size=64 cannot apply.*fix"):
        w.steps_per_epoch(64)
    assert w.steps_per_epoch(w.batch_size) == 6


# --- the optimizer: factories, groups, momentum ---------------------------------------------


def test_param_groups_keep_their_ratio_through_the_schedule() -> None:
    seen: list[Any] = []
    w = blobs(epochs=2).with_options(optimizer=_recording(torch.optim.SGD, seen, momentum=0.9))
    schedule = _one_cycle(w)
    steps: list[StepInfo] = []
    train(w, schedule, on_step=steps.append)
    assert len(seen) == len(steps) == schedule.total_steps
    for (lrs, _), step in zip(seen, steps, strict=True):
        assert lrs[0] == pytest.approx(step.lr) and lrs[1] == pytest.approx(0.1 * step.lr)
    assert [s.momentum for s in steps] == pytest.approx(list(schedule.momenta()))


@pytest.mark.parametrize(
    ("optimizer", "has_momentum"),
    [("sgd", True), ("adamw", True), ("Adagrad", False), (torch.optim.NAdam, True)],
)
def test_momentum_is_driven_where_the_optimizer_has_one(optimizer, has_momentum) -> None:
    w = blobs(epochs=1).with_options(optimizer=optimizer)
    model = w.build_model()
    driver = ScheduleDriver(w.make_optimizer(model, lr=0.1), _one_cycle(w, 1))
    assert driver.drives_momentum is has_momentum
    steps: list[StepInfo] = []
    result = train(w, _one_cycle(w, 1, max_lr=0.05), on_step=steps.append)
    assert not result.diverged
    assert all((s.momentum is not None) is has_momentum for s in steps)


def test_a_factory_without_lr_sets_its_own_groups_and_the_first_follows_the_schedule() -> None:
    def factory(model: nn.Module) -> torch.optim.Optimizer:
        params = list(model.parameters())
        return torch.optim.SGD(
            [{"params": params[:2], "lr": 0.5}, {"params": params[2:], "lr": 0.05}]
        )

    w = blobs(epochs=1).with_options(optimizer=factory)
    assert not w.optimizer_takes_lr
    optimizer = w.make_optimizer(w.build_model(), lr=123.0)
    driver = ScheduleDriver(optimizer, Constant(0.2))
    driver.apply(0)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.2, 0.02])
    assert not train(w, Constant(0.05)).diverged


def test_params_first_factories_and_names_get_the_runs_settings() -> None:
    import functools

    w = blobs().with_options(optimizer=functools.partial(torch.optim.RMSprop, alpha=0.9))
    opt = w.make_optimizer(w.build_model(), lr=0.01, momentum=0.8, weight_decay=1e-4)
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["alpha"]) == (
        0.01,
        0.8,
        1e-4,
        0.9,
    )
    assert w.optimizer_name == "RMSprop"
    assert isinstance(
        blobs().with_options(optimizer="adagrad").make_optimizer(nn.Linear(2, 1), lr=0.1),
        torch.optim.Adagrad,
    )


# --- grad_clip, accumulate, precision --------------------------------------------------------


def test_grad_clip_bounds_the_global_norm() -> None:
    unclipped: list[Any] = []
    clipped: list[Any] = []
    w = blobs(epochs=1)
    train(w.with_options(optimizer=_recording(torch.optim.SGD, unclipped)), Constant(0.1))
    w = w.with_options(optimizer=_recording(torch.optim.SGD, clipped), grad_clip=0.05)
    train(w, Constant(0.1))
    assert max(norm for _, norm in unclipped) > 0.05
    assert all(norm <= 0.05 * (1 + 1e-5) for _, norm in clipped)


def test_accumulating_two_half_batches_equals_one_full_batch() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 6, generator=g, dtype=torch.float64)
    y = x @ torch.randn(6, 1, generator=g, dtype=torch.float64)
    full = Workload(
        name="linear",
        build_model=lambda: nn.Linear(6, 1).double(),
        train_data=(x, y),
        val_data=(x, y),
        loss_fn=nn.functional.mse_loss,
        batch_size=32,
        epochs=2,
    )
    half = full.with_options(batch_size=16, accumulate=2)
    assert half.steps_per_epoch() == full.steps_per_epoch() == 8
    a, b = [], []
    ra = train(full, _one_cycle(full, max_lr=0.05), on_step=a.append)
    rb = train(half, _one_cycle(full, max_lr=0.05), on_step=b.append)
    assert [s.loss for s in a] == pytest.approx([s.loss for s in b], rel=1e-10)
    assert _history(ra) == pytest.approx(_history(rb), rel=1e-10)


def test_accumulate_counts_optimizer_steps_for_a_loader() -> None:
    w = blobs_loader().with_options(accumulate=2)
    assert w.steps_per_epoch() == 3
    result = train(w, Constant(0.1), epochs=2)
    assert result.steps == 6
    with pytest.raises(WorkloadError, match="fewer than accumulate=7"):
        w.with_options(accumulate=7).steps_per_epoch()


@pytest.mark.skipif(not BF16_CPU, reason="this torch build has no CPU autocast")
def test_bf16_on_cpu_trains() -> None:
    w = blobs(epochs=3).with_options(precision="bf16")
    result = train(w, _one_cycle(w, 3))
    assert not result.diverged and result.val_metric > 70.0
    assert result.history[-1].val_loss != train(blobs(epochs=3), _one_cycle(w, 3)).val_loss


def test_fp16_on_cpu_is_a_clear_error() -> None:
    w = blobs().with_options(precision="fp16")
    with pytest.raises(WorkloadError, match=r"precision='fp16' needs a CUDA device.*fix: .*'bf16'"):
        train(w, Constant(0.1))


def test_options_are_checked_and_replaced_only_by_name() -> None:
    w = blobs()
    with pytest.raises(ValueError, match=r"unknown workload option.*loss_fn.*options are"):
        w.with_options(loss_fn=None)
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        w.with_options(precision="fp8")
    with pytest.raises(ValueError, match="grad_clip must be a positive number"):
        w.with_options(grad_clip=0.0)
    with pytest.raises(ValueError, match=r"optimizer must be one of .*adagrad"):
        w.with_options(optimizer="adamx")
    assert w.with_options(accumulate=2).accumulate == 2 and w.accumulate == 1


# --- step_fn ----------------------------------------------------------------------------------


def test_a_step_fn_language_model_trains() -> None:
    w = tiny_lm(epochs=3)
    assert w.metric is MEAN_LOSS
    result = train(w, OneCycle(0.05, 3 * w.steps_per_epoch()), seed=0)
    assert not result.diverged and result.epochs == 3
    assert result.val_metric == result.val_loss < 0.5 * math.log(11)
    again = train(w, OneCycle(0.05, 3 * w.steps_per_epoch()), seed=0)
    assert _history(result) == _history(again)


def test_an_eval_fn_scores_a_step_fn_workload() -> None:
    seen: list[int] = []

    def perplexity(model: nn.Module, batches) -> tuple[float, float]:
        losses = [float(lm_step(model, b)) for b in batches]
        seen.append(len(losses))
        loss = sum(losses) / len(losses)
        return loss, math.exp(loss)

    metric = Metric("perplexity", "minimize")
    w = dataclasses.replace(tiny_lm(epochs=1), eval_fn=perplexity, metric=metric)
    result = train(w, Constant(0.02))
    assert seen == [2] and result.val_metric == pytest.approx(math.exp(result.val_loss))


def test_a_step_fn_workload_needs_eval_fn_for_an_output_metric() -> None:
    with pytest.raises(ValueError, match=r"metric 'accuracy' needs model outputs.*eval_fn"):
        dataclasses.replace(tiny_lm(), metric=ACCURACY)


# --- bad input, one clear message each --------------------------------------------------------


def test_a_loader_with_the_wrong_shapes_names_the_batch() -> None:
    base = blobs()
    x, y = base.train_data
    w = dataclasses.replace(base, train_data=DataLoader(TensorDataset(x[:, :5], y), batch_size=32))
    with pytest.raises(
        WorkloadError,
        match=r"train batch \[Tensor\[32, 5\] float32, Tensor\[32\] int64\]: RuntimeError: .* — fix: ",
    ):
        train(w, Constant(0.1))


def test_a_bug_in_the_model_keeps_its_own_type_and_message() -> None:
    flaky = tiny_workloads.flaky()
    with pytest.raises(RuntimeError, match=r"^boom in the user's model$"):
        train(flaky, Constant(0.1), seed=1)


def test_a_loader_of_single_tensors_is_not_a_pair() -> None:
    base = blobs()
    w = dataclasses.replace(base, train_data=[base.train_data[0][:32]] * 3)
    with pytest.raises(WorkloadError, match=r"expected \(inputs, targets\) — fix: .*step_fn"):
        train(w, Constant(0.1))


def test_an_optimizer_factory_that_ignores_lr_is_refused() -> None:
    w = blobs().with_options(
        optimizer=lambda model, lr: torch.optim.SGD(model.parameters(), lr=1e-3)
    )
    with pytest.raises(WorkloadError, match=r"optimizer factory ignores lr.*fix"):
        train(w, Constant(0.1))


def test_a_non_scalar_step_fn_fails_the_trial_with_that_reason() -> None:
    def per_token(model: nn.Module, batch) -> torch.Tensor:
        tokens = batch[0]
        logits = model(tokens[:, :-1])
        return nn.functional.cross_entropy(
            logits.flatten(0, 1), tokens[:, 1:].flatten(), reduction="none"
        )

    w = dataclasses.replace(tiny_lm(), step_fn=per_token)
    with pytest.raises(
        WorkloadError, match=r"step_fn must return a scalar loss tensor, got Tensor\[176\]"
    ):
        train(w, Constant(0.1))
    config = {
        "study": {
            "name": "lm",
            "workload": "tests.tiny_workloads:tiny_lm",
            "n_trials": 1,
            "epochs": 1,
        },
        "pruner": {"name": "none"},
        "tracking": {"update_ratio_every": 0},
    }
    prior = LRPrior(center=0.01, sigma_decades=0.5, low=1e-3, high=0.1)
    handle = StudyHandle.in_memory(parse_study_config(config), prior, w)
    handle.study.optimize(Objective(handle), n_trials=1, catch=(WorkloadError,))
    trial = handle.study.trials[0]
    assert trial.state == optuna.trial.TrialState.FAIL
    assert "step_fn must return a scalar loss tensor" in trial.user_attrs["fail_reason"]


# --- the range test honours the options and restores everything -------------------------------


class _DropoutMLP(nn.Module):
    """Dropout draws from torch's RNG, so a range test that left the RNG moved would show."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _sgd_groups(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    params = list(model.parameters())
    groups = [{"params": params[:2]}, {"params": params[2:], "lr": lr * 0.1}]
    return torch.optim.SGD(groups, lr=lr, momentum=0.9)


def _blobs_step(model: nn.Module, batch) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


RANGE_OPTIONS: dict[str, dict[str, Any]] = {
    "tensors": {},
    "dataloader": {"train_data": "loader"},
    "factory": {"train_data": "factory"},
    "param groups": {"optimizer": _sgd_groups},
    "adamw": {"optimizer": "adamw"},
    "adagrad": {"optimizer": "Adagrad"},
    "grad_clip": {"grad_clip": 0.1},
    "accumulate": {"accumulate": 2},
    "bf16": {"precision": "bf16"},
    "step_fn": {"step_fn": _blobs_step, "loss_fn": None, "metric": MEAN_LOSS},
}


def _workload(options: dict[str, Any]) -> Workload:
    base = dataclasses.replace(blobs(n=256, epochs=2), build_model=_DropoutMLP)
    data = options.get("train_data")
    x, y = base.train_data
    if data == "loader":
        options = {
            **options,
            "train_data": DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
        }
    elif data == "factory":
        options = {**options, "train_data": same_order_loader(x, y, 32)}
    return dataclasses.replace(base, **options)


def _state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any) -> dict[str, Any]:
    return copy.deepcopy(
        {
            "model": model.state_dict(),
            "modes": [m.training for m in model.modules()],
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "random": random.getstate(),
        }
    )


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(u, v) for u, v in zip(a, b, strict=True))
    return a == b


@pytest.mark.parametrize("name", [*RANGE_OPTIONS, "scaler"])
def test_range_test_restores_everything_under_each_option(name: str) -> None:
    if name == "bf16" and not BF16_CPU:
        pytest.skip("this torch build has no CPU autocast")
    w = _workload(RANGE_OPTIONS.get(name, {}))
    torch.manual_seed(3)
    model = w.build_model()
    optimizer = w.make_optimizer(model, lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu") if name == "scaler" else None
    # give the optimizer some state of its own, then leave the model in eval mode
    first = next(w.train_batches(32, seed=0, device=torch.device("cpu")).epoch(0))
    w.batch_loss(model, first).backward()
    optimizer.step()
    model.eval()
    np.random.seed(5)
    random.seed(5)
    before = _state(model, optimizer, scaler)
    result = range_test(
        model,
        optimizer,
        w.loss_fn,
        w.train_data,
        batch_size=32,
        repeats=2,
        num_iter=12,
        step_fn=w.step_fn,
        accumulate=w.accumulate,
        grad_clip=w.grad_clip,
        precision=w.precision,
        scaler=scaler,
        base_lr=0.01,
    )
    after = _state(model, optimizer, scaler)
    for key in before:
        assert _equal(before[key], after[key]), key
    assert all(len(c.lrs) == 12 for c in result.curves)
    assert result.curves[0].losses != result.curves[1].losses  # each repeat its own order
    torch.optim.lr_scheduler.StepLR(optimizer, 5)  # the optimizer is free again


@pytest.mark.parametrize("name", list(RANGE_OPTIONS))
def test_training_after_a_range_test_equals_training_without(name: str) -> None:
    if name == "bf16" and not BF16_CPU:
        pytest.skip("this torch build has no CPU autocast")
    w = _workload(RANGE_OPTIONS[name]).with_options(epochs=1)
    schedule = OneCycle(0.1, w.steps_per_epoch())
    plain = train(w, schedule, seed=2)
    range_test_workload(w, repeats=1, num_iter=15, seed=9)
    after = train(w, OneCycle(0.1, w.steps_per_epoch()), seed=2)
    assert _history(plain) == _history(after)


def test_the_range_test_keeps_group_ratios_and_records_the_options() -> None:
    seen: list[Any] = []
    w = blobs().with_options(
        optimizer=_recording(torch.optim.SGD, seen), accumulate=2, grad_clip=1.0
    )
    result = range_test_workload(w, repeats=1, num_iter=20, end_lr=1.0)
    assert seen and all(lrs[1] == pytest.approx(0.1 * lrs[0]) for lrs, _ in seen)
    assert result.curves[0].lrs[0] == pytest.approx(seen[0][0][0])
    assert {
        "accumulate": 2,
        "grad_clip": 1.0,
        "precision": "fp32",
    }.items() <= result.settings.items()
