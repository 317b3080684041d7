"""Learning-rate (and momentum) schedules as pure functions of the optimizer step.

Step ``k`` is the value in force for the ``k``-th ``optimizer.step()`` of a run, counting from
0. Every schedule answers ``lr_at(k)`` and ``momentum_at(k)`` for one step, and ``lrs(n)`` /
``momenta(n)`` for a whole run as numpy arrays (for plots and step logs); both come from the
same vectorised formula, so they agree exactly. Schedules are data: ``to_dict()`` is JSON-safe
and ``schedule_from_dict`` rebuilds the schedule through the ``SCHEDULES`` registry.

This module is numpy and stdlib only; ``lrsearch.torch_schedule`` applies a schedule to a torch
optimizer.

Example:
    >>> s = OneCycle(0.1, total_steps=1000)
    >>> s.lr_at(0), s.lr_at(s.phase_boundaries[1]), s.lr_at(999)
    (0.01, 0.1, 0.0001)
    >>> schedule_from_dict(s.to_dict()) == s
    True
"""

from __future__ import annotations

import abc
import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from lrsearch._schedule_math import (
    check_choice,
    check_count,
    check_momentum_pair,
    check_number,
    piecewise,
)
from lrsearch.defaults import SMITH_DEFAULTS

__all__ = [
    "SCHEDULES",
    "Constant",
    "Cyclic",
    "ExpRamp",
    "LinearRamp",
    "MetricDriven",
    "OneCycle",
    "PlateauDecay",
    "Schedule",
    "Warmup",
    "schedule_from_dict",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

_SHAPES = ("linear", "cos")
# lr_at/momentum_at evaluate this many steps at once and index into the result: training asks
# one step at a time, and a numpy call per step would cost more than the maths.
_BLOCK = 1024
_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


# --- the base ----------------------------------------------------------------------------


class Schedule(abc.ABC):
    """A learning-rate schedule: LR (and optionally momentum) as a pure function of the step.

    Subclasses implement ``_lr_values`` (vectorised over an int array of steps) and
    ``_params`` (their constructor arguments, JSON-safe); everything public is built on those.
    """

    kind: ClassVar[str]
    _total_steps: int | None = None

    @property
    def total_steps(self) -> int | None:
        """Number of steps the schedule is defined for; None if it runs indefinitely."""
        return self._total_steps

    @abc.abstractmethod
    def _lr_values(self, steps: IntArray) -> FloatArray:
        """The LR at each of ``steps`` (already checked to be in range)."""

    def _momentum_values(self, steps: IntArray) -> FloatArray | None:
        """The momentum at each of ``steps``; None for schedules without momentum."""
        return None

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        """Constructor arguments as JSON-safe values (so ``cls(**_params())`` rebuilds it)."""

    def lr_at(self, step: int) -> float:
        """The learning rate for optimizer step ``step`` (0-based)."""
        lrs, _ = self._block_at(step)
        return float(lrs[step % _BLOCK])

    def momentum_at(self, step: int) -> float | None:
        """The momentum for step ``step``, or None if this schedule leaves momentum alone."""
        _, momenta = self._block_at(step)
        return None if momenta is None else float(momenta[step % _BLOCK])

    def lrs(self, n_steps: int | None = None) -> FloatArray:
        """LRs for steps ``0 .. n_steps - 1``; ``n_steps`` defaults to ``total_steps``."""
        return self._lr_values(self._steps(n_steps))

    def momenta(self, n_steps: int | None = None) -> FloatArray | None:
        """Momenta for steps ``0 .. n_steps - 1``, or None if this schedule has none."""
        return self._momentum_values(self._steps(n_steps))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe description; ``schedule_from_dict`` turns it back into a schedule."""
        return {"kind": self.kind, **self._params()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Rebuild a schedule of this class from ``to_dict()`` output.

        Raises:
            ValueError: if ``kind`` is not this class's, or keys are unknown or missing.
        """
        params = dict(d)
        kind = params.pop("kind", cls.kind)
        if kind != cls.kind:
            raise ValueError(f"kind must be {cls.kind!r} for {cls.__name__}, got {kind=}")
        signature = inspect.signature(cls).parameters
        unknown = sorted(set(params) - set(signature))
        missing = sorted(
            n for n, p in signature.items() if p.default is p.empty and n not in params
        )
        if unknown or missing:
            raise ValueError(
                f"{cls.kind!r} schedule dict has unknown keys {unknown} and missing keys "
                f"{missing}; valid keys: {list(signature)}"
            )
        return cls(**params)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    # Equal by value but unhashable: PlateauDecay's value changes as it is reported to.
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({args})"

    def _block_at(self, step: int) -> tuple[FloatArray, FloatArray | None]:
        """LRs and momenta of the ``_BLOCK`` steps holding ``step``, computed once per block."""
        step = check_count("step", step, 0)
        total = self._total_steps
        if total is not None and step >= total:
            raise ValueError(
                f"step must be < total_steps={total} (steps count from 0), got {step=}"
            )
        start = step - step % _BLOCK
        block = self.__dict__.get("_block")
        if block is None or block[0] != start:
            end = start + _BLOCK if total is None else min(start + _BLOCK, total)
            steps = np.arange(start, end, dtype=np.int64)
            block = (start, self._lr_values(steps), self._momentum_values(steps))
            self.__dict__["_block"] = block
        return block[1], block[2]

    def _forget_block(self) -> None:
        self.__dict__.pop("_block", None)

    def __setattr__(self, name: str, value: Any) -> None:
        self._forget_block()  # a changed parameter changes the values
        super().__setattr__(name, value)

    def _steps(self, n_steps: int | None) -> IntArray:
        total = self._total_steps
        if n_steps is None:
            if total is None:
                raise ValueError(f"n_steps is required: {type(self).__name__} has no total_steps")
            n_steps = total
        n = check_count("n_steps", n_steps, 0)
        if total is not None and n > total:
            raise ValueError(f"n_steps must be <= total_steps={total}, got {n_steps=}")
        return np.arange(n, dtype=np.int64)


# --- one-cycle ---------------------------------------------------------------------------


class OneCycle(Schedule):
    """Smith's 1-cycle policy: up to ``max_lr`` and back down, then annihilation.

    With ``T = total_steps``, ``C = cycle_steps`` and ``lower = max_lr / div_factor``, steps
    ``0 .. C - 1`` are the cycle and steps ``C .. T - 1`` the annihilation. The LR is
    interpolated between the step indices ``phase_boundaries = (0, peak, C - 1, T - 1)``,
    ``peak = (C - 1) // 2``:

    - up, ``0 -> peak``: ``lower -> max_lr`` (``lr_at(peak) == max_lr`` exactly);
    - down, ``peak -> C - 1``: ``max_lr -> lower``;
    - annihilation, ``C - 1 -> T - 1``: ``lower -> final_lr = lower / annihilation``, reached
      at the last step. With ``C == T`` (e.g. ``cycle_frac=1``) there is no annihilation and
      ``final_lr == lower``.

    ``C = round(cycle_frac * T)`` (Python's round), clamped to ``[3, T]``: a cycle needs three
    points (lower, max, lower), hence ``total_steps >= 3``. For odd ``C`` up and down take
    ``(C - 1) / 2`` steps each; for even ``C`` the down phase takes one step more (``T=1000``,
    ``cycle_frac=0.9``: peak at step 449, back to lower at 899). Momentum ``(high, low)``
    moves inversely: ``high -> low`` up, ``low -> high`` down, held at ``high`` in
    annihilation. ``shape="cos"`` eases every phase with half a cosine instead.

    **torch.** For odd ``C``, ``lr_at(k)`` and ``momentum_at(k)`` equal (to 1e-9 relative,
    tested) what torch applies at step ``k`` (``k = 0``: the value set at construction, then
    after the ``k``-th ``scheduler.step()``) with::

        OneCycleLR(opt, max_lr, total_steps=T, pct_start=(C + 1) / (2 * T),
                   div_factor=div_factor, final_div_factor=annihilation if C < T else 1.0,
                   three_phase=True, anneal_strategy=shape, max_momentum=high,
                   base_momentum=low)

    torch's phases end at steps ``pct_start * T - 1 = peak``, ``2 * pct_start * T - 2 = C - 1``
    and ``T - 1``: its ``pct_start * T`` counts the steps *through* the peak, ``peak + 1``,
    which is the off-by-one (so ``pct_start`` is not ``cycle_frac / 2``). torch's up and down
    phases are always the same length, so an even ``C`` has no exact torch equivalent. With
    ``C == T``, float rounding of ``pct_start * T`` can leave torch's empty third phase the
    last step, which then gets ``min_lr``; ``final_div_factor=1.0`` makes that harmless.

    Args:
        max_lr: Peak learning rate, > 0.
        total_steps: Number of optimizer steps in the run, an int >= 3.
        div_factor: ``lower = max_lr / div_factor``, > 1.
        cycle_frac: Fraction of the run spent in the cycle, in (0, 1].
        annihilation: ``final_lr = lower / annihilation``, >= 1.
        momentum: ``(high, low)`` with ``1 > high >= low >= 0``, or None to leave momentum
            alone (``momentum_at`` then returns None).
        shape: ``"linear"`` or ``"cos"`` interpolation within each phase.
    """

    kind = "one-cycle"

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        *,
        div_factor: float = SMITH_DEFAULTS["div_factor"],
        cycle_frac: float = SMITH_DEFAULTS["cycle_frac"],
        annihilation: float = SMITH_DEFAULTS["annihilation"],
        momentum: Sequence[float] | None = (
            SMITH_DEFAULTS["momentum_high"],
            SMITH_DEFAULTS["momentum_low"],
        ),
        shape: str = "linear",
    ) -> None:
        self.max_lr = check_number("max_lr", max_lr, low=0, low_open=True)
        self._total_steps = check_count("total_steps", total_steps, 3)
        self.div_factor = check_number("div_factor", div_factor, low=1, low_open=True)
        self.cycle_frac = check_number("cycle_frac", cycle_frac, low=0, high=1, low_open=True)
        self.annihilation = check_number("annihilation", annihilation, low=1)
        self.momentum = check_momentum_pair(momentum)
        self.shape = check_choice("shape", shape, _SHAPES)

    @property
    def total_steps(self) -> int:
        """Number of optimizer steps in the run."""
        assert self._total_steps is not None
        return self._total_steps

    @property
    def lower_lr(self) -> float:
        """The LR at the start and the end of the cycle, ``max_lr / div_factor``."""
        return self.max_lr / self.div_factor

    @property
    def final_lr(self) -> float:
        """The LR at the last step: ``lower_lr / annihilation``, or ``lower_lr`` without one."""
        has_annihilation = self.cycle_steps < self.total_steps
        return self.lower_lr / self.annihilation if has_annihilation else self.lower_lr

    @property
    def cycle_steps(self) -> int:
        """Steps in the cycle (up and down), ``round(cycle_frac * total_steps)`` in [3, T]."""
        total = self.total_steps
        return min(max(round(self.cycle_frac * total), 3), total)

    @property
    def phase_boundaries(self) -> tuple[int, int, int, int]:
        """Step indices ``(start, peak, end of cycle, last step)``."""
        cycle = self.cycle_steps
        return 0, (cycle - 1) // 2, cycle - 1, self.total_steps - 1

    def _knots(self) -> list[int]:
        start, peak, cycle_end, last = self.phase_boundaries
        return [start, peak, cycle_end] + ([last] if last > cycle_end else [])

    def _lr_values(self, steps: IntArray) -> FloatArray:
        knots = self._knots()
        values = [self.lower_lr, self.max_lr, self.lower_lr, self.final_lr][: len(knots)]
        return piecewise(steps, knots, values, self.shape)

    def _momentum_values(self, steps: IntArray) -> FloatArray | None:
        if self.momentum is None:
            return None
        high, low = self.momentum
        knots = self._knots()
        return piecewise(steps, knots, [high, low, high, high][: len(knots)], self.shape)

    def _params(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self._total_steps,
            "div_factor": self.div_factor,
            "cycle_frac": self.cycle_frac,
            "annihilation": self.annihilation,
            "momentum": None if self.momentum is None else list(self.momentum),
            "shape": self.shape,
        }


