"""The LR range test: ramp the LR every optimizer step until the loss explodes, several times.

Each repeat starts from the same weights and optimizer state with its own data order, so the
spread between repeats says how much to trust the suggestions. Afterwards the model (weights
and train/eval modes), the optimizer, the gradient scaler and every RNG (torch's CPU and CUDA
generators, numpy's, Python's ``random``) are exactly as before the test.

The steps are a workload's own (:class:`~lrsearch.train_step.TrainStep`): its data (tensors or
loaders), loss or ``step_fn``, micro-batches per step, gradient clipping and precision.
"""

from __future__ import annotations

import copy
import csv
import functools
import io
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lrsearch import interrupt
from lrsearch.errors import WorkloadError
from lrsearch.prior import LRPrior, optimizer_family
from lrsearch.schedules import ExpRamp, LinearRamp
from lrsearch.suggest import (
    CurveSuggestions,
    DivergenceWatch,
    LossSmoother,
    SuggestionSummary,
    repeat_spread,
    suggest,
    summarize,
)
from lrsearch.torch_schedule import ScheduleDriver
from lrsearch.train_step import TrainStep
from lrsearch.workloads import Batches, compute_loss

if TYPE_CHECKING:
    from lrsearch.workloads import Workload

__all__ = [
    "DEFAULT_BUDGET_FRACTION",
    "MIN_RAMP_STEPS",
    "RangeCurve",
    "RangeTestResult",
    "default_beta",
    "fit_budget",
    "range_test",
    "range_test_workload",
]

# The share of a study's optimizer steps its range test may cost, by default.
DEFAULT_BUDGET_FRACTION = 0.05
# The shortest ramp the budget may cut a repeat to: 8 decades at about six points each.
MIN_RAMP_STEPS = 50

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
StepFn = Callable[[torch.nn.Module, Any], torch.Tensor]


