"""Annihilation branching: more annihilation tails from one cycle, each a trial of its own.

Trials that share everything up to the end of the cycle share that prefix: with one-cycle
the annihilation factor only shapes the steps after the cycle. So when a trial finishes among
the study's best, its worker enqueues ``tails`` more trials with the same parameters and other
annihilation factors, and trains each from a snapshot of the first trial at the last epoch
boundary inside its cycle (:class:`~lrsearch.training.Snapshot`, bit-identical on the CPU to
training it from scratch). Each tail is an Optuna trial with its own MLflow run, tagged with
the trial it branched from, and counts only the steps it trained (``steps`` attribute).

A tail picked up by another worker (or after a restart: snapshots live in the worker's
memory) trains from scratch: slower, never wrong.

Example:
    >>> [round(v) for v in tail_values(100.0, low=10.0, high=1000.0, tails=2)]
    [10, 1000]
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lrsearch.trials import BRANCH_OF

if TYPE_CHECKING:
    import optuna

    from lrsearch.training import Snapshot

__all__ = ["BRANCH_OF", "Snapshots", "branch_epoch", "enqueue_tails", "qualifies", "tail_values"]


def branch_epoch(cycle_steps: int | None, total_steps: int, steps_per_epoch: int) -> int | None:
    """The last epoch that ends inside the cycle (the snapshot's), or None without a tail.

    Example:
        >>> branch_epoch(270, 300, 30), branch_epoch(300, 300, 30), branch_epoch(20, 300, 30)
        (9, None, None)
    """
    if cycle_steps is None or cycle_steps >= total_steps or steps_per_epoch < 1:
        return None
    epoch = cycle_steps // steps_per_epoch
    return epoch if epoch >= 1 else None


def tail_values(parent: float, *, low: float, high: float, tails: int) -> list[float]:
    """``tails`` annihilation factors spread evenly (log scale) over ``[low, high]``, away
    from the parent's own: the range split into ``tails + 1`` parts on either side of it.

    Example:
        >>> [round(v) for v in tail_values(100.0, low=10.0, high=1000.0, tails=4)]
        [10, 32, 316, 1000]
    """
    if tails < 1 or low <= 0 or high <= low:
        return []
    lo, hi, p = math.log(low), math.log(high), math.log(min(max(parent, low), high))
    grid = [lo + (hi - lo) * k / tails for k in range(tails + 1)]
    # the grid point nearest the parent is the parent itself: the tails are the others
    nearest = min(range(len(grid)), key=lambda k: abs(grid[k] - p))
    return [math.exp(g) for k, g in enumerate(grid) if k != nearest]


def qualifies(value: float, finished: Sequence[float], *, maximize: bool, top: int) -> bool:
    """Whether ``value`` is among the best ``top`` of ``finished`` (which holds it)."""
    better = sum(v > value if maximize else v < value for v in finished)
    return better < top


def enqueue_tails(
    study: optuna.Study,
    params: Mapping[str, Any],
    parent: int,
    annihilations: Sequence[float],
) -> None:
    """Enqueue one trial per annihilation factor: the parent's parameters otherwise."""
    for value in annihilations:
        study.enqueue_trial({**params, "annihilation": value}, user_attrs={BRANCH_OF: parent})


class Snapshots:
    """The snapshots this worker took, by trial number; the oldest go beyond ``keep``."""

    def __init__(self, keep: int = 4) -> None:
        self.keep = keep
        self._by_trial: OrderedDict[int, Snapshot] = OrderedDict()

    def put(self, trial: int, snapshot: Snapshot) -> None:
        self._by_trial[trial] = snapshot
        self._by_trial.move_to_end(trial)
        while len(self._by_trial) > self.keep:
            self._by_trial.popitem(last=False)

    def get(self, trial: int) -> Snapshot | None:
        return self._by_trial.get(trial)

    def drop(self, trial: int) -> None:
        self._by_trial.pop(trial, None)
