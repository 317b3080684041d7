"""Your own training loop, tuned by lrsearch: the trial context it trains with.

A study file names a function instead of a workload (``loop = "pkg.module:train"``, with
``metric``, ``direction``, ``epochs`` and ``steps_per_epoch`` in ``[study]``). lrsearch calls
``train(ctx)`` once per trial, on the worker's device, with a :class:`TrialContext`: the
sampled schedule and parameters go out, the loop's losses and validation metric come in.

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
    ...             ctx.log(step, loss=loss.item())             # batched to MLflow
    ...             if ctx.should_stop:                         # diverged, Ctrl-C, ramp done
    ...                 return None
    ...         if ctx.report(epoch, evaluate(model)):          # True: pruned, stop now
    ...             return None
    ...     return None                                          # the last report counts

The study's range test runs the same function once per repeat with ``ctx.mode ==
"range_test"``: ``ctx.schedule`` is then the exponential ramp, the context pairs each logged
``loss`` with that step's LR, and ``ctx.should_stop`` turns True once the loss diverges or the
ramp ends. The curves give the suggestions and the prior (:func:`lrsearch.suggest.suggest`,
:meth:`lrsearch.prior.LRPrior.from_suggestions`), as for a workload.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from lrsearch import interrupt
from lrsearch.errors import WorkloadError
from lrsearch.prior import LRPrior
from lrsearch.schedules import ExpRamp, MetricDriven
from lrsearch.suggest import (
    DivergenceWatch,
    LossSmoother,
    repeat_spread,
    smooth,
    suggest,
    summarize,
)
from lrsearch.torch_schedule import ScheduleDriver
from lrsearch.training import EpochInfo, StepInfo, TrainResult
from lrsearch.workloads import Metric, Workload, load_callable

if TYPE_CHECKING:
    import optuna

    from lrsearch.config import StudyConfig, StudySection
    from lrsearch.objective import TrialObserver, TrialSpec
    from lrsearch.range_test import RangeTestResult
    from lrsearch.schedules import Schedule

__all__ = [
    "Loop",
    "TrialContext",
    "TrialDriver",
    "load_loop",
    "loop_workload",
    "range_test_loop",
    "run_loop",
]

Mode = Literal["trial", "range_test"]
Loop = Callable[["TrialContext"], "float | None"]
NEVER_REPORTED = "the loop never called ctx.report; report the validation metric once per epoch"


class TrialDriver:
    """Drives the attached optimizer: one :meth:`step` before every optimizer step.

    Wraps a :class:`~lrsearch.torch_schedule.ScheduleDriver`, so parameter groups keep their
    LR ratios (a group built at 0.1x the base LR runs at 0.1x the schedule) and momentum is
    SGD's ``momentum`` or Adam's ``betas[0]``.

    Attributes:
        steps: optimizer steps driven so far.
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


@dataclass
class _Ramp:
    """Range-test mode: the (step -> loss) points logged, and when the ramp is over."""

    n_iter: int
    diverge_factor: float
    losses: dict[int, float] = field(default_factory=dict)
    smoother: LossSmoother = field(default_factory=LossSmoother)
    watch: DivergenceWatch = field(init=False)
    done: bool = False

    def __post_init__(self) -> None:
        self.watch = DivergenceWatch(factor=self.diverge_factor)

    def add(self, step: int, loss: float) -> None:
        if self.done or step in self.losses:
            return
        self.losses[step] = loss
        self.done = self.watch.add(self.smoother.add(loss)) or len(self.losses) >= self.n_iter


