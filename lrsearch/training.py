"""The training loop: one straight function, schedule-driven, with step and epoch callbacks.

It knows nothing of Optuna or MLflow; the search layer plugs those in through ``on_step``
and ``on_epoch``.
"""

from __future__ import annotations

import copy
import functools
import itertools
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import numpy as np
import torch

from lrsearch.errors import WorkloadError
from lrsearch.lrfree import OptimizerModes, optimizer_modes
from lrsearch.schedules import MetricDriven
from lrsearch.torch_schedule import ScheduleDriver
from lrsearch.train_step import TrainStep, autocast_for
from lrsearch.workloads import split_batch

if TYPE_CHECKING:
    from lrsearch.schedules import Schedule
    from lrsearch.workloads import Batches, Workload

__all__ = ["EpochInfo", "Snapshot", "StepInfo", "TrainResult", "TrainStep", "evaluate", "train"]


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
    ``test_metric``/``test_loss`` score the final model once on the workload's test split
    (NaN without one, or when the run diverged); ``stopped`` means a callback asked to stop
    early.
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
    test_metric: float = math.nan
    test_loss: float = math.nan
    history: list[EpochInfo] = field(default_factory=list)
    resumed_at_step: int = 0  # steps of a resumed run's snapshot: trained by another run

    @property
    def steps_trained(self) -> int:
        """Optimizer steps this call trained (``steps`` less a resumed snapshot's)."""
        return self.steps - self.resumed_at_step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Snapshot:
    """A run at the end of epoch ``epoch``: all :func:`train` needs to go on from there.

    Model, optimizer and gradient-scaler state (on the CPU), the epochs so far, the divergence
    baseline, and the random state that decides what comes next (torch's generators, the
    batch-order generator of tensor data, and Python's and NumPy's global generators, which a
    user's data pipeline may draw from). :func:`train` with ``resume=`` continues it exactly
    (bit for bit on the CPU) under any schedule that agrees with the original up to ``step``:
    e.g. one-cycle schedules that differ only in their annihilation tail.
    """

    epoch: int
    step: int
    model: dict[str, Any]
    optimizer: dict[str, Any]
    scaler: dict[str, Any] | None
    history: tuple[EpochInfo, ...]
    divergence_initial: float | None
    rng: torch.Tensor
    cuda_rng: tuple[torch.Tensor, ...] | None
    order: torch.Tensor | None
    py_rng: Any = None  # random.getstate()
    np_rng: Any = None  # np.random.get_state()


