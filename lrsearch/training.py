"""The training loop: one straight function, schedule-driven, with step and epoch callbacks.

It knows nothing of Optuna or MLflow; the search layer plugs those in through ``on_step``
and ``on_epoch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from lrsearch.schedules import MetricDriven
from lrsearch.torch_schedule import ScheduleDriver

if TYPE_CHECKING:
    from lrsearch.schedules import Schedule
    from lrsearch.workloads import Workload

__all__ = ["EpochInfo", "StepInfo", "TrainResult", "evaluate", "train"]


@dataclass(frozen=True)
class StepInfo:
    """What happened at one optimizer step (``update_ratio`` only every N steps)."""

    step: int
    epoch: int
    lr: float
    momentum: float | None
    loss: float
    update_ratio: float | None = None


@dataclass(frozen=True)
class EpochInfo:
    """The end of an epoch: ``epoch`` and ``step`` count what has been done so far."""

    epoch: int
    step: int
    train_loss: float
    val_loss: float
    val_metric: float


@dataclass
class TrainResult:
    """The outcome of :func:`train`.

    ``val_metric``/``val_loss`` are the last epoch's (NaN when the run diverged before one);
    ``stopped`` means a callback asked to stop early.
    """

    metric_name: str
    direction: str
    val_metric: float
    val_loss: float
    best_val_metric: float
    epochs: int
    steps: int
    diverged: bool
    stopped: bool
    seconds: float
    device: str
    diverge_reason: str | None = None
    history: list[EpochInfo] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


StepCallback = Callable[[StepInfo], None]
EpochCallback = Callable[[EpochInfo], "bool | None"]
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, workload: Workload, device: torch.device, batch_size: int = 1000
) -> tuple[float, float]:
    """Validation loss (mean over samples) and metric over the whole validation set."""
    model.eval()
    x, y = (t.to(device) for t in workload.val_data)
    outputs = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    loss = workload.loss_fn(outputs, y)
    metric = workload.metric.fn(outputs, y)
    return float(loss), float(metric)


def train(
    workload: Workload,
    schedule: Schedule,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    momentum: float | None = 0.9,
    weight_decay: float = 0.0,
    device: str | torch.device = "cpu",
    seed: int = 0,
    on_step: StepCallback | None = None,
    on_epoch: EpochCallback | None = None,
    update_ratio_every: int = 0,
    diverge_factor: float = 5.0,
    sync_every: int = 25,
) -> TrainResult:
    """Train ``workload`` under ``schedule``; deterministic under ``seed`` on CPU.

    Every step sets LR/momentum from the schedule, then forward, backward, optimizer step.
    Every epoch evaluates on the validation set and calls ``on_epoch``; a truthy return
    stops training (``stopped``). A :class:`~lrsearch.schedules.MetricDriven` schedule
    (``PlateauDecay``) gets the validation loss reported each epoch.

    Args:
        workload: the task.
        schedule: LR policy; its ``total_steps`` should be ``epochs * steps_per_epoch``.
        epochs: defaults to the workload's.
        batch_size: defaults to the workload's.
        momentum: the optimizer's momentum where the schedule has none.
        weight_decay: optimizer weight decay.
        device: ``"cpu"`` or ``"cuda:N"``.
        seed: seeds model initialisation and data order.
        on_step: called once per step, in order, in chunks of ``sync_every``.
        on_epoch: called after each epoch's validation.
        update_ratio_every: every N steps measure the update-to-weight ratio (0: never).
        diverge_factor: stop as diverged once the loss exceeds this multiple of its first
            value (0 disables; non-finite losses always stop).
        sync_every: steps between host syncs of the loss (< 1: once per epoch).

    Returns:
        A :class:`TrainResult`.
    """
    epochs, batch_size = _sizes(workload, epochs, batch_size)
    dev = torch.device(device)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = workload.build_model().to(dev)
    optimizer = workload.make_optimizer(
        model, lr=schedule.lr_at(0), momentum=momentum, weight_decay=weight_decay
    )
    loop = _Loop(
        model,
        optimizer,
        ScheduleDriver(optimizer, schedule),
        workload.loss_fn,
        data=(workload.train_data[0].to(dev), workload.train_data[1].to(dev)),
        batch_size=batch_size,
        steps_per_epoch=workload.steps_per_epoch(batch_size),
        order=torch.Generator().manual_seed(seed),
        divergence=_Divergence(diverge_factor),
        on_step=on_step,
        update_ratio_every=update_ratio_every,
        sync_every=sync_every,
    )
    history: list[EpochInfo] = []
    stopped = False
    for epoch in range(1, epochs + 1):
        train_loss, reason = _train_epoch(loop, epoch - 1)
        if reason is None:
            val_loss, val_metric = evaluate(model, workload, dev)
            reason = _non_finite_validation(val_loss, val_metric)
        if reason is None:
            if loop.metric_driven is not None:
                loop.metric_driven.report(val_loss)
            history.append(EpochInfo(epoch, loop.step, train_loss, val_loss, val_metric))
            stopped = on_epoch is not None and bool(on_epoch(history[-1]))
        if reason is not None or stopped:
            break
    loop.driver.detach()
    return _result(workload, history, loop.step, reason, stopped, start, dev)


# --- the pieces of one run ------------------------------------------------------------------


def _sizes(workload: Workload, epochs: int | None, batch_size: int | None) -> tuple[int, int]:
    """``epochs`` and ``batch_size``, the workload's where not given, checked."""
    epochs = workload.epochs if epochs is None else epochs
    batch_size = workload.batch_size if batch_size is None else batch_size
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs=}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size=}")
    return epochs, batch_size


