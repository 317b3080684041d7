"""Progress over a study's trials (with the best value so far) and the current trial's epochs.

On an interactive terminal: a live view that fits the terminal's width, 80 columns included,
without cutting a number (words are dropped or wrapped, values never). Elsewhere (make, CI,
pipes, logs): one plain line per finished trial.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lrsearch import interrupt
from lrsearch.space import lrfree_policy
from lrsearch.trials import DIVERGED, counted, is_surplus

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

    from lrsearch.study import StudyHandle

SEPARATOR = " · "
PLAIN_READ_S = 5.0  # how often a supervisor's plain lines read the storage
STOPPING = "stopping: the running trial ends at its next step and is recorded as interrupted"


@dataclass(frozen=True)
class Tally:
    """A study's trials, counted as the view shows them (backed-off asks left out)."""

    finished: int = 0
    pruned: int = 0
    diverged: int = 0
    failed: int = 0
    best: float | None = None

    @classmethod
    def of(cls, trials: Iterable[FrozenTrial], *, maximize: bool) -> Tally:
        from optuna.trial import TrialState

        kept = counted(trials)
        values = [
            t.value
            for t in kept
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value)
        ]
        pruned = sum(t.state == TrialState.PRUNED for t in kept)
        return cls(
            finished=len(values) + pruned,
            pruned=pruned,
            diverged=sum(DIVERGED in t.user_attrs for t in kept),
            failed=sum(t.state == TrialState.FAIL for t in kept),
            best=(max if maximize else min)(values) if values else None,
        )

    def words(self) -> list[str]:
        """The counts as separate pieces, each kept whole when a line wraps."""
        pieces = [] if self.best is None else [f"best {self.best:.4g}"]
        pieces.append(f"{self.pruned} pruned ({self.diverged} diverged)")
        if self.failed:
            pieces.append(f"{self.failed} failed")
        return pieces


@dataclass
class ViewState:
    """What the live view shows; :func:`render` draws it at a given width."""

    name: str
    total: int
    tally: Tally = field(default_factory=Tally)
    elapsed: float = 0.0
    finished_here: int = 0  # trials finished since the view started: the ETA's rate
    running: str = ""  # "3 workers" under a supervisor
    trial: int | None = None
    epoch: int = 0
    epochs: int = 0
    stopping: bool = False

    def eta(self) -> float | None:
        left = max(self.total - self.tally.finished, 0)
        if left == 0:
            return 0.0
        if self.finished_here == 0:
            return None
        return self.elapsed / self.finished_here * left


def clock(seconds: float | None) -> str:
    """``H:MM:SS``, or ``-:--:--`` where unknown."""
    if seconds is None:
        return "-:--:--"
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def bar(fraction: float, width: int) -> str:
    """A bar of ``width`` cells, ``fraction`` of them full."""
    full = round(max(0.0, min(1.0, fraction)) * width)
    return "━" * full + "╌" * (width - full)


def wrap(pieces: list[str], width: int, *, indent: str = "", sep: str = SEPARATOR) -> list[str]:
    """Join ``pieces`` with ``sep`` into lines of at most ``width``, breaking only between pieces.

    A piece longer than a line on its own is folded at the width (never shortened).
    """
    lines: list[str] = []
    line = ""
    for piece in pieces:
        candidate = f"{line}{sep}{piece}" if line else f"{indent}{piece}"
        if line and len(candidate) > width:
            lines.append(line)
            candidate = f"{indent}{piece}"
        line = candidate
    if line:
        lines.append(line)
    return [chunk for long in lines for chunk in _fold(long, width)]


def _fold(line: str, width: int) -> list[str]:
    return [line[i : i + width] for i in range(0, len(line), width)] or [""]


def render(view: ViewState, width: int) -> list[str]:
    """The live view as lines of at most ``width`` characters; every number whole."""
    done = f"{view.tally.finished}/{view.total}"
    times = [done, clock(view.elapsed), f"eta {clock(view.eta())}"]
    head = "trials "
    room = width - len(head) - len("  ".join(times)) - 2
    lines = wrap(re.findall(r"[^-_. ]+[-_. ]*|[-_. ]+", f"study {view.name}"), width, sep="")
    if room >= 8:  # the bar takes what the numbers leave, up to 30 cells
        fraction = view.tally.finished / view.total if view.total else 0.0
        lines.append(f"{head}{bar(fraction, min(room, 30))}  " + "  ".join(times))
    else:  # too narrow for a bar: the numbers alone, wrapped between them
        lines += wrap(["trials", *times], width, sep="  ")
    lines += wrap(view.tally.words() + ([view.running] if view.running else []), width, indent="  ")
    if view.trial is not None and view.epochs:
        label = f"  trial {view.trial} epoch {view.epoch}/{view.epochs}"
        room = width - len(label) - 1
        lines.append(
            f"{label} {bar(view.epoch / view.epochs, min(room, 30))}" if room >= 8 else label
        )
    if view.stopping:
        lines += wrap(STOPPING.split(" "), width, sep=" ")
    return lines