def _to_cpu(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: _to_cpu(v) for k, v in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(_to_cpu(v) for v in state)
    return state


def _snapshot(loop: _Loop, history: list[EpochInfo], dev: torch.device) -> Snapshot:
    order = getattr(loop.batches, "order", None)
    return Snapshot(
        epoch=len(history),
        step=loop.step,
        model=_to_cpu(loop.model.state_dict()),
        optimizer=_to_cpu(loop.stepper.optimizer.state_dict()),
        scaler=None if loop.stepper.scaler is None else loop.stepper.scaler.state_dict(),
        history=tuple(history),
        divergence_initial=loop.divergence.initial,
        rng=torch.get_rng_state(),
        cuda_rng=tuple(torch.cuda.get_rng_state_all()) if dev.type == "cuda" else None,
        order=order.get_state() if isinstance(order, torch.Generator) else None,
        py_rng=random.getstate(),
        np_rng=np.random.get_state(),
    )


def _restore(loop: _Loop, snapshot: Snapshot, dev: torch.device) -> list[EpochInfo]:
    if loop.metric_driven is not None:
        raise WorkloadError("a metric-driven schedule (plateau) cannot resume from a snapshot")
    loop.model.load_state_dict(snapshot.model)
    # torch keeps the loaded state's tensors (momentum buffers) and updates them in place:
    # a copy leaves the snapshot as it was for the next run that resumes from it
    loop.stepper.optimizer.load_state_dict(copy.deepcopy(snapshot.optimizer))
    if snapshot.scaler is not None and loop.stepper.scaler is not None:
        loop.stepper.scaler.load_state_dict(snapshot.scaler)
    loop.step = snapshot.step
    loop.divergence.initial = snapshot.divergence_initial
    torch.set_rng_state(snapshot.rng)
    if snapshot.cuda_rng is not None and dev.type == "cuda":
        torch.cuda.set_rng_state_all(list(snapshot.cuda_rng))
    order = getattr(loop.batches, "order", None)
    if snapshot.order is not None and isinstance(order, torch.Generator):
        order.set_state(snapshot.order)
    if snapshot.py_rng is not None:
        random.setstate(snapshot.py_rng)
    if snapshot.np_rng is not None:
        np.random.set_state(snapshot.np_rng)
    return list(snapshot.history)


StepCallback = Callable[[StepInfo], None]
EpochCallback = Callable[[EpochInfo], "bool | None"]


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    workload: Workload,
    device: torch.device,
    batch_size: int = 1000,
    *,
    split: Literal["val", "test"] = "val",
) -> tuple[float, float]:
    """Loss and metric over a whole held-out split (under the workload's precision).

    The workload's ``eval_fn`` decides where it has one; a ``step_fn`` workload's loss is
    its step_fn's mean over the batches (weighted by their length), and so is its metric;
    otherwise ``loss_fn`` and the metric see all outputs at once.

    Args:
        split: ``"val"`` (what the search sees) or ``"test"`` (held out from it).
    """
    model.eval()
    if split == "test":
        batches = workload.test_batches(device, batch_size)
    else:
        batches = workload.val_batches(device, batch_size)
    autocast = autocast_for(workload.precision, device)
    if workload.eval_fn is not None:
        with autocast():
            loss, metric = workload.eval_fn(model, batches)
        return float(loss), float(metric)
    if workload.step_fn is not None:
        with autocast():
            loss = _mean_batch_loss(workload, model, batches, split)
        return float(loss), float(loss)
    outputs, targets = _outputs(model, batches, autocast, split)
    assert workload.loss_fn is not None  # a workload without step_fn has one
    loss = workload.loss_fn(outputs, targets)
    metric = loss if workload.metric.fn is None else workload.metric.fn(outputs, targets)
    return float(loss), float(metric)


