"""One ramp for every trainer: the plan, each repeat's curve as it runs, the readings.

A trainer runs the steps (the built-in loop's :func:`~lrsearch.range_test.range_test`, a
user's loop through its :class:`~lrsearch.trainers.TrialContext`); what the LR is at each
step, how the loss is smoothed, when a repeat stops, how the curves are read and what prior
they give is decided here, once.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lrsearch.prior import LRPrior
from lrsearch.range_test._result import RangeCurve, RangeTestResult
from lrsearch.schedules import ExpRamp, LinearRamp
from lrsearch.suggest import DivergenceWatch, LossSmoother, repeat_spread, suggest, summarize

__all__ = ["RampCurve", "RampPlan", "check_ramp", "default_beta", "read_ramps", "rng_restored"]


@contextmanager
def rng_restored() -> Iterator[None]:
    """torch's CPU (and, where up, CUDA) generators, numpy's and Python's as they were."""
    rng = (torch.get_rng_state(), np.random.get_state(), random.getstate())
    # CUDA's generators only where CUDA is up: asking for them would start it on a CPU run
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(rng[0])
        np.random.set_state(rng[1])
        random.setstate(rng[2])
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


@dataclass(frozen=True)
class RampPlan:
    """How every repeat of a range test ramps, smooths, stops and is read (any trainer's).

    Build it with :meth:`make`; ``settings()`` is what a result records of it.
    """

    schedule: ExpRamp | LinearRamp
    beta: float
    diverge_factor: float
    skip_start: int
    skip_end: int
    repeats: int
    # how the readings become the prior: the optimizer's family (its offset) and the study
    # file's [prior] rules (LRPrior.from_suggestions' keywords)
    family: str | None = None
    prior_options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def make(
        cls,
        *,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_iter: int = 100,
        ramp: str = "exp",
        repeats: int = 3,
        beta: float | None = None,
        diverge_factor: float = 4.0,
        skip_start: int = 10,
        skip_end: int = 5,
        family: str | None = None,
        prior_options: Mapping[str, Any] | None = None,
    ) -> RampPlan:
        """A checked plan; ``beta`` None: :func:`default_beta` of ``num_iter``."""
        check_ramp(start_lr=start_lr, end_lr=end_lr, repeats=repeats, ramp=ramp, batch_size=1)
        if num_iter < 10:
            raise ValueError(f"num_iter must be >= 10, got {num_iter=}")
        schedule = (ExpRamp if ramp == "exp" else LinearRamp)(start_lr, end_lr, num_iter)
        beta = default_beta(num_iter) if beta is None else beta
        options = dict(prior_options or {})
        return cls(schedule, beta, diverge_factor, skip_start, skip_end, repeats, family, options)

    @property
    def num_iter(self) -> int:
        return int(self.schedule.total_steps or 0)

    def with_family(self, family: str | None) -> RampPlan:
        """The plan for an optimizer of ``family`` (the prior's offset)."""
        return dataclasses.replace(self, family=family)

    def settings(self) -> dict[str, Any]:
        """What a result records of the plan: the ramp and how it was read."""
        s = self.schedule
        return {
            "start_lr": s.start_lr,
            "end_lr": s.end_lr,
            "num_iter": self.num_iter,
            "ramp": "exp" if isinstance(s, ExpRamp) else "linear",
            "repeats": self.repeats,
            "beta": self.beta,
            "diverge_factor": self.diverge_factor,
            "skip_start": self.skip_start,
            "skip_end": self.skip_end,
        }


class RampCurve:
    """One repeat's curve as it is run: each step's LR and loss in, whether to stop out.

    Smooths with the plan's ``beta`` and stops once the smoothed loss diverges (after
    ``skip_start`` steps) or the ramp has run its ``num_iter`` steps.
    """

    def __init__(self, plan: RampPlan) -> None:
        self.plan = plan
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.done = False
        self._smoother = LossSmoother(plan.beta)
        self._watch = DivergenceWatch(factor=plan.diverge_factor, skip_start=plan.skip_start)

    def add(self, lr: float, loss: float) -> bool:
        """Record one step; True once the repeat is over (steps after that are ignored)."""
        if self.done:
            return True
        self.lrs.append(lr)
        self.losses.append(loss)
        self.smoothed.append(self._smoother.add(loss))
        diverged = self._watch.add(self.smoothed[-1])
        self.done = diverged or len(self.lrs) >= self.plan.num_iter
        return self.done


def read_ramps(
    plan: RampPlan, runs: list[RampCurve], settings: dict[str, Any], seconds: float
) -> RangeTestResult:
    """The repeats' readings, summary and prior: how every trainer's range test ends."""
    # the repeats' spread is the smoothed loss's noise as measured: every reading is judged by it
    noise = repeat_spread([run.smoothed for run in runs])
    curves = [
        RangeCurve(
            run.lrs,
            run.losses,
            run.smoothed,
            suggest(
                run.lrs,
                run.losses,
                skip_start=plan.skip_start,
                skip_end=plan.skip_end,
                beta=plan.beta,
                diverge_factor=plan.diverge_factor,
                noise=noise,
            ),
        )
        for run in runs
    ]
    summary = summarize([c.suggestions for c in curves])
    settings = {
        **plan.settings(),
        **settings,
        "repeat_spread": noise,
        "steps": sum(len(run.lrs) for run in runs),
    }
    if plan.family is not None:
        settings["optimizer_family"] = plan.family
    # the one place a range test's prior is built
    prior = LRPrior.from_suggestions(summary, family=plan.family, **plan.prior_options)
    return RangeTestResult(curves, summary, prior, settings, seconds)


def default_beta(num_iter: int) -> float:
    """The EMA decay for a ramp of ``num_iter`` steps: fastai's 0.98 from 100 steps on; a
    shorter ramp averages over the same share of its steps (``1 - 2 / num_iter``), so its
    smoothing lags by the same number of decades and the calibrated prior still fits."""
    return min(0.98, 1.0 - 2.0 / num_iter)


def check_ramp(*, start_lr: float, end_lr: float, repeats: int, ramp: str, batch_size: int) -> None:
    if not 0 < start_lr < end_lr:
        raise ValueError(f"need 0 < start_lr < end_lr, got {start_lr=}, {end_lr=}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats=}")
    if ramp not in ("exp", "linear"):
        raise ValueError(f"ramp must be 'exp' or 'linear', got {ramp=}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size=}")