# --- cyclical LR -------------------------------------------------------------------------


class Cyclic(Schedule):
    """Smith's cyclical learning rates (CLR), exactly as ``torch.optim.lr_scheduler.CyclicLR``.

    Each cycle is ``2 * step_size`` steps: ``base_lr -> max_lr`` over ``step_size`` steps and
    back. The amplitude ``max_lr - base_lr`` is scaled by 1 (``"triangular"``), halved every
    cycle (``"triangular2"``) or by ``gamma ** step`` (``"exp_range"``). Step ``k`` here is
    the LR torch's ``CyclicLR(opt, base_lr, max_lr, step_size_up=step_size, mode=mode,
    gamma=gamma)`` applies at step ``k``; with ``momentum=(high, low)`` momentum cycles
    inversely like torch's ``cycle_momentum=True, max_momentum=high, base_momentum=low``.

    Args:
        base_lr: Lowest LR, > 0.
        max_lr: Highest LR, > base_lr.
        step_size: Steps in half a cycle, an int >= 1.
        mode: ``"triangular"``, ``"triangular2"`` or ``"exp_range"``.
        gamma: Per-step amplitude decay for ``"exp_range"``, in (0, 1]; other modes ignore it.
        momentum: ``(high, low)`` with ``1 > high >= low >= 0``, or None.
        total_steps: Length of the run, or None (the default) for no end.
    """

    kind = "cyclic"

    def __init__(
        self,
        base_lr: float,
        max_lr: float,
        step_size: int,
        *,
        mode: str = "triangular",
        gamma: float = 1.0,
        momentum: Sequence[float] | None = None,
        total_steps: int | None = None,
    ) -> None:
        self.base_lr = check_number("base_lr", base_lr, low=0, low_open=True)
        self.max_lr = check_number("max_lr", max_lr, low=0, low_open=True)
        if self.max_lr <= self.base_lr:
            raise ValueError(f"max_lr must be > base_lr, got {max_lr=}, {base_lr=}")
        self.step_size = check_count("step_size", step_size, 1)
        self.mode = check_choice("mode", mode, _CYCLIC_MODES)
        self.gamma = check_number("gamma", gamma, low=0, high=1, low_open=True)
        self.momentum = check_momentum_pair(momentum)
        if total_steps is not None:
            self._total_steps = check_count("total_steps", total_steps, 1)

    def _height(self, steps: IntArray) -> FloatArray:
        """Fraction of the full amplitude at each step, in [0, 1] (torch's arithmetic)."""
        size = 2.0 * self.step_size
        cycle = np.floor(1.0 + steps / size)
        x = 1.0 + steps / size - cycle
        triangle = np.where(x <= 0.5, x / 0.5, (x - 1.0) / (0.5 - 1.0))
        if self.mode == "triangular2":
            return triangle * (1.0 / 2.0 ** (cycle - 1.0))
        if self.mode == "exp_range":
            return triangle * self.gamma ** steps.astype(np.float64)
        return triangle

    def _lr_values(self, steps: IntArray) -> FloatArray:
        return self.base_lr + (self.max_lr - self.base_lr) * self._height(steps)

    def _momentum_values(self, steps: IntArray) -> FloatArray | None:
        if self.momentum is None:
            return None
        high, low = self.momentum
        return high - (high - low) * self._height(steps)

    def _params(self) -> dict[str, Any]:
        return {
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "step_size": self.step_size,
            "mode": self.mode,
            "gamma": self.gamma,
            "momentum": None if self.momentum is None else list(self.momentum),
            "total_steps": self._total_steps,
        }


