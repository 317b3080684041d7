"""Progress over a study's trials (with the best value so far) and the current trial's epochs.

Shown on an interactive terminal only; non-interactive output (CI, pipes, logs) stays quiet.
"""

from __future__ import annotations

import math
from types import TracebackType
from typing import TYPE_CHECKING, Any

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
        )

        console = Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self.handle = handle
        self.maximize = handle.maximize
        self.best = math.nan
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
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
        self._progress.__exit__(et, ev, tb)

    def epoch_done(self, trial_number: int, epoch: int, epochs: int) -> None:
        self._progress.update(
            self._epochs,
            total=epochs,
            completed=epoch,
            description=f"  trial {trial_number} epochs",
        )

    def refresh(self, running: int) -> None:
        """Read progress from the storage (supervisor: the trials run in other processes)."""
        if not self.enabled:
            return
        try:
            best = self.handle.study.best_value
        except ValueError:
            best = math.nan
        self.best = best
        self._progress.update(
            self._trials,
            completed=self.handle.n_finished(),
            info=(f"best {best:.2f}, " if not math.isnan(best) else "") + f"{running} workers",
        )

    def trial_done(self, trial: FrozenTrial) -> Any:
        value = trial.value
        if value is not None and math.isfinite(value):
            better = max if self.maximize else min
            self.best = value if math.isnan(self.best) else better(self.best, value)
        self._progress.update(
            self._trials,
            completed=self.handle.n_finished(),
            info=f"best {self.best:.2f}" if not math.isnan(self.best) else "",
        )
