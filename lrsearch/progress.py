"""Progress over a study's trials (with the best value so far) and the current trial's epochs.

Shown on an interactive terminal only; non-interactive output (CI, pipes, logs) stays quiet.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from lrsearch.study import StudyHandle


class StudyProgress:
    """A rich progress display; a no-op where stderr is not a terminal (or ``enabled=False``)."""

    def __init__(
        self, handle: StudyHandle, *, enabled: bool | None = None, n_trials: int | None = None
    ) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        console = Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self.handle = handle
        self.maximize = handle.maximize
        self._progress = Progress(
            # fixed widths: the layout does not shift when trial numbers grow a digit
            TextColumn("{task.description:<20}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
            disable=not self.enabled,
            transient=False,
        )
        done = handle.n_finished()
        self._trials = self._progress.add_task(
            "trials", total=n_trials or handle.config.study.n_trials, completed=done, info=""
        )
        self._epochs = self._progress.add_task("  epochs", total=1, completed=0, info="")

    def __enter__(self) -> StudyProgress:
        self._progress.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.update(self._epochs, visible=False)  # no stale epoch bar left behind
        self._progress.__exit__(et, ev, tb)

    def epoch_done(self, trial_number: int, epoch: int, epochs: int) -> None:
        self._progress.update(
            self._epochs,
            total=epochs,
            completed=epoch,
            description=f"  trial {trial_number:>4} epochs",
        )

    def refresh(self, running: int) -> None:
        """Read progress from the storage (supervisor: the trials run in other processes)."""
        if not self.enabled:
            return
        self._show(self.handle.study.get_trials(deepcopy=False), f"{running} workers")

    def trial_done(self, trial: FrozenTrial) -> None:
        """A trial of this process ended: counts, best value, and a fresh epoch bar."""
        from lrsearch.storage import read_trials

        if not self.enabled:
            return
        # The budget check just read the trials (lrsearch.workers): no round trip of its own.
        self._show(read_trials(self.handle.study, fresh=False))
        self._progress.update(self._epochs, completed=0, description="  next trial")

    def _show(self, trials: list[FrozenTrial], extra: str = "") -> None:
        from optuna.trial import TrialState

        counted = [t for t in trials if not t.user_attrs.get("surplus")]
        states = [t.state for t in counted]
        complete = [
            t.value
            for t in counted
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
        ]
        parts = []
        if complete:
            parts.append(f"best {(max if self.maximize else min)(complete):.4g}")
        pruned = states.count(TrialState.PRUNED)
        diverged = sum("diverged" in t.user_attrs for t in counted)
        parts.append(f"{pruned} pruned ({diverged} diverged)")
        if failed := states.count(TrialState.FAIL):
            parts.append(f"{failed} failed")
        if extra:
            parts.append(extra)
        finished = states.count(TrialState.COMPLETE) + pruned
        self._progress.update(self._trials, completed=finished, info=" · ".join(parts))


def waiting(message: str, *, enabled: bool | None = None) -> AbstractContextManager[object]:
    """A spinner with ``message`` on an interactive terminal while something long runs."""
    from rich.console import Console

    console = Console(stderr=True)
    if not (console.is_terminal if enabled is None else enabled):
        return nullcontext()
    return console.status(message)


def describe_study(handle: StudyHandle, *, resumed: bool) -> list[str]:
    """What ``lrsearch run`` says before the trials: the range test, the prior, a resume."""
    lines = []
    suggestions = handle.range_test.get("suggestions", {})
    if suggestions:
        said = ", ".join(f"{name} {s['median']:.3g}" for name, s in suggestions.items())
        lines.append(f"range test: {said}")
    prior = handle.prior
    lines.append(
        f"prior over max_lr: centre {prior.center:.3g}, sigma {prior.sigma_decades:.2f} "
        f"decades, within [{prior.low:.3g}, {prior.high:.3g}]"
    )
    if resumed:
        from optuna.trial import TrialState

        trials = [
            t for t in handle.study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")
        ]
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        lines.insert(
            0,
            f"resuming study {handle.name!r}: {counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, "
            f"{counts[TrialState.WAITING]} waiting to be retried; the range test is kept",
        )
    return lines