# --- ramps and constant ------------------------------------------------------------------


class _RampSchedule(Schedule):
    """``start_lr`` at step 0 to ``end_lr`` at step ``n_steps - 1``."""

    _zero_allowed: ClassVar[bool]

    def __init__(self, start_lr: float, end_lr: float, n_steps: int) -> None:
        positive = not self._zero_allowed
        self.start_lr = check_number("start_lr", start_lr, low=0, low_open=positive)
        self.end_lr = check_number("end_lr", end_lr, low=0, low_open=positive)
        self._total_steps = check_count("n_steps", n_steps, 2)

    @property
    def n_steps(self) -> int:
        """Length of the ramp (same as ``total_steps``)."""
        assert self._total_steps is not None
        return self._total_steps

    def _params(self) -> dict[str, Any]:
        return {"start_lr": self.start_lr, "end_lr": self.end_lr, "n_steps": self.n_steps}


class ExpRamp(_RampSchedule):
    """Exponential ramp (the LR range test's): ``start * (end / start) ** (k / (n_steps - 1))``.

    Args:
        start_lr: LR at step 0, > 0.
        end_lr: LR at step ``n_steps - 1``, > 0.
        n_steps: Length of the ramp, an int >= 2.
    """

    kind = "exp-ramp"
    _zero_allowed = False  # log-space

    def _lr_values(self, steps: IntArray) -> FloatArray:
        last = self.n_steps - 1
        values = self.start_lr * (self.end_lr / self.start_lr) ** (steps / last)
        return np.where(steps == last, self.end_lr, values)


