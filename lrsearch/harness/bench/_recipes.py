"""The baselines' schedules, exactly: fastai's ``fit_one_cycle`` and torch's ``OneCycleLR``.

Both are *two*-phase cycles: cosine up from ``max_lr / div`` to ``max_lr``, then one cosine
all the way down to the final LR. lrsearch's :class:`~lrsearch.schedules.OneCycle` is Smith's
three-phase policy (up, down to ``max_lr / div`` over an equally long phase, annihilation),
so no setting of it reproduces them: the closest, ``OneCycle(max_lr, T, div_factor=25,
cycle_frac=0.5, annihilation=4000, shape="cos")`` for fastai, puts the peak at 25% of the
steps but falls to ``max_lr / 25`` by 50% instead of easing down over 75%. The baselines
would then measure our mapping, not the recipes, hence :class:`TwoPhaseCycle`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lrsearch.schedules import Schedule

__all__ = ["TwoPhaseCycle", "fastai_one_cycle", "torch_one_cycle"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]


def _cos_between(start: float, end: float, t: FloatArray) -> FloatArray:
    """Half a cosine from ``start`` (t=0) to ``end`` (t=1): fastai's and torch's formula."""
    return start + (end - start) * (1.0 - np.cos(np.pi * t)) / 2.0


class TwoPhaseCycle(Schedule):
    """Cosine ``start_lr -> max_lr`` up to step ``peak``, cosine ``max_lr -> final_lr`` to ``end``.

    ``peak`` and ``end`` are positions on the step axis and need not be integers (fastai
    places them at fractions of the run). Momentum ``(high, low)`` moves inversely:
    ``high -> low`` up, ``low -> high`` down.

    Args:
        max_lr: the peak LR, > 0.
        total_steps: steps in the run, >= 2.
        start_lr: LR at step 0, in (0, max_lr].
        final_lr: LR at position ``end``, in (0, max_lr].
        peak: position of the peak, in (0, end).
        end: position where ``final_lr`` is reached (steps past it hold it).
        momentum: ``(high, low)``, or None to leave momentum alone.
    """

    kind = "two-phase-cos"

    def __init__(
        self,
        max_lr: float,
        total_steps: int,
        *,
        start_lr: float,
        final_lr: float,
        peak: float,
        end: float,
        momentum: Sequence[float] | None = (0.95, 0.85),
    ) -> None:
        if not 0 < start_lr <= max_lr or not 0 < final_lr <= max_lr:
            raise ValueError(
                f"need 0 < start_lr, final_lr <= max_lr, got {start_lr=}, {final_lr=}, {max_lr=}"
            )
        if total_steps < 2:
            raise ValueError(f"total_steps must be >= 2, got {total_steps=}")
        if not 0 < peak < end:
            raise ValueError(f"need 0 < peak < end, got {peak=}, {end=}")
        self.max_lr, self.start_lr, self.final_lr = float(max_lr), float(start_lr), float(final_lr)
        self._total_steps = int(total_steps)
        self.peak, self.end = float(peak), float(end)
        self.momentum = None if momentum is None else (float(momentum[0]), float(momentum[1]))

    def _phases(self, steps: IntArray) -> tuple[NDArray[np.bool_], FloatArray, FloatArray]:
        s = steps.astype(np.float64)
        up = s <= self.peak
        t_up = np.clip(s / self.peak, 0.0, 1.0)
        t_down = np.clip((s - self.peak) / (self.end - self.peak), 0.0, 1.0)
        return up, t_up, t_down

    def _lr_values(self, steps: IntArray) -> FloatArray:
        up, t_up, t_down = self._phases(steps)
        return np.where(
            up,
            _cos_between(self.start_lr, self.max_lr, t_up),
            _cos_between(self.max_lr, self.final_lr, t_down),
        )

    def _momentum_values(self, steps: IntArray) -> FloatArray | None:
        if self.momentum is None:
            return None
        high, low = self.momentum
        up, t_up, t_down = self._phases(steps)
        return np.where(up, _cos_between(high, low, t_up), _cos_between(low, high, t_down))

    def _params(self) -> dict[str, Any]:
        return {
            "max_lr": self.max_lr,
            "total_steps": self._total_steps,
            "start_lr": self.start_lr,
            "final_lr": self.final_lr,
            "peak": self.peak,
            "end": self.end,
            "momentum": None if self.momentum is None else list(self.momentum),
        }


def fastai_one_cycle(
    max_lr: float,
    total_steps: int,
    *,
    div: float = 25.0,
    div_final: float = 1e5,
    pct_start: float = 0.25,
    moms: Sequence[float] = (0.95, 0.85),
) -> TwoPhaseCycle:
    """fastai's ``Learner.fit_one_cycle`` schedule (its defaults).

    fastai evaluates ``combined_cos(pct_start, lr_max/div, lr_max, lr_max/div_final)`` at
    ``pos = step / total_steps``, so the peak sits at ``pct_start * total_steps`` and the final
    LR ``max_lr / div_final`` would be reached one step after the last. Momentum follows
    ``moms=(0.95, 0.85, 0.95)``.
    """
    return TwoPhaseCycle(
        max_lr,
        total_steps,
        start_lr=max_lr / div,
        final_lr=max_lr / div_final,
        peak=pct_start * total_steps,
        end=float(total_steps),
        momentum=moms,
    )


def torch_one_cycle(
    max_lr: float,
    total_steps: int,
    *,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
    pct_start: float = 0.3,
    momentum: Sequence[float] = (0.95, 0.85),
) -> TwoPhaseCycle:
    """``torch.optim.lr_scheduler.OneCycleLR`` at its defaults (two phases, cosine).

    torch's phases end at steps ``pct_start * total_steps - 1`` and ``total_steps - 1``; the
    final LR is ``max_lr / div_factor / final_div_factor``; momentum cycles between
    ``max_momentum=0.95`` and ``base_momentum=0.85``.
    """
    initial = max_lr / div_factor
    return TwoPhaseCycle(
        max_lr,
        total_steps,
        start_lr=initial,
        final_lr=initial / final_div_factor,
        peak=pct_start * total_steps - 1.0,
        end=float(total_steps - 1),
        momentum=momentum,
    )
