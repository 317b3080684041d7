"""The LR range test: ramp the LR every mini-batch until the loss explodes, several times.

Each repeat starts from the same weights and optimizer state with its own data order, so the
spread between repeats says how much to trust the suggestions. Afterwards the model, the
optimizer and every RNG are exactly as before the test.
"""

from __future__ import annotations

import copy
import csv
import io
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

from lrsearch.prior import LRPrior
from lrsearch.schedules import ExpRamp, LinearRamp
from lrsearch.suggest import (
    CurveSuggestions,
    DivergenceWatch,
    LossSmoother,
    SuggestionSummary,
    suggest,
    summarize,
)
from lrsearch.torch_schedule import ScheduleDriver

if TYPE_CHECKING:
    from lrsearch.workloads import Workload

__all__ = ["RangeCurve", "RangeTestResult", "range_test", "range_test_workload"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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
def _restored(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Iterator[None]:
    """Put model, optimizer and every RNG back exactly as they were, whatever happens."""
    model_state = copy.deepcopy(model.state_dict())
    optim_state = copy.deepcopy(optimizer.state_dict())
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        model.load_state_dict(model_state)
        optimizer.load_state_dict(optim_state)
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def _one_repeat(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    ramp: ExpRamp | LinearRamp,
    batch_size: int,
    order: torch.Generator,
    beta: float,
    diverge_factor: float,
    skip_start: int,
) -> tuple[list[float], list[float], list[float]]:
    """Run the ramp once; stop at divergence. Returns the LRs, raw and smoothed losses."""
    x, y = data
    smoother = LossSmoother(beta)
    watch = DivergenceWatch(factor=diverge_factor, skip_start=skip_start)
    driver = ScheduleDriver(optimizer, ramp)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    perm = torch.randperm(len(x), generator=order).to(x.device)
    cursor = 0
    model.train()
    try:
        for step in range(ramp.total_steps or 0):
            if cursor + batch_size > len(x):
                perm, cursor = torch.randperm(len(x), generator=order).to(x.device), 0
            idx = perm[cursor : cursor + batch_size]
            cursor += batch_size
            lr, _ = driver.apply(step)
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
    loss_fn: LossFn,
    data: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_iter: int | None = None,
    ramp: str = "exp",
    repeats: int = 3,
    beta: float = 0.98,
    diverge_factor: float = 4.0,
    skip_start: int = 10,
    skip_end: int = 5,
    seed: int = 0,
    on_repeat: Callable[[int, int], None] | None = None,
) -> RangeTestResult:
    """Run the LR range test ``repeats`` times and turn it into suggestions and a prior.

    Args:
        model: the model, on the device of ``data``; its weights are restored afterwards.
        optimizer: drives ``model``; must not be driven by an LR scheduler. Its state is
            restored afterwards.
        loss_fn: ``loss_fn(outputs, targets)``.
        data: ``(inputs, targets)`` training tensors.
        batch_size: mini-batch size.
        start_lr: first LR of the ramp.
        end_lr: last LR of the ramp.
        num_iter: steps per repeat; default ``max(100, one epoch)``.
        ramp: ``"exp"`` (geometric, the default) or ``"linear"``.
        repeats: runs with different data orders from the same initial state.
        beta: EMA smoothing factor.
        diverge_factor: stop once the smoothed loss exceeds the best by this factor.
        skip_start: steps ignored at the start, for divergence and suggestions.
        skip_end: steps ignored at the end, for suggestions.
        seed: seeds the data orders (repeat r uses ``seed + r``).
        on_repeat: progress callback ``(repeat_done, repeats)``.

    Returns:
        A :class:`RangeTestResult`.
    """
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr=}, {end_lr=}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats=}")
    if ramp not in ("exp", "linear"):
        raise ValueError(f"ramp must be 'exp' or 'linear', got {ramp=}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size=}")
    n_iter = num_iter if num_iter is not None else max(100, len(data[0]) // batch_size)
    if n_iter < 10:
        raise ValueError(f"num_iter must be >= 10, got {num_iter=}")
    schedule = (ExpRamp if ramp == "exp" else LinearRamp)(start_lr, end_lr, n_iter)
    started = time.perf_counter()
    curves: list[RangeCurve] = []
    for r in range(repeats):
        with _restored(model, optimizer):
            lrs, losses, smoothed = _one_repeat(
                model,
                optimizer,
                loss_fn,
                data,
                ramp=schedule,
                batch_size=batch_size,
                order=torch.Generator().manual_seed(seed + r),
                beta=beta,
                diverge_factor=diverge_factor,
                skip_start=skip_start,
            )
        found = suggest(
            lrs,
            losses,
            skip_start=skip_start,
            skip_end=skip_end,
            beta=beta,
            diverge_factor=diverge_factor,
        )
        curves.append(RangeCurve(lrs, losses, smoothed, found))
        if on_repeat is not None:
            on_repeat(r + 1, repeats)
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
    }
    return RangeTestResult(
        curves, summary, LRPrior.from_suggestions(summary), settings, time.perf_counter() - started
    )


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
    """Range-test a workload's freshly initialised model (initialised under ``seed``)."""
    dev = torch.device(device)
    torch.manual_seed(seed)
    model = workload.build_model().to(dev)
    optimizer = workload.make_optimizer(
        model, lr=1e-7, momentum=momentum, weight_decay=weight_decay
    )
    data = (workload.train_data[0].to(dev), workload.train_data[1].to(dev))
    result = range_test(
        model,
        optimizer,
        workload.loss_fn,
        data,
        batch_size=batch_size or workload.batch_size,
        seed=seed,
        **options,
    )
    result.settings.update(workload=workload.name, device=str(dev), momentum=momentum)
    return result