class TrialContext:
    """What a trial of your own loop trains with, and where its results go.

    Attributes:
        mode: ``"trial"`` (a search trial, or a standalone run) or ``"range_test"``.
        schedule: the sampled LR/momentum schedule over ``total_steps`` (the ramp in a
            range test).
        params: the sampled parameters: ``max_lr``, ``div_factor``, ``momentum_high``,
            ``momentum_low``, ``weight_decay``, ... (``weight_decay`` only in a range test).
        epochs: epochs to train (in a range test: enough for the ramp).
        steps_per_epoch: optimizer steps per epoch, as the study file states them.
        device: where to train, e.g. ``"cpu"`` or ``"cuda:0"`` (the worker's slot).
        seed: seed for model initialisation and data order.
        number: the Optuna trial number (None outside a search).
        reports: ``(epoch, value)`` of every :meth:`report` so far.
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
        self.number: int | None = None
        self.reports: list[tuple[int, float]] = []
        self.diverged: str | None = None
        self.pruned = False
        self.on_report: Callable[[int], None] | None = None  # progress: called per epoch
        self._trial: optuna.Trial | None = None
        self._observer: TrialObserver | None = None
        self._maximize = False
        self._ramp: _Ramp | None = None
        self._driver: TrialDriver | None = None
        self._last_step = -1

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
        """Whether the loop should return now: pruned, diverged, Ctrl-C, or the ramp is over."""
        ramp_over = self._ramp is not None and self._ramp.done
        return self.pruned or self.diverged is not None or ramp_over or interrupt.requested()

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

    def log(self, step: int, **metrics: float) -> None:
        """Record per-step metrics (batched to the trial's MLflow run).

        ``loss`` is the training loss: it is recorded as ``train_loss`` along with the step's
        ``lr`` (the base group's) and ``momentum``, as the built-in loop records them; a
        non-finite loss marks the trial diverged. Other names are recorded as they are. In a
        range test, log ``loss`` every step: it makes the curve.
        """
        self._last_step = max(self._last_step, step)
        loss = metrics.pop("loss", None)
        if loss is not None:
            self._loss(step, float(loss))
        if metrics and self._observer is not None:
            values = {k: float(v) for k, v in metrics.items()}
            if callable(getattr(self._observer, "metrics", None)):
                self._observer.metrics(step, values)  # type: ignore[attr-defined]

    def _loss(self, step: int, loss: float) -> None:
        if self._ramp is not None:
            self._ramp.add(step, loss)
            return
        if not math.isfinite(loss) and self.diverged is None:
            self.diverged = f"non-finite loss ({loss}) at step {step}"
        if self._observer is not None:
            momentum = self.schedule.momentum_at(self.schedule_step(step))
            self._observer.step(StepInfo(step, len(self.reports), self.lr_at(step), momentum, loss))

    def report(self, epoch: int, value: float) -> bool:
        """Report the validation metric after epoch ``epoch`` (1-based); True: stop (pruned).

        A trial is never pruned at its last epoch: it has trained its whole budget. A
        non-finite value marks the trial diverged (True). Ctrl-C stops the trial here
        (``StopRequested``, recorded as interrupted).
        """
        interrupt.check()  # between epochs: a safe place to stop
        value = float(value)
        self.reports.append((epoch, value))
        if self._ramp is not None:
            return self._ramp.done
        if not math.isfinite(value):
            self.diverged = f"non-finite validation metric ({value}) at epoch {epoch}"
            return True
        if isinstance(self.schedule, MetricDriven):  # plateau decay: lower is better
            self.schedule.report(-value if self._maximize else value)
        self._observe_epoch(epoch, value)
        if self.on_report is not None:
            self.on_report(epoch)
        if self._trial is not None:
            self._trial.report(value, epoch)
            self.pruned = epoch < self.epochs and self._trial.should_prune()
        return self.pruned

    def _observe_epoch(self, epoch: int, value: float) -> None:
        if self._observer is None:
            return
        # The loop reports its metric only: its losses on this record are NaN.
        self._observer.epoch(EpochInfo(epoch, self.steps, math.nan, math.nan, value))

    def _close(self) -> None:
        if self._driver is not None:
            self._driver.detach()

    @property
    def steps(self) -> int:
        """Optimizer steps so far: the driver's count, else the last logged step + 1."""
        return self._driver.steps if self._driver is not None else self._last_step + 1


# --- running a loop -----------------------------------------------------------------------


def load_loop(spec: str) -> Loop:
    """The function ``package.module:function`` names, checked to take one argument (ctx).

    Raises:
        WorkloadError: it does not import, or does not take ``ctx``.
    """
    loop = load_callable(spec, what="loop")
    try:
        inspect.signature(loop).bind(None)
    except TypeError as exc:
        raise WorkloadError(
            f"loop {spec!r} must take one argument, the TrialContext ({exc})"
        ) from None
    except ValueError:
        pass  # no signature to read: let the call complain
    return loop


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise WorkloadError(
        "this study trains with its own loop: lrsearch cannot build its model or optimizer; "
        "run your loop with the best schedule (lrsearch best --format json)"
    )


def _loops_optimizer(*args: Any, **kwargs: Any) -> Any:
    _refuse()


_loops_optimizer.__qualname__ = "loop's own optimizer"  # how reports and exports name it


def loop_workload(section: StudySection) -> Workload:
    """A stand-in :class:`Workload` for a loop study: its name, metric and sizes, no data.

    The study handle and reports read the metric, epochs and steps per epoch from it;
    building its model or optimizer raises :class:`WorkloadError`. Importing the loop here
    makes a broken import path fail before any trial.
    """
    assert section.loop and section.metric and section.direction and section.steps_per_epoch
    load_loop(section.loop)
    return Workload(
        name=section.loop,
        build_model=_refuse,
        train_data=[],
        val_data=[],
        loss_fn=_refuse,
        metric=Metric(section.metric, section.direction),
        optimizer=_loops_optimizer,
        batch_size=1,
        epochs=section.epochs or 1,
        batches_per_epoch=section.steps_per_epoch,
        info={"loop": section.loop},
    )


def run_loop(
    loop: Loop,
    *,
    trial: optuna.Trial,
    spec: TrialSpec,
    observer: TrialObserver | None,
    epochs: int,
    steps_per_epoch: int,
    metric: Metric,
    on_epoch: Callable[[int, int, int], None] | None = None,
) -> TrainResult:
    """One trial of ``loop``: its context, the call, and what it came to.

    Raises:
        WorkloadError: the loop never reported, or returned something not a number.
        StopRequested: Ctrl-C asked to stop.
    """
    ctx = TrialContext(
        spec.schedule,
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        params=spec.params,
        device=spec.device,
        seed=spec.seed,
    )
    ctx.number, ctx._trial, ctx._observer = spec.number, trial, observer
    ctx._maximize = metric.direction == "maximize"
    if on_epoch is not None:
        ctx.on_report = lambda epoch: on_epoch(spec.number, epoch, epochs)
    started = time.perf_counter()
    try:
        returned = loop(ctx)
    finally:
        ctx._close()
    interrupt.check()  # the loop returned on Ctrl-C (should_stop): ends as interrupted
    return _result(ctx, returned, metric, started)


def _result(ctx: TrialContext, returned: Any, metric: Metric, started: float) -> TrainResult:
    if ctx.diverged is None and not ctx.reports:
        raise WorkloadError(NEVER_REPORTED)
    if returned is not None and not ctx.pruned and ctx.diverged is None:
        if isinstance(returned, bool) or not isinstance(returned, int | float):
            raise WorkloadError(
                f"the loop returned {type(returned).__name__}, expected the final validation "
                "metric (a float) or None (the last ctx.report counts)"
            )
        if not math.isfinite(returned):
            ctx.diverged = f"the loop returned a non-finite metric ({returned})"
    values = [v for _, v in ctx.reports]
    value = (
        float(returned)
        if returned is not None and not ctx.pruned
        else values[-1]
        if values
        else math.nan
    )
    pick = max if metric.direction == "maximize" else min
    return TrainResult(
        metric_name=metric.name,
        direction=metric.direction,
        val_metric=math.nan if ctx.diverged else value,
        val_loss=math.nan,
        best_val_metric=pick((v for v in values if math.isfinite(v)), default=math.nan),
        epochs=len(ctx.reports),
        steps=ctx.steps,
        diverged=ctx.diverged is not None,
        stopped=ctx.pruned,
        seconds=time.perf_counter() - started,
        device=ctx.device,
        diverge_reason=ctx.diverged,
        history=[EpochInfo(e, 0, math.nan, math.nan, v) for e, v in ctx.reports],
    )


# --- the range test -----------------------------------------------------------------------


@contextmanager
def _rng_restored() -> Iterator[None]:
    """torch's CPU generator, numpy's and Python's as they were, whatever the loop did."""
    state = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    try:
        yield
    finally:
        torch.set_rng_state(state[0])
        np.random.set_state(state[1])
        random.setstate(state[2])


def range_test_loop(
    config: StudyConfig,
    *,
    device: str = "cpu",
    loop: Loop | None = None,
    repeats: int | None = None,
    num_iter: int | None = None,
) -> RangeTestResult:
    """The LR range test of a loop study: ``loop`` in range-test mode once per repeat.

    Each repeat gets ``seed + r`` and the exponential ramp over ``num_iter`` steps (default
    ``max(100, steps_per_epoch)``); the losses it logs make one curve.

    Raises:
        WorkloadError: the loop raised, or logged too few losses for a curve.
    """
    from lrsearch.range_test import RangeCurve, RangeTestResult, default_beta

    study, rt = config.study, config.range_test
    assert study.loop and study.steps_per_epoch
    loop = loop or load_loop(study.loop)
    n_iter = num_iter or rt.num_iter or max(100, study.steps_per_epoch)
    repeats = repeats or rt.repeats or 3
    ramp_schedule = ExpRamp(rt.start_lr, rt.end_lr, n_iter)
    started = time.perf_counter()
    curves = []
    for r in range(repeats):
        ramp = _Ramp(n_iter, rt.diverge_factor)
        ctx = TrialContext(
            ramp_schedule,
            epochs=math.ceil(n_iter / study.steps_per_epoch),
            steps_per_epoch=study.steps_per_epoch,
            params={"weight_decay": 0.0},
            device=device,
            seed=study.seed + r,
        )
        ctx.mode, ctx._ramp = "range_test", ramp
        with _rng_restored():
            _call_for_range_test(loop, ctx, study.loop)
        steps = sorted(ramp.losses)
        if len(steps) < 10:
            raise WorkloadError(
                f"range test: loop {study.loop!r} logged {len(steps)} losses; call "
                "ctx.log(step, loss=...) every step and keep going until ctx.should_stop"
            )
        lrs = [ctx.lr_at(s) for s in steps]
        losses = [ramp.losses[s] for s in steps]
        curves.append((lrs, losses))
    beta = default_beta(n_iter)
    smoothed = [smooth(losses, beta) for _, losses in curves]
    noise = repeat_spread(smoothed)
    readings = [
        RangeCurve(
            lrs,
            losses,
            [float(v) for v in sm],
            suggest(lrs, losses, beta=beta, diverge_factor=rt.diverge_factor, noise=noise),
        )
        for (lrs, losses), sm in zip(curves, smoothed, strict=True)
    ]
    summary = summarize([c.suggestions for c in readings])
    settings = {
        "start_lr": rt.start_lr, "end_lr": rt.end_lr, "num_iter": n_iter, "ramp": "exp",
        "beta": beta, "repeat_spread": noise, "steps": sum(len(lrs) for lrs, _ in curves),
        "repeats": repeats, "diverge_factor": rt.diverge_factor, "seed": study.seed,
        "loop": study.loop, "device": device,
    }  # fmt: skip
    return RangeTestResult(
        readings,
        summary,
        LRPrior.from_suggestions(summary),
        settings,
        time.perf_counter() - started,
    )


def _call_for_range_test(loop: Loop, ctx: TrialContext, spec: str) -> None:
    try:
        loop(ctx)
    except (WorkloadError, KeyboardInterrupt):
        raise
    except Exception as exc:  # user code: one line naming the loop
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        raise WorkloadError(f"range test: loop {spec!r} raised {reason}") from exc
    finally:
        ctx._close()