class LinearRamp(_RampSchedule):
    """Linear ramp: ``start + (end - start) * k / (n_steps - 1)``, e.g. a warm-up.

    Args:
        start_lr: LR at step 0, >= 0.
        end_lr: LR at step ``n_steps - 1``, >= 0.
        n_steps: Length of the ramp, an int >= 2.
    """

    kind = "linear-ramp"
    _zero_allowed = True

    def _lr_values(self, steps: IntArray) -> FloatArray:
        return piecewise(steps, [0, self.n_steps - 1], [self.start_lr, self.end_lr], "linear")


class Constant(Schedule):
    """A fixed learning rate.

    Args:
        lr: The learning rate, > 0.
        total_steps: Length of the run, or None for no end.
    """

    kind = "constant"

    def __init__(self, lr: float, *, total_steps: int | None = None) -> None:
        self.lr = check_number("lr", lr, low=0, low_open=True)
        if total_steps is not None:
            self._total_steps = check_count("total_steps", total_steps, 1)

    def _lr_values(self, steps: IntArray) -> FloatArray:
        return np.full(steps.shape, self.lr)

    def _params(self) -> dict[str, Any]:
        return {"lr": self.lr, "total_steps": self._total_steps}


# --- reduce on plateau -------------------------------------------------------------------