def _outputs(
    model: torch.nn.Module, batches: Iterator[Any], autocast: Callable[[], Any], split: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs over all of a split's batches, and their targets."""
    outputs, targets = [], []
    for batch in batches:
        inputs, target = split_batch(batch, f"{split} batch")
        with autocast():
            outputs.append(model(inputs))
        targets.append(target)
    if not outputs:
        raise WorkloadError(f"{split}_data yielded no batches — fix: give it at least one")
    out = torch.cat(outputs)
    # half-precision outputs are scored in fp32, like autocast's own losses
    return out.float() if out.dtype in (torch.float16, torch.bfloat16) else out, torch.cat(targets)


def _mean_batch_loss(
    workload: Workload, model: torch.nn.Module, batches: Iterator[Any], split: str
) -> torch.Tensor:
    total: torch.Tensor | float = 0.0
    count = 0
    for batch in batches:
        n = _batch_len(batch)
        total = total + workload.batch_loss(model, batch).float() * n
        count += n
    if count == 0:
        raise WorkloadError(f"{split}_data yielded no batches — fix: give it at least one")
    return torch.as_tensor(total) / count


def _batch_len(batch: Any) -> int:
    """Examples in a batch: its first tensor's length (1 where that is not a tensor)."""
    if isinstance(batch, dict):
        batch = list(batch.values())
    first = batch[0] if isinstance(batch, tuple | list) and batch else batch
    return len(first) if isinstance(first, torch.Tensor) and first.dim() else 1


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
    snapshot_at: int | None = None,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    resume: Snapshot | None = None,
    on_checkpoint: Callable[[Callable[[], Snapshot]], None] | None = None,
) -> TrainResult:
    """Train ``workload`` under ``schedule``; deterministic under ``seed`` on CPU.

    Every step sets LR/momentum from the schedule, then forward, backward, optimizer step.
    Every epoch evaluates on the validation set and calls ``on_epoch``; a truthy return
    stops training (``stopped``). A :class:`~lrsearch.schedules.MetricDriven` schedule
    (``PlateauDecay``) gets the validation loss reported each epoch. A workload with a test
    split has it scored once, after the last epoch (``test_metric``/``test_loss``; not for a
    run stopped early); no callback sees it, so nothing that selects or prunes can.

    The workload's options shape each step (:class:`TrainStep`): its data (tensors or
    loaders), loss or ``step_fn``, optimizer and param groups, ``accumulate`` micro-batches
    per step, ``grad_clip`` and ``precision``; change them with ``Workload.with_options``.
    A step is an optimizer step, so ``schedule.total_steps`` should be
    ``epochs * workload.steps_per_epoch(batch_size)``.

    Args:
        workload: the task.
        schedule: LR policy; its ``total_steps`` should be ``epochs * steps_per_epoch``.
        epochs: defaults to the workload's.
        batch_size: defaults to the workload's (a loader's cannot change).
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
        snapshot_at: after this epoch (1-based) hand a :class:`Snapshot` to ``on_snapshot``.
        on_snapshot: gets the snapshot (before ``on_epoch`` of that epoch).
        resume: go on from this snapshot (taken by a run of the same workload, seed and
            options, under a schedule equal to this one up to its step) instead of epoch 1;
            ``on_epoch`` sees only the epochs after it, the result's history all of them.
        on_checkpoint: at every epoch boundary but the last (after ``on_epoch`` of that
            epoch, unless it stopped the run) gets a function that takes a :class:`Snapshot`
            (what a preempted run resumes from: :mod:`lrsearch.checkpoints`); a copy of the
            model and optimizer costs time, so it is taken only when a checkpoint is due.

    Returns:
        A :class:`TrainResult`.
    """
    epochs, batch_size = _sizes(workload, epochs, batch_size)
    dev = torch.device(device)
    start = time.perf_counter()
    torch.manual_seed(seed)
    model = workload.build_model().to(dev)
    lr = _build_lr(schedule)
    optimizer = workload.make_optimizer(model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    loop = _Loop(
        model,
        ScheduleDriver(optimizer, schedule, base_lr=lr if workload.optimizer_takes_lr else None),
        TrainStep.for_workload(workload, model, optimizer, dev),
        workload.train_batches(batch_size, seed=seed, device=dev),
        steps_per_epoch=workload.steps_per_epoch(batch_size),
        accumulate=workload.accumulate,
        divergence=_Divergence(diverge_factor),
        on_step=on_step,
        update_ratio_every=update_ratio_every,
        sync_every=sync_every,
        modes=optimizer_modes(
            optimizer, model, workload, batch_size=batch_size, seed=seed, device=dev
        ),
    )
    history: list[EpochInfo] = [] if resume is None else _restore(loop, resume, dev)
    stopped = False
    reason = None
    for epoch in range(len(history) + 1, epochs + 1):
        train_loss, reason = _train_epoch(loop, epoch - 1)
        if reason is None:
            loop.modes.eval()  # Schedule-Free: evaluate at its averaged weights
            val_loss, val_metric = evaluate(model, workload, dev)
            reason = _non_finite_validation(val_loss, val_metric)
        if reason is None:
            if loop.metric_driven is not None:
                loop.metric_driven.report(val_loss)
            history.append(EpochInfo(epoch, loop.step, train_loss, val_loss, val_metric))
            if epoch == snapshot_at and on_snapshot is not None:
                on_snapshot(_snapshot(loop, history, dev))
            stopped = on_epoch is not None and bool(on_epoch(history[-1]))
            if on_checkpoint is not None and not stopped and epoch < epochs:
                on_checkpoint(functools.partial(_snapshot, loop, history, dev))
        if reason is not None or stopped:
            break
    loop.driver.detach()
    result = _result(workload, history, loop.step, reason, stopped, start, dev)
    result.resumed_at_step = 0 if resume is None else resume.step
    return _with_test_scores(result, model, workload, dev)


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


def _build_lr(schedule: Schedule) -> float:
    """The LR the optimizer is built at: the schedule's first, or 1.0 where that is 0.

    Only its ratios to the param groups' LRs matter (the driver sets every LR before each
    step), and a zero LR would leave them undefined.
    """
    lr = schedule.lr_at(0)
    return lr if lr > 0 else 1.0


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
    driver: ScheduleDriver
    stepper: TrainStep
    batches: Batches
    steps_per_epoch: int
    accumulate: int
    divergence: _Divergence
    on_step: StepCallback | None
    update_ratio_every: int
    sync_every: int
    modes: OptimizerModes = field(default_factory=OptimizerModes)
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
    """One pass over the training data (epoch ``epoch``, 0-based; tensors in a fresh order).

    Returns:
        The epoch's mean training loss and why the loss diverged (None if it did not); a
        diverged epoch stops at once and its mean loss is NaN.
    """
    loop.model.train()
    loop.modes.train()
    batches = loop.batches.epoch(epoch)
    # Losses stay on the device and are read back once per `sync_every` steps: each read is
    # a CPU-GPU sync point, and one per step would stall the GPU.
    losses = torch.empty(loop.steps_per_epoch, device=loop.batches.device)
    for chunk in _chunks(loop.steps_per_epoch, loop.sync_every):
        pending = [_step(loop, batches, b, losses) for b in chunk]
        reason = _flush(loop, pending, losses[chunk.start : chunk.stop].tolist(), epoch)
        if reason is not None:
            return math.nan, reason
    return float(losses.mean()), None


def _step(loop: _Loop, batches: Iterator[Any], b: int, losses: torch.Tensor) -> _Pending:
    """Optimizer step ``b`` of the epoch: set LR → forward → backward → optimizer step."""
    lr, momentum = loop.driver.apply(loop.schedule_step())
    micro = _take(batches, loop, b)
    measure = loop.update_ratio_every > 0 and loop.step % loop.update_ratio_every == 0
    before = [p.detach().clone() for p in loop.params] if measure else None
    losses[b] = loop.stepper.run(micro)
    ratio = None if before is None else _update_ratio(before, loop.params)
    loop.step += 1
    return _Pending(loop.step - 1, lr, momentum, ratio)


def _take(batches: Iterator[Any], loop: _Loop, b: int) -> list[Any]:
    """The ``accumulate`` micro-batches of step ``b``; a loader that runs dry is an error."""
    micro = list(itertools.islice(batches, loop.accumulate))
    if len(micro) < loop.accumulate:
        planned = loop.steps_per_epoch * loop.accumulate
        raise WorkloadError(
            f"the training data ran out after {b * loop.accumulate + len(micro)} batches of "
            f"an epoch planned as {planned} — fix: set the workload's batches_per_epoch to "
            "what its loader yields per epoch"
        )
    return micro


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


def _with_test_scores(
    result: TrainResult, model: torch.nn.Module, workload: Workload, device: torch.device
) -> TrainResult:
    """``result`` with the final model's test loss and metric, where there is a test split.

    Scored once, after training, and never reported to a callback: selection stays blind to it.
    A run stopped early (a pruned trial) is not scored: nothing keeps a pruned trial's score.
    """
    if not workload.has_test or result.diverged or result.stopped or not result.history:
        return result
    result.test_loss, result.test_metric = evaluate(model, workload, device, split="test")
    return result


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
