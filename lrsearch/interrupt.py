"""Ctrl-C that is safe at any moment: a request to stop, honoured where nothing is half-written.

A ``KeyboardInterrupt`` raised wherever the main thread happens to be can land inside a storage
transaction (an SQLite write holding its lock, a PostgreSQL commit): the process then cannot
record the trial it interrupts, and the trial and its MLflow run stay RUNNING. Inside
:func:`deferred_interrupts`, SIGINT and SIGTERM only *request* a stop; the training loop and the
trial loop call :func:`check` between steps, where no write is in flight, and a trial stopped
there ends truthfully (FAIL in Optuna, KILLED in MLflow). A third Ctrl-C forces an immediate
stop for someone who cannot wait.

SIGTERM is how clusters preempt (Kubernetes, Slurm): a stop it asks for is a *preemption*
(:func:`preempted`, :class:`Preempted`), after which the interrupted trial is queued again and
resumes from its last checkpoint; a Ctrl-C is the user's own stop, and the trial is not retried.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = [
    "Preempted",
    "StopRequested",
    "check",
    "deferred_interrupts",
    "preempted",
    "request",
    "requested",
]

FORCE_AFTER = 3  # Ctrl-C presses


class StopRequested(KeyboardInterrupt):
    """Raised at a safe point after Ctrl-C (or SIGTERM) asked the process to stop."""


class Preempted(StopRequested):
    """Raised at a safe point after SIGTERM: the process is being preempted."""


_stop = threading.Event()
_preempt = threading.Event()


def request(*, preempt: bool = False) -> None:
    """Ask this process to stop at the next safe point (``preempt``: SIGTERM's stop)."""
    if preempt:
        _preempt.set()
    _stop.set()


def preempted() -> bool:
    """Whether the stop asked for is a preemption (SIGTERM), not the user's Ctrl-C."""
    return _preempt.is_set()


def requested() -> bool:
    """Whether a stop was asked for."""
    return _stop.is_set()


def check() -> None:
    """Raise :class:`StopRequested` if a stop was asked for; call where nothing is half-written."""
    if _stop.is_set():
        if _preempt.is_set():
            raise Preempted("preempted (SIGTERM)")
        raise StopRequested("interrupted")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@contextmanager
def deferred_interrupts(echo: Callable[[str], None] = _say) -> Iterator[None]:
    """Within the block, Ctrl-C and SIGTERM request a stop instead of raising at once.

    Only the main thread can install signal handlers; elsewhere the block changes nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    presses = 0

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        nonlocal presses
        presses += 1
        if presses >= FORCE_AFTER:
            raise KeyboardInterrupt
        if presses == 1:
            echo(
                "stopping: the running trial ends at its next step and is recorded as "
                f"interrupted (Ctrl-C {FORCE_AFTER - 1} more times to force)"
            )
        request()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        request(preempt=True)

    old_int = signal.signal(signal.SIGINT, on_sigint)
    old_term = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)