def trial_line(trial: FrozenTrial, tally: Tally, total: int) -> str:
    """One plain line for a finished trial: its outcome, then the study's counts."""
    state = trial.state.name.lower()
    outcome = f"trial {trial.number} {state}"
    if trial.value is not None and state == "complete":
        outcome += f" {trial.value:.4g}"
    elif trial.last_step is not None and state == "pruned":
        outcome += f" at epoch {trial.last_step}"
    return SEPARATOR.join([outcome, f"{tally.finished}/{total} finished", *tally.words()])


class _Live:
    """The rich renderable of the live view: redrawn at the console's width on every refresh."""

    def __init__(self, view: ViewState, started: float) -> None:
        self.view, self.started = view, started

    def __rich_console__(self, console: Any, options: Any) -> Any:
        from rich.text import Text

        self.view.elapsed = time.monotonic() - self.started
        self.view.stopping = interrupt.requested()
        yield Text("\n".join(render(self.view, options.max_width)), no_wrap=True)


class StudyProgress:
    """The live view on an interactive stderr, plain lines per trial elsewhere.

    ``enabled=False`` shows nothing (a supervised worker: its supervisor speaks);
    ``enabled=True`` forces the live view; None chooses by whether stderr is a terminal.
    Plain lines go to ``echo``.
    """

    def __init__(
        self,
        handle: StudyHandle,
        *,
        enabled: bool | None = None,
        n_trials: int | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        from rich.console import Console
        from rich.live import Live

        console = Console(stderr=True)
        self.enabled = console.is_terminal if enabled is None else enabled
        self.plain = enabled is None and not self.enabled
        self.handle = handle
        self.maximize = handle.maximize
        self._echo = echo
        self._read_at = -math.inf
        trials = handle.study.get_trials(deepcopy=False)
        self._seen: set[int] = {t.number for t in trials if t.state.is_finished()}
        self.view = ViewState(
            handle.name,
            n_trials or handle.config.study.n_trials,
            Tally.of(trials, maximize=self.maximize),
        )
        self._start_finished = self.view.tally.finished
        self._live = Live(
            _Live(self.view, time.monotonic()),
            console=console,
            refresh_per_second=2,
            transient=False,
            auto_refresh=self.enabled,
        )

    def __enter__(self) -> StudyProgress:
        if self.enabled:
            self._live.__enter__()
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.enabled:
            self.view.trial = None  # no stale epoch bar left behind
            self._live.__exit__(et, ev, tb)

    def epoch_done(self, trial_number: int, epoch: int, epochs: int) -> None:
        self.view.trial, self.view.epoch, self.view.epochs = trial_number, epoch, epochs

    def refresh(self, running: int) -> None:
        """Read progress from the storage (supervisor: the trials run in other processes)."""
        now = time.monotonic()
        if self.plain and now - self._read_at < PLAIN_READ_S:  # a log needs no 0.5 s updates
            return
        if self.enabled or self.plain:
            self._read_at = now
            self.view.running = f"{running} workers"
            self._show(self.handle.study.get_trials(deepcopy=False))

    def trial_done(self, trial: FrozenTrial) -> None:
        """A trial of this process ended: counts, best value, and a fresh epoch bar."""
        from lrsearch.storage import read_trials

        if self.enabled or self.plain:
            # The budget check just read the trials (lrsearch.workers): no round trip of its own.
            self._show(read_trials(self.handle.study, fresh=False))
            self.view.trial = None

    def _show(self, trials: list[FrozenTrial]) -> None:
        tally = Tally.of(trials, maximize=self.maximize)
        self.view.tally = tally
        self.view.finished_here = tally.finished - self._start_finished
        if not self.plain:
            return
        for trial in sorted(trials, key=lambda t: t.number):
            if trial.state.is_finished() and trial.number not in self._seen:
                self._seen.add(trial.number)
                if not is_surplus(trial):
                    self._echo(trial_line(trial, tally, self.view.total))


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
    summary = handle.range_test.summary if handle.range_test is not None else {}
    if summary:
        said = ", ".join(f"{name} {s.median:.3g}" for name, s in summary.items())
        lines.append(f"range test: {said}")
    prior = handle.prior
    lrfree = lrfree_policy(handle.config.space)
    if lrfree is not None:
        lines.append(f"LR-free optimizer: searching the {lrfree} policy's own parameters")
    else:
        lines.append(
            f"prior over max_lr: centre {prior.center:.3g}, sigma {prior.sigma_decades:.2f} "
            f"decades, within [{prior.low:.3g}, {prior.high:.3g}]"
        )
    if resumed:
        from optuna.trial import TrialState

        trials = counted(handle.study.get_trials(deepcopy=False))
        counts = {s: sum(t.state == s for t in trials) for s in TrialState}
        lines.insert(
            0,
            f"resuming study {handle.name!r}: {counts[TrialState.COMPLETE]} complete, "
            f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed, "
            f"{counts[TrialState.WAITING]} waiting to be retried; the range test is kept",
        )
    return lines
