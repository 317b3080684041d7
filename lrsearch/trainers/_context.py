"""The trial context: what a user's own loop trains with, and where its results go.

Example (not run as a doctest: the model, data and ``evaluate`` are yours):
    >>> def train(ctx: TrialContext) -> float | None:          # doctest: +SKIP
    ...     model = build_model().to(ctx.device)
    ...     optimizer = torch.optim.AdamW(groups(model, ctx.weight_decay), lr=1e-3)
    ...     driver = ctx.attach(optimizer)                      # the schedule drives it
    ...     for epoch in range(1, ctx.epochs + 1):
    ...         for step, (x, y) in enumerate(loader, start=(epoch - 1) * len(loader)):
    ...             driver.step()                               # LR/momentum for this step
    ...             loss = loss_fn(model(x), y)
    ...             optimizer.zero_grad(); loss.backward(); optimizer.step()
    ...             ctx.log(step, loss=loss.detach())           # read back in batches
    ...             if ctx.should_stop:                         # diverged, Ctrl-C, ramp done
    ...                 return None
    ...         if ctx.report(epoch, evaluate(model)):          # True: pruned, stop now
    ...             return None
    ...     ctx.report_test(evaluate(model, test_split))         # held out: never searched on
    ...     return None                                          # the last report counts
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import torch

from lrsearch import interrupt
from lrsearch.errors import WorkloadError
from lrsearch.schedules import MetricDriven
from lrsearch.torch_schedule import ScheduleDriver
from lrsearch.training import EpochInfo, StepInfo

if TYPE_CHECKING:
    from lrsearch.range_test import RampCurve
    from lrsearch.schedules import Schedule
    from lrsearch.trainers._base import EpochCallback, MetricsCallback, StepCallback

__all__ = ["Mode", "TrialContext", "TrialDriver"]

Mode = Literal["trial", "range_test"]
Value = float | torch.Tensor


class TrialDriver:
    """Drives the attached optimizer: one :meth:`step` before every optimizer step.

    Wraps a :class:`~lrsearch.torch_schedule.ScheduleDriver`, so parameter groups keep their
    LR ratios (a group built at 0.1x the base LR runs at 0.1x the schedule) and momentum is
    SGD's ``momentum`` or Adam's ``betas[0]``.

    Attributes:
        steps: optimizer steps driven so far (lrsearch checks them against
            ``steps_per_epoch`` at the first report).
    """

    def __init__(self, ctx: TrialContext, driver: ScheduleDriver) -> None:
        self.steps = 0
        self._ctx = ctx
        self._driver = driver

    def step(self) -> tuple[float, float | None]:
        """Set LR (and momentum) for the next optimizer step on every group; returns them."""
        lr, momentum = self._driver.apply(self._ctx.schedule_step(self.steps))
        self.steps += 1
        return lr, momentum

    def detach(self) -> None:
        """Release the optimizer (lrsearch does this when the loop returns)."""
        self._driver.detach()


class TrialContext:
    """What a trial of your own loop trains with, and where its results go.

    Attributes:
        mode: ``"trial"`` (a search trial, or a standalone run) or ``"range_test"``.
        schedule: the sampled LR/momentum schedule over ``total_steps`` (the ramp in a
            range test).
        params: the sampled parameters: ``max_lr``, ``div_factor``, ``momentum_high``,
            ``momentum_low``, ``weight_decay``, ... (``weight_decay`` only in a range test).
        epochs: epochs to train (in a range test: enough for the ramp).
        steps_per_epoch: optimizer steps per epoch, as the study file states them; the
            first report refuses a loop that took another number.
        device: where to train, e.g. ``"cpu"`` or ``"cuda:0"`` (the worker's slot).
        seed: seed for model initialisation and data order.
        sync_every: logged steps held before their values are read back from the device.
        number: the Optuna trial number (None outside a search).
        reports: ``(epoch, value)`` of every :meth:`report` so far.
        test_metric: what :meth:`report_test` recorded (NaN until then).
    """

    def __init__(
        self,
        schedule: Schedule,
        *,
        epochs: int,
        steps_per_epoch: int,
        params: Mapping[str, Any] | None = None,
        device: str = "cpu",
        seed: int = 0,
        sync_every: int = 25,
    ) -> None:
        """A context on its own, for one run outside a search: nothing pruned or recorded.

        lrsearch builds the context of each trial and range-test repeat itself.

        Example:
            >>> from lrsearch.schedules import OneCycle
            >>> ctx = TrialContext(OneCycle(3e-3, 600), epochs=10, steps_per_epoch=60)
            >>> ctx.lr_at(300)  # the peak, halfway through the cycle
            0.00269
        """
        if epochs < 1 or steps_per_epoch < 1:
            raise ValueError(
                f"epochs and steps_per_epoch must be >= 1, got {epochs=}, {steps_per_epoch=}"
            )
        self.mode: Mode = "trial"
        self.schedule = schedule
        self.params: Mapping[str, Any] = dict(params or {})
        self.epochs = epochs
        self.steps_per_epoch = steps_per_epoch
        self.device = device
        self.seed = seed
        self.sync_every = max(1, sync_every)
        self.number: int | None = None
        self.reports: list[tuple[int, float]] = []
        self.test_metric = math.nan
        self.diverged: str | None = None
        self.pruned = False
        # set by lrsearch's trainer for a search trial or a range-test repeat
        self._on_step: StepCallback | None = None
        self._on_epoch: EpochCallback | None = None
        self._on_metrics: MetricsCallback | None = None
        self._maximize = False
        self._ramp: RampCurve | None = None
        self._driver: TrialDriver | None = None
        self._last_step = -1
        self._pending: list[tuple[int, int, Value | None, dict[str, Value]]] = []

    @property
    def total_steps(self) -> int:
        """``epochs * steps_per_epoch``: the schedule's length in optimizer steps."""
        return self.epochs * self.steps_per_epoch

    @property
    def weight_decay(self) -> float:
        """The sampled weight decay (0 where the search has none)."""
        return float(self.params.get("weight_decay", 0.0))

    @property
    def should_stop(self) -> bool:
        """Whether the loop should return now: pruned, diverged, Ctrl-C, or the ramp is over.

        A trial's losses are read back every ``sync_every`` steps, so a divergence shows
        here up to that many steps late (as in the built-in loop).
        """
        ramp_over = self._ramp is not None and self._ramp.done
        return self.pruned or self.diverged is not None or ramp_over or interrupt.requested()

    @property
    def steps(self) -> int:
        """Optimizer steps so far: the driver's count, else the last logged step + 1."""
        return self._driver.steps if self._driver is not None else self._last_step + 1

    def attach(
        self, optimizer: torch.optim.Optimizer, *, base_lr: float | None = None
    ) -> TrialDriver:
        """Let the schedule drive ``optimizer``; call the driver's ``step()`` before each step.

        Groups keep their LR ratios to ``base_lr`` (default: the first group's LR), so the
        logged ``lr`` is the LR of the base group.

        Raises:
            ValueError: a driver is attached already, or a torch LR scheduler drives it.
        """
        if self._driver is not None:
            raise ValueError("ctx.attach() was called already; one optimizer per trial")
        self._driver = TrialDriver(self, ScheduleDriver(optimizer, self.schedule, base_lr=base_lr))
        return self._driver

    def step(self) -> tuple[float, float | None]:
        """The attached driver's :meth:`TrialDriver.step`."""
        if self._driver is None:
            raise ValueError("call ctx.attach(optimizer) before ctx.step()")
        return self._driver.step()

    def schedule_step(self, step: int) -> int:
        """The schedule step in force at optimizer step ``step`` (reports, for plateau decay)."""
        return self.schedule.n_reports if isinstance(self.schedule, MetricDriven) else step

    def lr_at(self, step: int) -> float:
        """The base group's LR at optimizer step ``step``."""
        return self.schedule.lr_at(self.schedule_step(step))

    def log(self, step: int, **metrics: Value) -> None:
        """Record per-step metrics (batched to the trial's MLflow run); floats or tensors.

        ``loss`` is the training loss: it is recorded as ``train_loss`` along with the step's
        ``lr`` (the base group's) and ``momentum``, as the built-in loop records them; a
        non-finite loss marks the trial diverged. Other names are recorded as they are.
        Pass tensors (``loss=loss.detach()``): they are read back from the device together
        every ``sync_every`` steps, not one sync per step. In a range test, log ``loss``
        every step: it makes the curve (read at once: the ramp stops on it).
        """
        new_step = step > self._last_step
        self._last_step = max(self._last_step, step)
        metrics = {name: _scalar(name, value) for name, value in metrics.items()}
        loss = metrics.pop("loss", None)
        if self._ramp is not None:
            if loss is not None and new_step:
                self._ramp.add(self.lr_at(step), float(loss))
            return
        self._pending.append((step, len(self.reports), loss, metrics))
        if len(self._pending) >= self.sync_every:
            self.flush()

    def flush(self) -> None:
        """Read the logged values back (one device sync) and hand them on; lrsearch calls it
        every ``sync_every`` steps, at each report and when the loop returns."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        flat = [v for _, _, loss, extra in pending for v in (*_given(loss), *extra.values())]
        values = iter(_read_back(flat))
        for step, epoch, loss, extra in pending:
            if loss is not None:
                self._loss(step, epoch, next(values))
            named = {name: next(values) for name in extra}
            if named and self._on_metrics is not None:
                self._on_metrics(step, named)

    def _loss(self, step: int, epoch: int, loss: float) -> None:
        if not math.isfinite(loss) and self.diverged is None:
            self.diverged = f"non-finite loss ({loss}) at step {step}"
        if self._on_step is not None:
            momentum = self.schedule.momentum_at(self.schedule_step(step))
            self._on_step(StepInfo(step, epoch, self.lr_at(step), momentum, loss))

    def report(self, epoch: int, value: float) -> bool:
        """Report the validation metric after epoch ``epoch`` (1-based); True: stop (pruned).

        A trial is never pruned at its last epoch: it has trained its whole budget. A
        non-finite value marks the trial diverged (True). Ctrl-C stops the trial here
        (``StopRequested``, recorded as interrupted).

        Raises:
            WorkloadError: epochs do not increase, or the first report comes after another
                number of optimizer steps than ``steps_per_epoch`` says (checked in a range
                test too, where the ramp outlasts the epoch: a study fails before any trial).
        """
        interrupt.check()  # between epochs: a safe place to stop
        self._check_epoch(epoch)
        self.flush()
        value = float(value)
        self.reports.append((epoch, value))
        if self._ramp is not None:
            return self._ramp.done
        if not math.isfinite(value):
            self.diverged = f"non-finite validation metric ({value}) at epoch {epoch}"
            return True
        if isinstance(self.schedule, MetricDriven):  # plateau decay: lower is better
            self.schedule.report(-value if self._maximize else value)
        if self._on_epoch is not None:
            # the loop reports its metric only: its losses on this record are NaN
            info = EpochInfo(epoch, self.steps, math.nan, math.nan, value)
            self.pruned = bool(self._on_epoch(info))
        return self.pruned

    def report_test(self, value: float) -> None:
        """Record the final model's held-out test metric, once, after the last report.

        Kept with the trial for reporting (``lrsearch best``, benchmarks), as the built-in
        workloads' test split is: nothing that selects or prunes sees it.
        """
        self.test_metric = float(value)

    def _check_epoch(self, epoch: int) -> None:
        last = self.reports[-1][0] if self.reports else 0
        if epoch <= last:
            raise WorkloadError(
                f"ctx.report(epoch={epoch}) came after epoch {last}: epochs must increase "
                "(report epoch 1, 2, ... once each)"
            )
        counted = self._driver is not None or self._last_step >= 0  # attached, or logged
        ramp_over = self._ramp is not None and self._ramp.done  # a ramp may end mid-epoch
        if self.reports or ramp_over or self.diverged is not None or not counted:
            return
        declared = epoch * self.steps_per_epoch
        if self.steps != declared:
            raise WorkloadError(
                f"steps_per_epoch = {self.steps_per_epoch} in the study file, but the loop took "
                f"{self.steps} optimizer steps by its report of epoch {epoch} (expected "
                f"{declared}); set steps_per_epoch to the loop's optimizer steps per epoch"
            )

    def _close(self) -> None:
        try:
            self.flush()
        finally:
            if self._driver is not None:
                self._driver.detach()


def _scalar(name: str, value: Value) -> Value:
    """A logged value as it is kept until read back: a tensor detached from its graph (held
    for up to ``sync_every`` steps, it must not keep their graphs alive)."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.numel() != 1:
        raise ValueError(f"ctx.log({name}=...) takes a number, got a tensor of {value.numel()}")
    return value.detach()


def _given(value: Value | None) -> tuple[Value, ...]:
    return () if value is None else (value,)


def _read_back(values: list[Value]) -> list[float]:
    """Floats of ``values``; the tensors among them read back with one sync per device."""
    out = [math.nan if isinstance(v, torch.Tensor) else float(v) for v in values]
    by_device: dict[torch.device, list[int]] = {}
    for i, v in enumerate(values):
        if isinstance(v, torch.Tensor):
            by_device.setdefault(v.device, []).append(i)
    for index in by_device.values():
        stacked = torch.stack([values[i].detach().float().reshape(()) for i in index])  # type: ignore[union-attr]
        for i, x in zip(index, stacked.tolist(), strict=True):
            out[i] = x
    return out
