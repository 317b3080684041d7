"""The training loop: one straight function, schedule-driven, with step and epoch callbacks.

It knows nothing of Optuna or MLflow; the search layer plugs those in through ``on_step``
and ``on_epoch``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import torch

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


def _update_ratio(before: Sequence[torch.Tensor], params: Sequence[torch.Tensor]) -> float:
    """||theta_new - theta_old|| / ||theta_old|| over all parameters."""
    delta = torch.stack(
        [(p.detach() - b).pow(2).sum() for p, b in zip(params, before, strict=True)]
    )
    norm = torch.stack([b.pow(2).sum() for b in before])
    return float(delta.sum().sqrt() / norm.sum().sqrt().clamp_min(1e-12))


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
    stops training (``stopped``). Metric-driven schedules (``PlateauDecay``) get the
    validation loss reported each epoch.

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
        sync_every: steps between host syncs of the loss.

    Returns:
        A :class:`TrainResult`.
    """
    epochs = workload.epochs if epochs is None else epochs
    batch_size = workload.batch_size if batch_size is None else batch_size
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs=}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size=}")
    dev = torch.device(device)
    start = time.perf_counter()

    torch.manual_seed(seed)
    model = workload.build_model().to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = workload.make_optimizer(
        model, lr=schedule.lr_at(0), momentum=momentum, weight_decay=weight_decay
    )
    driver = ScheduleDriver(optimizer, schedule)
    metric_driven = hasattr(schedule, "report")
    x, y = (t.to(dev) for t in workload.train_data)
    order_gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = workload.steps_per_epoch(batch_size)
    divergence = _Divergence(diverge_factor)
    history: list[EpochInfo] = []
    step, reason, stopped = 0, None, False
    best = -math.inf if workload.metric.direction == "maximize" else math.inf

    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=order_gen).to(dev)
        # Losses stay on the device and are read back every `sync_every` steps: each read is
        # a CPU-GPU sync point, and one per step would stall the GPU.
        losses = torch.empty(steps_per_epoch, device=dev)
        pending: list[tuple[int, float, float | None, float | None]] = []
        for b in range(steps_per_epoch):
            lr, mom = driver.apply(len(schedule.history) if metric_driven else step)  # type: ignore[attr-defined]
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = workload.loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            measure = update_ratio_every > 0 and step % update_ratio_every == 0
            before = [p.detach().clone() for p in params] if measure else None
            optimizer.step()
            losses[b] = loss.detach()
            ratio = _update_ratio(before, params) if before is not None else None
            pending.append((step, lr, mom, ratio))
            step += 1
            if len(pending) == sync_every or b == steps_per_epoch - 1:
                reason = _flush(pending, losses, b, epoch, divergence, on_step)
                pending = []
                if reason:
                    break
        if reason:
            break
        train_loss = float(losses.mean())
        val_loss, val_metric = evaluate(model, workload, dev)
        if not (math.isfinite(val_loss) and math.isfinite(val_metric)):
            reason = f"non-finite validation loss/metric ({val_loss}, {val_metric})"
            break
        best = (
            max(best, val_metric)
            if workload.metric.direction == "maximize"
            else min(best, val_metric)
        )
        if metric_driven:
            schedule.report(val_loss)  # type: ignore[attr-defined]
        info = EpochInfo(epoch + 1, step, train_loss, val_loss, val_metric)
        history.append(info)
        if on_epoch is not None and on_epoch(info):
            stopped = True
            break

    driver.detach()
    last = history[-1] if history and reason is None else None
    return TrainResult(
        metric_name=workload.metric.name,
        direction=workload.metric.direction,
        val_metric=last.val_metric if last else math.nan,
        val_loss=last.val_loss if last else math.nan,
        best_val_metric=best if math.isfinite(best) else math.nan,
        epochs=len(history),
        steps=step,
        diverged=reason is not None,
        stopped=stopped,
        seconds=time.perf_counter() - start,
        device=str(dev),
        diverge_reason=reason,
        history=history,
    )


def _flush(
    pending: list[tuple[int, float, float | None, float | None]],
    losses: torch.Tensor,
    last_index: int,
    epoch: int,
    divergence: _Divergence,
    on_step: StepCallback | None,
) -> str | None:
    """Read a chunk of step losses back, hand them to ``on_step``, check for divergence."""
    values = losses[last_index + 1 - len(pending) : last_index + 1].tolist()
    reason = divergence.check(values)
    if on_step is not None:
        for (step, lr, mom, ratio), loss in zip(pending, values, strict=True):
            on_step(StepInfo(step, epoch, lr, mom, loss, ratio))
    return reason
