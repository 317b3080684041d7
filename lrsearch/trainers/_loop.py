"""A user's own loop as a trainer: ``train(ctx)`` called once per trial and per ramp.

A study file names a function instead of a workload (``loop = "pkg.module:train"``, with
``metric``, ``direction``, ``epochs`` and ``steps_per_epoch`` in ``[study]``). lrsearch calls
it once per trial, on the worker's device, with a :class:`~lrsearch.trainers.TrialContext`:
the sampled schedule and parameters go out, the loop's losses and validation metric come in.

The study's range test runs the same function once per repeat with ``ctx.mode ==
"range_test"``: ``ctx.schedule`` is then the ramp, each logged ``loss`` goes to a
:class:`~lrsearch.range_test.RampCurve` with that step's LR (smoothing and the divergence
stop as for a workload), and ``ctx.should_stop`` turns True once the curve is over. The
curves are read by :func:`lrsearch.range_test.read_ramps`, as every trainer's are.

``steps_per_epoch`` has to be declared: the schedule spans ``epochs * steps_per_epoch``
steps before the first step is taken, and the study sizes its range test and compares
trials by step before any trial runs. What can be checked is checked: the first report
refuses a loop that took another number of optimizer steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrsearch import interrupt
from lrsearch.errors import WorkloadError
from lrsearch.range_test import RampCurve, read_ramps, rng_restored
from lrsearch.trainers._base import NO_HOOKS, TrainHooks
from lrsearch.trainers._context import TrialContext
from lrsearch.trainers._standin import LoopFunction, load_loop, loop_workload
from lrsearch.training import EpochInfo, TrainResult
from lrsearch.workloads import Metric

if TYPE_CHECKING:
    from lrsearch.range_test import RampPlan, RangeTestResult
    from lrsearch.schedules import Schedule
    from lrsearch.workloads import Workload

__all__ = ["NEVER_REPORTED", "LoopTrainer"]

NEVER_REPORTED = "the loop never called ctx.report; report the validation metric once per epoch"
# a ramp that logged fewer losses than this reads nothing
MIN_RAMP_LOSSES = 10


@dataclass
class LoopTrainer:
    """Trains by calling the user's ``loop(ctx)``.

    Args:
        loop: the function.
        spec: its ``package.module:function`` path (how records name it).
        metric: what ``ctx.report`` gives, and which way is better.
        epochs: epochs per trial.
        steps_per_epoch: the loop's optimizer steps per epoch, as declared.
        sync_every: steps between reads of the logged tensors.
    """

    loop: LoopFunction
    spec: str
    metric: Metric
    epochs: int
    steps_per_epoch: int
    sync_every: int = 25
    batch_size: int | None = None  # the loop's own
    drives_momentum: bool = True  # the loop owns the optimizer: momentum is always searched
    optimizer_family: str | None = None  # unknown: the prior takes no optimizer offset

    def __post_init__(self) -> None:
        self.label = f"loop {self.spec}"
        self.workload: Workload = loop_workload(
            self.spec,
            metric=self.metric,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
        )

    @classmethod
    def load(cls, spec: str, *, metric: Metric, epochs: int, steps_per_epoch: int) -> LoopTrainer:
        """The loop ``spec`` names, imported now: a broken path fails before any trial."""
        return cls(load_loop(spec), spec, metric, epochs, steps_per_epoch)

    def train(
        self,
        schedule: Schedule,
        *,
        params: Mapping[str, Any],
        seed: int,
        device: str,
        number: int | None = None,
        hooks: TrainHooks = NO_HOOKS,
    ) -> TrainResult:
        """One call of the loop under ``schedule``; what it reported makes the result.

        A loop keeps no snapshots (``hooks.snapshot_at`` and ``update_ratio_every`` do not
        apply).

        Raises:
            WorkloadError: the loop never reported, reported wrongly, or returned something
                not a number.
            StopRequested: Ctrl-C asked to stop.
        """
        if hooks.resume is not None:
            raise ValueError("a loop cannot resume from a snapshot: it keeps none")
        ctx = TrialContext(
            schedule,
            epochs=self.epochs,
            steps_per_epoch=self.steps_per_epoch,
            params=params,
            device=device,
            seed=seed,
            sync_every=self.sync_every,
        )
        ctx.number, ctx._maximize = number, self.metric.direction == "maximize"
        ctx._on_step, ctx._on_epoch, ctx._on_metrics = (
            hooks.on_step,
            hooks.on_epoch,
            hooks.on_metrics,
        )
        started = time.perf_counter()
        try:
            returned = self.loop(ctx)
        finally:
            ctx._close()
        interrupt.check()  # the loop returned on Ctrl-C (should_stop): ends as interrupted
        return _result(ctx, returned, self.metric, started)

    def range_test(
        self,
        plan: RampPlan,
        *,
        seed: int,
        device: str,
        on_repeat: Callable[[int, int], None] | None = None,
    ) -> RangeTestResult:
        """The loop in range-test mode once per repeat (seed ``seed + r``), every RNG restored.

        Raises:
            WorkloadError: the loop raised, or logged too few losses for a curve.
        """
        started = time.perf_counter()
        runs = []
        for r in range(plan.repeats):
            curve = RampCurve(plan)
            ctx = TrialContext(
                plan.schedule,
                epochs=math.ceil(plan.num_iter / self.steps_per_epoch),
                steps_per_epoch=self.steps_per_epoch,
                params={"weight_decay": 0.0},
                device=device,
                seed=seed + r,
            )
            ctx.mode, ctx._ramp = "range_test", curve
            with rng_restored():
                self._call_for_range_test(ctx)
            if len(curve.lrs) < MIN_RAMP_LOSSES:
                raise WorkloadError(
                    f"range test: loop {self.spec!r} logged {len(curve.lrs)} losses; call "
                    "ctx.log(step, loss=...) every step and keep going until ctx.should_stop"
                )
            runs.append(curve)
            if on_repeat is not None:
                on_repeat(r + 1, plan.repeats)
        settings = {"seed": seed, "loop": self.spec, "device": device}
        # the loop's optimizer is its own: no family, no offset for it in the prior
        return read_ramps(plan.with_family(None), runs, settings, time.perf_counter() - started)

    def _call_for_range_test(self, ctx: TrialContext) -> None:
        try:
            self.loop(ctx)
        except (WorkloadError, KeyboardInterrupt):
            raise
        except Exception as exc:  # user code: one line naming the loop
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise WorkloadError(f"range test: loop {self.spec!r} raised {reason}") from exc
        finally:
            ctx._close()


def _returned_value(ctx: TrialContext, returned: Any) -> float | None:
    """The loop's return value where it counts (None: the last report does)."""
    if returned is None or ctx.pruned or ctx.diverged is not None:
        return None
    if isinstance(returned, bool) or not isinstance(returned, int | float):
        raise WorkloadError(
            f"the loop returned {type(returned).__name__}, expected the final validation "
            "metric (a float) or None (the last ctx.report counts)"
        )
    if not math.isfinite(returned):
        ctx.diverged = f"the loop returned a non-finite metric ({returned})"
        return None
    return float(returned)


def _result(ctx: TrialContext, returned: Any, metric: Metric, started: float) -> TrainResult:
    if ctx.diverged is None and not ctx.reports:
        raise WorkloadError(NEVER_REPORTED)
    value = _returned_value(ctx, returned)
    values = [v for _, v in ctx.reports]
    if value is None:
        value = values[-1] if values else math.nan
    pick = max if metric.direction == "maximize" else min
    diverged = ctx.diverged is not None
    return TrainResult(
        metric_name=metric.name,
        direction=metric.direction,
        val_metric=math.nan if diverged else value,
        val_loss=math.nan,
        best_val_metric=pick((v for v in values if math.isfinite(v)), default=math.nan),
        epochs=len(ctx.reports),
        steps=ctx.steps,
        diverged=diverged,
        stopped=ctx.pruned,
        seconds=time.perf_counter() - started,
        device=ctx.device,
        diverge_reason=ctx.diverged,
        test_metric=math.nan if diverged or ctx.pruned else ctx.test_metric,
        history=[EpochInfo(e, 0, math.nan, math.nan, v) for e, v in ctx.reports],
    )
