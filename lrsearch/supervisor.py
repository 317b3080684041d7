"""Supervised worker processes: one per device slot, restarted when they die.

Each worker is ``python -m lrsearch.workers`` with the storage URL and its orders in its
environment (never on the command line, where ``ps`` would show a password). A worker that dies is
noticed at once: its running trial is failed and re-queued with the same parameters (the
same path Optuna's heartbeat takes for workers lost on other hosts), its MLflow run is
closed as FAILED, and a replacement worker starts.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lrsearch import interrupt
from lrsearch.devices import Slot
from lrsearch.errors import LrsearchError, WorkloadError
from lrsearch.recording import recover_worker
from lrsearch.storage import STORAGE_ERRORS
from lrsearch.study import StudyHandle

if TYPE_CHECKING:
    from lrsearch.progress import StudyProgress
    from lrsearch.tracking.recorder import StudyRecorder

__all__ = ["Supervisor"]

MAX_RESTARTS = 3
WORKER_ENV = "LRSEARCH_WORKER"  # a supervised worker's orders, as JSON
POLL_S = 0.5


@dataclass
class _Worker:
    index: int
    slot: Slot
    process: subprocess.Popen[bytes]
    restarts: int = 0
    handled: bool = False


class Supervisor:
    """Starts, watches and replaces the worker processes of one study."""

    def __init__(
        self,
        handle: StudyHandle,
        slots: list[Slot],
        *,
        n_trials: int,
        timeout: float | None,
        recorder: StudyRecorder | None,
        echo: Callable[[str], None],
    ) -> None:
        self.handle = handle
        self.slots = slots
        self.n_trials = n_trials
        self.timeout = timeout
        self.recorder = recorder
        self.echo = echo
        self.workers: list[_Worker] = []
        self.broken_workload = False
        self._last_message = ""
        self.host = os.uname().nodename

    def _spawn(self, index: int, slot: Slot) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "LRSEARCH_STORAGE": self.handle.storage_url,
            "LRSEARCH_QUIET": "1",
            "LRSEARCH_THREADS": str(slot.threads),
            WORKER_ENV: self._orders(slot),
        }
        if slot.visible_gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.visible_gpu
        command = [sys.executable, "-m", "lrsearch.workers"]
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)

    def _orders(self, slot: Slot) -> str:
        """What a worker is to do (JSON); ``python -m lrsearch.workers`` reads it."""
        orders = {"study": self.handle.name, "device": slot.device, "n_trials": self.n_trials}
        orders |= {"timeout": self.timeout, "workload": self.handle.config.study.workload}
        orders["tracking_uri"] = self.handle.tracking_uri  # the operator's, not the storage's
        return json.dumps(orders)

    def run(self, progress: StudyProgress | None = None) -> None:
        """Run until every worker has exited; KeyboardInterrupt stops them gracefully."""
        self.workers = [_Worker(i, s, self._spawn(i, s)) for i, s in enumerate(self.slots)]
        try:
            while any(
                w.process.poll() is None or (not w.handled and w.process.returncode)
                for w in self.workers
            ):
                if interrupt.requested():
                    raise interrupt.StopRequested("interrupted")
                self._check()
                if progress is not None:
                    with contextlib.suppress(*STORAGE_ERRORS):  # progress can wait for the storage
                        progress.refresh(sum(w.process.poll() is None for w in self.workers))
                time.sleep(POLL_S)
        except BaseException:  # Ctrl-C, or the storage gone past its grace period
            self._stop_all()
            raise
        if self.broken_workload and self.handle.n_finished() < self.n_trials:
            raise WorkloadError(
                "workers stopped because their trials kept failing (the reason is above); "
                "fix the workload (see --debug) and run again to resume"
            )

    def _check(self) -> None:
        for w in self.workers:
            code = w.process.poll()
            if code is None or code == 0 or w.handled:
                continue
            try:
                recovered = self._recover(w.process.pid)
                finished = self.handle.n_finished()
            except STORAGE_ERRORS as exc:
                # Not an outage the storage rides out by itself: try again at the next poll.
                self._say_once(f"storage error ({type(exc).__name__}); retrying")
                return
            w.handled = True
            self.echo(
                f"worker {w.slot.label} (pid {w.process.pid}) exited with {code}; "
                f"{len(recovered)} trial(s) re-queued: {recovered}"
            )
            if code == WorkloadError.exit_code:  # its trials kept failing: so would a new one
                self.broken_workload = True
            elif w.restarts < MAX_RESTARTS and finished < self.n_trials:
                self.workers.append(
                    _Worker(w.index, w.slot, self._spawn(w.index, w.slot), w.restarts + 1)
                )

    def _say_once(self, message: str) -> None:
        if message != self._last_message:
            self.echo(message)
            self._last_message = message

    def _recover(self, pid: int) -> list[int]:
        """Fail and re-queue the trials a dead worker left RUNNING; close their MLflow runs."""
        return recover_worker(self.handle, f"{self.host}:{pid}", self.recorder)

    def _stop_all(self) -> None:
        """Ask every worker to stop the way this process was asked; give them time to close.

        SIGTERM (this host preempted) is passed on as SIGTERM: the workers' trials are queued
        again and resume from their checkpoints; anything else (Ctrl-C, the storage gone) as
        SIGINT, a stop request that does not retry.
        """
        sig = signal.SIGTERM if interrupt.preempted() else signal.SIGINT
        for w in self.workers:
            if w.process.poll() is None:
                w.process.send_signal(sig)
        deadline = time.monotonic() + 30
        for w in self.workers:
            try:
                w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.process.kill()
            if w.process.returncode not in (0, None):
                # Best effort on the way out: a trial left RUNNING here is failed and
                # retried by the heartbeat of the next run or worker.
                with contextlib.suppress(LrsearchError, *STORAGE_ERRORS):
                    self._recover(w.process.pid)