@runtime_checkable
class MetricDriven(Protocol):
    """A schedule whose step is a reported metric (e.g. one per epoch), not an optimizer step.

    A training loop calls ``report`` after each validation and, at every optimizer step,
    applies ``lr_at(n_reports)``: the LR in force after the reports made so far.
    :class:`PlateauDecay` is one.
    """

    @property
    def n_reports(self) -> int:
        """How many metrics have been reported so far."""
        ...

    def report(self, metric: float) -> float:
        """Record one metric value; returns the LR now in force."""
        ...


class PlateauDecay(Schedule):
    """Multiply the LR by ``factor`` when a reported metric stops improving.

    Follows torch's ``ReduceLROnPlateau`` exactly (``min_delta`` is its ``threshold``): a
    report improves on the best so far if it beats ``best * (1 - min_delta)`` (``"rel"``,
    mode ``"min"``) or ``best - min_delta`` (``"abs"``); once more than ``patience``
    consecutive reports fail to improve, ``lr = max(lr * factor, min_lr)`` (skipped if that
    changes it by ``eps`` or less), then for ``cooldown`` reports bad reports are not
    counted. Keras differs: its ``min_delta`` is always absolute, it reduces once ``patience``
    (not ``patience + 1``) reports failed, and the last cooldown report already counts.

    Unlike the other schedules a step here is a *report* (it is :class:`MetricDriven`):
    ``lr_at(k)`` is the LR in force after ``k`` calls of ``report`` (``lr_at(0) == lr``), and
    steps past the last report hold the current LR. ``to_dict`` includes the reported history;
    ``from_dict`` replays it.

    Args:
        lr: Initial LR, > 0.
        factor: Multiplier on a plateau, in (0, 1).
        patience: Reports without improvement that are tolerated, an int >= 0.
        min_delta: Improvement threshold, >= 0 (and < 1 for ``threshold_mode="rel"``).
        cooldown: Reports after a reduction during which bad reports don't count, int >= 0.
        min_lr: Lower bound on the LR, >= 0.
        mode: ``"min"`` (lower metric is better) or ``"max"``.
        threshold_mode: ``"rel"`` or ``"abs"``, how ``min_delta`` is applied.
        eps: Reductions smaller than this are skipped, >= 0 (torch's default).
    """

    kind = "plateau"

    def __init__(
        self,
        lr: float,
        *,
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "min",
        threshold_mode: str = "rel",
        eps: float = 1e-8,
    ) -> None:
        self.lr = check_number("lr", lr, low=0, low_open=True)
        self.factor = check_number("factor", factor, low=0, high=1, low_open=True, high_open=True)
        self.patience = check_count("patience", patience, 0)
        self.cooldown = check_count("cooldown", cooldown, 0)
        self.min_lr = check_number("min_lr", min_lr, low=0)
        self.mode = check_choice("mode", mode, ("min", "max"))
        self.threshold_mode = check_choice("threshold_mode", threshold_mode, ("rel", "abs"))
        high = 1.0 if self.threshold_mode == "rel" else math.inf
        self.min_delta = check_number("min_delta", min_delta, low=0, high=high, high_open=True)
        self.eps = check_number("eps", eps, low=0)
        self._history: list[float] = []
        self._lrs: list[float] = [self.lr]
        self._best = math.inf if self.mode == "min" else -math.inf
        self._n_bad = 0
        self._cooldown_left = 0

    @property
    def history(self) -> tuple[float, ...]:
        """The metrics reported so far, in order."""
        return tuple(self._history)

    @property
    def n_reports(self) -> int:
        """How many metrics have been reported (the step whose LR is in force)."""
        return len(self._history)

    @property
    def current_lr(self) -> float:
        """The LR in force after the last report."""
        return self._lrs[-1]

    def report(self, metric: float) -> float:
        """Record one metric value (e.g. one epoch's validation loss); returns the new LR."""
        value = float(metric)
        if self._improves(value):
            self._best, self._n_bad = value, 0
        else:
            self._n_bad += 1
        if self._cooldown_left > 0:
            self._cooldown_left -= 1
            self._n_bad = 0
        lr = self._lrs[-1]
        if self._n_bad > self.patience:
            reduced = max(lr * self.factor, self.min_lr)
            lr = reduced if lr - reduced > self.eps else lr
            self._cooldown_left = self.cooldown
            self._n_bad = 0
        self._history.append(value)
        self._lrs.append(lr)
        self._forget_block()
        return lr

    def _improves(self, value: float) -> bool:
        sign = 1.0 if self.mode == "max" else -1.0
        if self.threshold_mode == "rel":
            edge = self._best * (1.0 + sign * self.min_delta)
        else:
            edge = self._best + sign * self.min_delta
        return value > edge if self.mode == "max" else value < edge

    def _lr_values(self, steps: IntArray) -> FloatArray:
        lrs = np.asarray(self._lrs, dtype=np.float64)
        return lrs[np.minimum(steps, len(lrs) - 1)]

    def _params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "factor": self.factor,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "mode": self.mode,
            "threshold_mode": self.threshold_mode,
            "eps": self.eps,
        }

    def to_dict(self) -> dict[str, Any]:
        """Parameters plus the reported ``history``, so ``from_dict`` restores the state."""
        return {**super().to_dict(), "history": list(self._history)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Self:
        """Rebuild the schedule and replay its reported ``history``."""
        params = dict(d)
        history = params.pop("history", [])
        schedule = super().from_dict(params)
        for metric in history:
            schedule.report(metric)
        return schedule


# --- warm-up, then constant or cosine (the LR-free optimizers' schedules) -----------------


class Warmup(Schedule):
    """Linear warm-up to ``lr`` over ``warmup_steps``, then constant (``decay="constant"``) or
    a cosine to 0 over the rest (``decay="cos"``, torch's ``CosineAnnealingLR``).

    Step ``k < warmup_steps`` runs at ``lr * (k + 1) / warmup_steps``: Schedule-Free's own
    ``warmup_steps`` formula, so driving its LR with this schedule is its built-in warm-up.
    ``group_settings`` are param-group settings fixed for the run (Prodigy's ``d_coef``);
    :class:`~lrsearch.torch_schedule.ScheduleDriver` writes them into every group once.
    Momentum is left alone.

    Args:
        lr: the LR after warm-up (Prodigy: its multiplier, 1.0), > 0.
        total_steps: length of the run, >= 1.
        warmup_steps: steps of warm-up, in [0, total_steps).
        decay: ``"constant"`` or ``"cos"``.
        group_settings: param-group key -> value, JSON-safe.
    """

    kind = "warmup"

    def __init__(
        self,
        lr: float,
        total_steps: int,
        *,
        warmup_steps: int = 0,
        decay: str = "constant",
        group_settings: Mapping[str, float] | None = None,
    ) -> None:
        self.lr = check_number("lr", lr, low=0, low_open=True)
        self._total_steps = check_count("total_steps", total_steps, 1)
        self.warmup_steps = check_count("warmup_steps", warmup_steps, 0)
        if self.warmup_steps >= self._total_steps:
            raise ValueError(
                f"warmup_steps must be < total_steps={total_steps}, got {warmup_steps=}"
            )
        if decay not in ("constant", "cos"):
            raise ValueError(f"decay must be 'constant' or 'cos', got {decay=}")
        self.decay = decay
        self.group_settings = {k: float(v) for k, v in (group_settings or {}).items()}

    def _lr_values(self, steps: IntArray) -> FloatArray:
        s = steps.astype(np.float64)
        w = self.warmup_steps
        ramp = np.minimum((s + 1.0) / w, 1.0) if w else np.ones_like(s)
        if self.decay == "constant":
            return self.lr * ramp
        total = self._total_steps or 1
        t = np.clip((s - w) / max(total - w, 1), 0.0, 1.0)
        return np.where(s < w, self.lr * ramp, self.lr * (1.0 + np.cos(np.pi * t)) / 2.0)

    def _params(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "total_steps": self._total_steps,
            "warmup_steps": self.warmup_steps,
            "decay": self.decay,
            "group_settings": dict(self.group_settings),
        }


# --- registry ----------------------------------------------------------------------------

SCHEDULES: dict[str, type[Schedule]] = {
    cls.kind: cls for cls in (OneCycle, Cyclic, ExpRamp, LinearRamp, Constant, PlateauDecay, Warmup)
}


def schedule_from_dict(d: Mapping[str, Any]) -> Schedule:
    """Rebuild any schedule from its ``to_dict()`` output, dispatching on ``d["kind"]``.

    Raises:
        ValueError: if ``kind`` is not a registered schedule (the message lists them), or the
            other keys don't fit that schedule.
    """
    kind = d.get("kind")
    cls = SCHEDULES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"kind must be one of {sorted(SCHEDULES)}, got {kind=}")
    return cls.from_dict(d)
