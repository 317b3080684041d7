"""The range test of a model and optimizer (and of a workload): the built-in loop's ramps.

Each repeat starts from the same weights and optimizer state with its own data order, so the
spread between repeats says how much to trust the suggestions. Afterwards the model (weights
and train/eval modes), the optimizer, the gradient scaler and every RNG (torch's CPU and CUDA
generators, numpy's, Python's ``random``) are exactly as before the test.

The steps are a workload's own (:class:`~lrsearch.train_step.TrainStep`): its data (tensors or
loaders), loss or ``step_fn``, micro-batches per step, gradient clipping and precision.
"""

from __future__ import annotations

import copy
import functools
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from lrsearch import interrupt
from lrsearch.errors import WorkloadError
from lrsearch.prior import optimizer_family
from lrsearch.range_test._ramp import RampCurve, RampPlan, check_ramp, read_ramps, rng_restored
from lrsearch.torch_schedule import ScheduleDriver
from lrsearch.train_step import TrainStep
from lrsearch.workloads import Batches, compute_loss

if TYPE_CHECKING:
    from lrsearch.range_test._result import RangeTestResult
    from lrsearch.workloads import Workload

__all__ = ["range_test", "range_test_workload"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepFn = Callable[[torch.nn.Module, Any], torch.Tensor]


@contextmanager
def _restored(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None = None,
) -> Iterator[None]:
    """Put model, optimizer, scaler and every RNG back exactly as they were, whatever happens."""
    model_state = copy.deepcopy(model.state_dict())
    modes = [m.training for m in model.modules()]
    optim_state = copy.deepcopy(optimizer.state_dict())
    scaler_state = copy.deepcopy(scaler.state_dict()) if scaler is not None else None
    try:
        with rng_restored():
            yield
    finally:
        model.load_state_dict(model_state)
        for module, mode in zip(model.modules(), modes, strict=True):
            module.training = mode
        optimizer.load_state_dict(optim_state)
        if scaler is not None and scaler_state is not None:
            scaler.load_state_dict(scaler_state)


def _endless(source: Batches) -> Iterator[Any]:
    """The source's batches, epoch after epoch, for as long as the ramp needs."""
    for epoch in itertools.count():
        empty = True
        for batch in source.epoch(epoch):
            empty = False
            yield batch
        if empty:
            raise WorkloadError("the training data yielded no batches — fix: give it some")


def _one_repeat(
    step: TrainStep, source: Batches, plan: RampPlan, accumulate: int, base_lr: float | None
) -> RampCurve:
    """Run the ramp once; stop at divergence."""
    curve = RampCurve(plan)
    # the CPU generator only (a shuffling DataLoader's order): CUDA's would outlive the restore
    torch.default_generator.manual_seed(source.seed)
    batches = _endless(source)
    driver = ScheduleDriver(step.optimizer, plan.schedule, base_lr=base_lr)
    step.model.train()
    try:
        for i in range(plan.num_iter):
            interrupt.check()  # Ctrl-C inside deferred_interrupts: stop between steps
            micro = list(itertools.islice(batches, accumulate))
            lr, _ = driver.apply(i)
            loss = step.run(micro)
            # one sync per step: the stop decision needs the value
            if curve.add(lr, loss.item()):
                break
    finally:
        driver.detach()
    return curve


def range_test(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn | None,
    data: Any,
    *,
    batch_size: int,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int | None = None,
    ramp: str = "exp",
    repeats: int = 3,
    beta: float | None = None,
    diverge_factor: float = 4.0,
    skip_start: int = 10,
    skip_end: int = 5,
    seed: int = 0,
    on_repeat: Callable[[int, int], None] | None = None,
    step_fn: StepFn | None = None,
    accumulate: int = 1,
    grad_clip: float | None = None,
    precision: str = "fp32",
    scaler: torch.amp.GradScaler | None = None,
    base_lr: float | None = None,
    plan: RampPlan | None = None,
) -> RangeTestResult:
    """Run the LR range test ``repeats`` times and turn it into suggestions and a prior.

    Args:
        model: the model; its weights and train/eval modes are restored afterwards.
        optimizer: drives ``model``; must not be driven by an LR scheduler. Its state is
            restored afterwards; its param groups keep their LR ratios during the ramp.
        loss_fn: ``loss_fn(outputs, targets)`` (None with ``step_fn``).
        data: ``(inputs, targets)`` training tensors, a re-iterable of batches (a
            DataLoader) or a factory ``(epoch, seed) -> batches``, as a workload's.
        batch_size: mini-batch size (tensor data only; a loader has its own).
        start_lr: first LR of the ramp.
        end_lr: last LR of the ramp.
        num_iter: optimizer steps per repeat; default ``max(100, one epoch)``.
        ramp: ``"exp"`` (geometric, the default) or ``"linear"``.
        repeats: runs with different data orders from the same initial state.
        beta: EMA smoothing factor; None: ``min(0.98, 1 - 2 / num_iter)``, so a short ramp
            is smoothed over the same share of its length (and decades) as a 100-step one.
        diverge_factor: stop once the smoothed loss exceeds the best by this factor.
        skip_start: steps ignored at the start, for divergence and suggestions.
        skip_end: steps ignored at the end, for suggestions.
        seed: seeds the data orders: repeat r shuffles tensors and calls a factory with
            ``seed + r``, and seeds torch's CPU generator with it (a shuffling DataLoader).
        on_repeat: progress callback ``(repeat_done, repeats)``.
        step_fn: ``step_fn(model, batch) -> scalar loss``, instead of ``loss_fn``.
        accumulate: micro-batches per optimizer step.
        grad_clip: max global gradient norm (None: off).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"``.
        scaler: a gradient scaler to step through (restored afterwards); fp16 gets a fresh
            one per repeat where not given.
        base_lr: the LR the optimizer was built at, which its groups' ratios are taken
            from (default: the first group's LR).
        plan: the ramp, its readings and its prior, all in one (a study's); it replaces
            ``start_lr`` ... ``skip_end``.

    Returns:
        A :class:`RangeTestResult`.
    """
    check_ramp(start_lr=start_lr, end_lr=end_lr, repeats=repeats, ramp=ramp, batch_size=batch_size)
    device = next(model.parameters()).device
    make_step = functools.partial(
        TrainStep,
        model,
        optimizer,
        functools.partial(compute_loss, loss_fn=loss_fn, step_fn=step_fn),
        device=device,
        grad_clip=grad_clip,
        precision=precision,
        scaler=scaler,
    )
    per_epoch = Batches(data, batch_size=batch_size, seed=seed, device=device).per_epoch
    n_iter = num_iter if num_iter is not None else max(100, (per_epoch or 0) // accumulate)
    plan = plan or RampPlan.make(
        start_lr=start_lr,
        end_lr=end_lr,
        num_iter=n_iter,
        ramp=ramp,
        repeats=repeats,
        beta=beta,
        diverge_factor=diverge_factor,
        skip_start=skip_start,
        skip_end=skip_end,
    )
    started = time.perf_counter()
    runs: list[RampCurve] = []
    for r in range(plan.repeats):
        source = Batches(data, batch_size=batch_size, seed=seed + r, device=device)
        with _restored(model, optimizer, scaler):
            runs.append(_one_repeat(make_step(), source, plan, accumulate, base_lr))
        if on_repeat is not None:
            on_repeat(r + 1, plan.repeats)
    settings = {
        "seed": seed,
        "batch_size": batch_size,
        "accumulate": accumulate,
        "grad_clip": grad_clip,
        "precision": precision,
    }
    return read_ramps(plan, runs, settings, time.perf_counter() - started)


_PLAN_KEYS = (
    "start_lr",
    "end_lr",
    "ramp",
    "repeats",
    "beta",
    "diverge_factor",
    "skip_start",
    "skip_end",
)


def range_test_workload(
    workload: Workload,
    *,
    device: str = "cpu",
    seed: int = 0,
    momentum: float | None = 0.9,
    weight_decay: float = 0.0,
    batch_size: int | None = None,
    plan: RampPlan | None = None,
    **options: Any,
) -> RangeTestResult:
    """Range-test a workload's freshly initialised model (initialised under ``seed``).

    The test runs the workload's own steps: its data, loss or ``step_fn``, optimizer (param
    groups included), ``accumulate``, ``grad_clip`` and ``precision``. ``options`` go to
    :func:`range_test` and win over the workload's; ``plan`` (a study's) sets the ramp, its
    readings and its prior at once.
    """
    dev = torch.device(device)
    batch_size = batch_size or workload.batch_size
    family = optimizer_family(workload.optimizer_name)
    if plan is None:
        num_iter = options.pop("num_iter", None) or max(100, workload.steps_per_epoch(batch_size))
        keys = [k for k in options if k in _PLAN_KEYS]
        plan = RampPlan.make(num_iter=num_iter, **{k: options.pop(k) for k in keys})
    torch.manual_seed(seed)
    model = workload.build_model().to(dev)
    lr = 1e-7
    optimizer = workload.make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    own = {
        "step_fn": workload.step_fn,
        "accumulate": workload.accumulate,
        "grad_clip": workload.grad_clip,
        "precision": workload.precision,
        "base_lr": lr if workload.optimizer_takes_lr else None,
    }
    result = range_test(
        model,
        optimizer,
        workload.loss_fn,
        workload.train_data,
        batch_size=batch_size,
        seed=seed,
        plan=plan.with_family(family),
        **{**own, **options},
    )
    result.settings.update(workload=workload.name, device=str(dev), momentum=momentum)
    return result
