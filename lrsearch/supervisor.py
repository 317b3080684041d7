"""Supervised worker processes: one per device slot, restarted when they die.

Each worker is ``python -m lrsearch.cli worker`` with the storage URL in its environment
(never on the command line, where ``ps`` would show a password). A worker that dies is
noticed at once: its running trial is failed and re-queued with the same parameters (the
same path Optuna's heartbeat takes for workers lost on other hosts), its MLflow run is
closed as FAILED, and a replacement worker starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from sqlalchemy.exc import SQLAlchemyError

from lrsearch.devices import Slot
from lrsearch.study import StudyHandle

__all__ = ["Supervisor"]

MAX_RESTARTS = 3
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
        tracker: Any,
        echo: Callable[[str], None],
    ) -> None:
        self.handle = handle
        self.slots = slots
        self.n_trials = n_trials
        self.timeout = timeout
        self.tracker = tracker
        self.echo = echo
        self.workers: list[_Worker] = []
        self._last_message = ""
        self.host = os.uname().nodename

    def _spawn(self, index: int, slot: Slot) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "LRSEARCH_STORAGE": self.handle.storage_url,
            "LRSEARCH_QUIET": "1",
            "LRSEARCH_THREADS": str(slot.threads),
        }
        if slot.visible_gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot.visible_gpu
        command = [
            sys.executable,
            "-m",
            "lrsearch.cli",
            "worker",
            "--study",
            self.handle.name,
            "--devices",
            slot.device,
            "--n-trials",
            str(self.n_trials),
            # the operator's own study file named this workload: trust it
            "--allow-workload",
            self.handle.config.study.workload,
        ]
        if self.timeout:
            command += ["--timeout", str(self.timeout)]
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)

    def run(self, progress: Any = None) -> None:
        """Run until every worker has exited; KeyboardInterrupt stops them gracefully."""
        self.workers = [_Worker(i, s, self._spawn(i, s)) for i, s in enumerate(self.slots)]
        try:
            while any(
                w.process.poll() is None or (not w.handled and w.process.returncode)
                for w in self.workers
            ):
                self._check()
                if progress is not None:
                    with contextlib.suppress(SQLAlchemyError):  # progress can wait for the storage
                        progress.refresh(sum(w.process.poll() is None for w in self.workers))
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            self._stop_all()
            raise

    def _check(self) -> None:
        for w in self.workers:
            code = w.process.poll()
            if code is None or code == 0 or w.handled:
                continue
            try:
                recovered = self._recover(w.process.pid)
                finished = self.handle.n_finished()
            except SQLAlchemyError as exc:
                # The storage is down (a database restart, say): try again at the next poll.
                self._say_once(f"storage unreachable ({type(exc).__name__}); retrying")
                return
            w.handled = True
            self.echo(
                f"worker {w.slot.label} (pid {w.process.pid}) exited with {code}; "
                f"{len(recovered)} trial(s) re-queued: {recovered}"
            )
            if w.restarts < MAX_RESTARTS and finished < self.n_trials:
                self.workers.append(
                    _Worker(w.index, w.slot, self._spawn(w.index, w.slot), w.restarts + 1)
                )

    def _say_once(self, message: str) -> None:
        if message != self._last_message:
            self.echo(message)
            self._last_message = message

    def _recover(self, pid: int) -> list[int]:
        """Fail and re-queue the trials a dead worker left RUNNING; close their MLflow runs."""
        study = self.handle.study
        owner = f"{self.host}:{pid}"
        storage = study._storage
        retry = RetryHeartbeatStaleTrialCallback(max_retry=2)
        recovered = []
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if trial.user_attrs.get("worker") != owner:
                continue
            try:
                storage.set_trial_user_attr(trial._trial_id, "fail_reason", "worker process died")
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue  # the heartbeat check of another worker got there first
            retry(study, storage.get_trial(trial._trial_id))
            run_id = trial.user_attrs.get("mlflow_run_id")
            if self.tracker is not None and run_id:
                self.tracker.set_tags(
                    run_id, {"lrsearch.state": "FAIL", "lrsearch.reason": "worker process died"}
                )
                self.tracker.end_run(run_id, "FAILED")
            recovered.append(trial.number)
        return recovered

    def _stop_all(self) -> None:
        """Ctrl-C reached every worker too (same process group); give them time to close."""
        for w in self.workers:
            if w.process.poll() is None:
                w.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        for w in self.workers:
            try:
                w.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                w.process.kill()
            if w.process.returncode not in (0, None):
                self._recover(w.process.pid)