class _Pending(NamedTuple):
    """A step whose loss is still on the device."""

    step: int
    lr: float
    momentum: float | None
    update_ratio: float | None


class _Divergence:
    """Decides when the loss has blown up: non-finite, or past a multiple of its first value."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self.initial: float | None = None

    def check(self, losses: list[float]) -> str | None:
        for loss in losses:
            if not math.isfinite(loss):
                return f"non-finite loss ({loss})"
            if self.initial is None:
                self.initial = abs(loss) or 1e-12
            if self.factor and loss > self.factor * self.initial:
                return f"loss {loss:.4g} exceeded {self.factor:g}x its initial value {self.initial:.4g}"
        return None


@dataclass
class _Loop:
    """What one :func:`train` call steps through; ``step`` counts optimizer steps so far."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    driver: ScheduleDriver
    loss_fn: LossFn
    data: tuple[torch.Tensor, torch.Tensor]
    batch_size: int
    steps_per_epoch: int
    order: torch.Generator
    divergence: _Divergence
    on_step: StepCallback | None
    update_ratio_every: int
    sync_every: int
    step: int = 0
    params: list[torch.Tensor] = field(init=False)
    metric_driven: MetricDriven | None = field(init=False)

    def __post_init__(self) -> None:
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        schedule = self.driver.schedule
        self.metric_driven = schedule if isinstance(schedule, MetricDriven) else None

    def schedule_step(self) -> int:
        """The schedule step in force: the optimizer step, or the reports made so far."""
        return self.step if self.metric_driven is None else self.metric_driven.n_reports


def _train_epoch(loop: _Loop, epoch: int) -> tuple[float, str | None]:
    """One pass over the training data in a fresh order.

    Returns:
        The epoch's mean training loss and why the loss diverged (None if it did not); a
        diverged epoch stops at once and its mean loss is NaN.
    """
    loop.model.train()
    device = loop.data[0].device
    order = torch.randperm(len(loop.data[0]), generator=loop.order).to(device)
    # Losses stay on the device and are read back once per `sync_every` steps: each read is
    # a CPU-GPU sync point, and one per step would stall the GPU.
    losses = torch.empty(loop.steps_per_epoch, device=device)
    for chunk in _chunks(loop.steps_per_epoch, loop.sync_every):
        pending = [_step(loop, order, b, losses) for b in chunk]
        reason = _flush(loop, pending, losses[chunk.start : chunk.stop].tolist(), epoch)
        if reason is not None:
            return math.nan, reason
    return float(losses.mean()), None


def _step(loop: _Loop, order: torch.Tensor, b: int, losses: torch.Tensor) -> _Pending:
    """Batch ``b`` of ``order``: set LR → forward → backward → optimizer step."""
    lr, momentum = loop.driver.apply(loop.schedule_step())
    idx = order[b * loop.batch_size : (b + 1) * loop.batch_size]
    loss = loop.loss_fn(loop.model(loop.data[0][idx]), loop.data[1][idx])
    loop.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    measure = loop.update_ratio_every > 0 and loop.step % loop.update_ratio_every == 0
    before = [p.detach().clone() for p in loop.params] if measure else None
    loop.optimizer.step()
    losses[b] = loss.detach()
    ratio = None if before is None else _update_ratio(before, loop.params)
    loop.step += 1
    return _Pending(loop.step - 1, lr, momentum, ratio)


def _flush(loop: _Loop, pending: list[_Pending], losses: list[float], epoch: int) -> str | None:
    """Hand a chunk of steps, now with their losses, to ``on_step``; check for divergence."""
    reason = loop.divergence.check(losses)
    if loop.on_step is not None:
        for p, loss in zip(pending, losses, strict=True):
            loop.on_step(StepInfo(p.step, epoch, p.lr, p.momentum, loss, p.update_ratio))
    return reason


def _chunks(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive runs of ``size`` (a single run if ``size`` < 1)."""
    size = size if size > 0 else max(n, 1)
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _update_ratio(before: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> float:
    """||theta_new - theta_old|| / ||theta_old|| over all parameters."""
    delta = torch.stack(
        [(p.detach() - b).pow(2).sum() for p, b in zip(params, before, strict=True)]
    )
    norm = torch.stack([b.pow(2).sum() for b in before])
    return float(delta.sum().sqrt() / norm.sum().sqrt().clamp_min(1e-12))


def _non_finite_validation(val_loss: float, val_metric: float) -> str | None:
    if math.isfinite(val_loss) and math.isfinite(val_metric):
        return None
    return f"non-finite validation loss/metric ({val_loss}, {val_metric})"


def _result(
    workload: Workload,
    history: list[EpochInfo],
    steps: int,
    reason: str | None,
    stopped: bool,
    start: float,
    device: torch.device,
) -> TrainResult:
    """The :class:`TrainResult` of a run that recorded ``history`` and took ``steps`` steps."""
    pick = max if workload.metric.direction == "maximize" else min
    last = history[-1] if history and reason is None else None
    return TrainResult(
        metric_name=workload.metric.name,
        direction=workload.metric.direction,
        val_metric=last.val_metric if last else math.nan,
        val_loss=last.val_loss if last else math.nan,
        best_val_metric=pick((e.val_metric for e in history), default=math.nan),
        epochs=len(history),
        steps=steps,
        diverged=reason is not None,
        stopped=stopped,
        seconds=time.perf_counter() - start,
        device=str(device),
        diverge_reason=reason,
        history=history,
    )