@dataclass(frozen=True)
class RangeCurve:
    """One repeat: the LR and raw/smoothed loss per step, and what it suggests."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestions: CurveSuggestions


@dataclass
class RangeTestResult:
    """All repeats, the suggestions summarised over them, and the prior they give.

    ``settings`` records how the test ran (ramp, LRs, iterations, repeats, seed, ...).
    """

    curves: list[RangeCurve]
    summary: dict[str, SuggestionSummary]
    prior: LRPrior
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``suggestions`` (median, spread, per-repeat values), ``prior``, curves."""
        return {
            "suggestions": {name: s.to_dict() for name, s in self.summary.items()},
            "prior": self.prior.to_dict(),
            "settings": self.settings,
            "seconds": self.seconds,
            "repeats": [
                {
                    "suggestions": c.suggestions.to_dict(),
                    "lrs": c.lrs,
                    "losses": _json_floats(c.losses),
                    "smoothed": _json_floats(c.smoothed),
                }
                for c in self.curves
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestResult:
        curves = [
            RangeCurve(
                lrs=list(r["lrs"]),
                losses=[_float(v) for v in r["losses"]],
                smoothed=[_float(v) for v in r["smoothed"]],
                suggestions=CurveSuggestions.from_dict(r["suggestions"]),
            )
            for r in data.get("repeats", [])
        ]
        return cls(
            curves=curves,
            summary={k: SuggestionSummary.from_dict(v) for k, v in data["suggestions"].items()},
            prior=LRPrior.from_dict(data["prior"]),
            settings=dict(data.get("settings", {})),
            seconds=float(data.get("seconds", 0.0)),
        )

    def to_csv(self) -> str:
        """Long format: ``repeat, step, lr, loss, smoothed`` (one row per step and repeat)."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["repeat", "step", "lr", "loss", "smoothed"])
        for r, curve in enumerate(self.curves):
            for step, (lr, loss, sm) in enumerate(
                zip(curve.lrs, curve.losses, curve.smoothed, strict=True)
            ):
                writer.writerow([r, step, f"{lr:.6g}", f"{loss:.6g}", f"{sm:.6g}"])
        return out.getvalue()


def _json_floats(values: list[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def _float(value: float | None) -> float:
    return math.inf if value is None else float(value)


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
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    # CUDA's generators only where CUDA is up: asking for them would start it on a CPU run
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        model.load_state_dict(model_state)
        for module, mode in zip(model.modules(), modes, strict=True):
            module.training = mode
        optimizer.load_state_dict(optim_state)
        if scaler is not None and scaler_state is not None:
            scaler.load_state_dict(scaler_state)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _endless(source: Batches) -> Iterator[Any]:
    """The source's batches, epoch after epoch, for as long as the ramp needs."""
    for epoch in itertools.count():
        empty = True
        for batch in source.epoch(epoch):
            empty = False
            yield batch
        if empty:
            raise WorkloadError("the training data yielded no batches — fix: give it some")


@dataclass(frozen=True)
class _RampPlan:
    """How each repeat ramps: the schedule, micro-batches per step, smoothing and stopping."""

    schedule: ExpRamp | LinearRamp
    accumulate: int
    beta: float
    diverge_factor: float
    skip_start: int
    base_lr: float | None


def _one_repeat(
    step: TrainStep, source: Batches, ramp: _RampPlan
) -> tuple[list[float], list[float], list[float]]:
    """Run the ramp once; stop at divergence. Returns the LRs, raw and smoothed losses."""
    smoother = LossSmoother(ramp.beta)
    watch = DivergenceWatch(factor=ramp.diverge_factor, skip_start=ramp.skip_start)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    # the CPU generator only (a shuffling DataLoader's order): CUDA's would outlive the restore
    torch.default_generator.manual_seed(source.seed)
    batches = _endless(source)
    driver = ScheduleDriver(step.optimizer, ramp.schedule, base_lr=ramp.base_lr)
    step.model.train()
    try:
        for i in range(ramp.schedule.total_steps or 0):
            interrupt.check()  # Ctrl-C inside deferred_interrupts: stop between steps
            micro = list(itertools.islice(batches, ramp.accumulate))
            lr, _ = driver.apply(i)
            loss = step.run(micro)
            lrs.append(lr)
            losses.append(loss.item())  # one sync per step: the stop decision needs the value
            smoothed.append(smoother.add(losses[-1]))
            if watch.add(smoothed[-1]):
                break
    finally:
        driver.detach()
    return lrs, losses, smoothed


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

    Returns:
        A :class:`RangeTestResult`.
    """
    _check(start_lr=start_lr, end_lr=end_lr, repeats=repeats, ramp=ramp, batch_size=batch_size)
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
    if n_iter < 10:
        raise ValueError(f"num_iter must be >= 10, got {num_iter=}")
    beta = default_beta(n_iter) if beta is None else beta
    schedule = (ExpRamp if ramp == "exp" else LinearRamp)(start_lr, end_lr, n_iter)
    plan = _RampPlan(schedule, accumulate, beta, diverge_factor, skip_start, base_lr)
    started = time.perf_counter()
    runs: list[tuple[list[float], list[float], list[float]]] = []
    for r in range(repeats):
        source = Batches(data, batch_size=batch_size, seed=seed + r, device=device)
        with _restored(model, optimizer, scaler):
            runs.append(_one_repeat(make_step(), source, plan))
        if on_repeat is not None:
            on_repeat(r + 1, repeats)
    # the repeats' spread is the smoothed loss's noise as measured: every reading is judged by it
    noise = repeat_spread([smoothed for _, _, smoothed in runs])
    curves = [
        RangeCurve(
            lrs,
            losses,
            smoothed,
            suggest(
                lrs,
                losses,
                skip_start=skip_start,
                skip_end=skip_end,
                beta=beta,
                diverge_factor=diverge_factor,
                noise=noise,
            ),
        )
        for lrs, losses, smoothed in runs
    ]
    summary = summarize([c.suggestions for c in curves])
    settings = {
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_iter": n_iter,
        "ramp": ramp,
        "repeats": repeats,
        "beta": beta,
        "diverge_factor": diverge_factor,
        "skip_start": skip_start,
        "skip_end": skip_end,
        "seed": seed,
        "batch_size": batch_size,
        "accumulate": accumulate,
        "grad_clip": grad_clip,
        "precision": precision,
        "repeat_spread": noise,
        "steps": sum(len(lrs) for lrs, _, _ in runs),
    }
    return RangeTestResult(
        curves, summary, LRPrior.from_suggestions(summary), settings, time.perf_counter() - started
    )


def default_beta(num_iter: int) -> float:
    """The EMA decay for a ramp of ``num_iter`` steps: fastai's 0.98 from 100 steps on; a
    shorter ramp averages over the same share of its steps (``1 - 2 / num_iter``), so its
    smoothing lags by the same number of decades and the calibrated prior still fits."""
    return min(0.98, 1.0 - 2.0 / num_iter)


def fit_budget(
    budget_steps: int,
    *,
    per_epoch: int,
    repeats: int = 3,
    num_iter: int | None = None,
    fraction: float = DEFAULT_BUDGET_FRACTION,
) -> tuple[int, int]:
    """Repeats and ramp length for a range test that costs at most ``fraction`` of a study.

    The wanted test is ``repeats`` ramps of ``num_iter`` steps (default ``max(100, one
    epoch)``). Where that costs more than ``fraction * budget_steps`` optimizer steps, the
    ramps are shortened (never below ``MIN_RAMP_STEPS``, what a readable curve needs), then
    fewer repeats are run. A budget too small even for one shortest ramp gets that ramp, over
    budget: a test with fewer steps reads nothing.

    Returns:
        ``(repeats, num_iter)``.

    Example:
        >>> fit_budget(16 * 8 * 30, per_epoch=30)  # 5% of 3,840 steps is 192
        (3, 64)
        >>> fit_budget(2048, per_epoch=10)  # 102 steps: two ramps of 51
        (2, 51)
    """
    if budget_steps < 1:
        raise ValueError(f"budget_steps must be >= 1, got {budget_steps=}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction=}")
    want = num_iter if num_iter is not None else max(100, per_epoch)
    allowed = int(fraction * budget_steps)
    for r in range(repeats, 0, -1):
        n = min(want, allowed // r)
        if n >= min(MIN_RAMP_STEPS, want):
            return r, n
    return 1, min(MIN_RAMP_STEPS, want)


def _check(*, start_lr: float, end_lr: float, repeats: int, ramp: str, batch_size: int) -> None:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr=}, {end_lr=}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats=}")
    if ramp not in ("exp", "linear"):
        raise ValueError(f"ramp must be 'exp' or 'linear', got {ramp=}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size=}")


def range_test_workload(
    workload: Workload,
    *,
    device: str = "cpu",
    seed: int = 0,
    momentum: float | None = 0.9,
    weight_decay: float = 0.0,
    batch_size: int | None = None,
    **options: Any,
) -> RangeTestResult:
    """Range-test a workload's freshly initialised model (initialised under ``seed``).

    The test runs the workload's own steps: its data, loss or ``step_fn``, optimizer (param
    groups included), ``accumulate``, ``grad_clip`` and ``precision``. ``options`` go to
    :func:`range_test` and win over the workload's.
    """
    dev = torch.device(device)
    batch_size = batch_size or workload.batch_size
    if options.get("num_iter") is None:
        options["num_iter"] = max(100, workload.steps_per_epoch(batch_size))
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
        **{**own, **options},
    )
    family = optimizer_family(workload.optimizer_name)
    result.prior = LRPrior.from_suggestions(result.summary, family=family)
    result.settings.update(
        workload=workload.name, device=str(dev), momentum=momentum, optimizer_family=family
    )
    return result
