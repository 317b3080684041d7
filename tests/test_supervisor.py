"""lrsearch.supervisor: a dead worker's trial is re-queued and the worker replaced.

The workers here are real processes that only exit with a chosen status (a real worker
imports torch and trains: seconds each); the study, the recovery and the restarts are the
supervisor's own.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from optuna.trial import TrialState

from lrsearch import supervisor
from lrsearch.config import parse_study_config
from lrsearch.devices import Slot
from lrsearch.errors import WorkloadError
from lrsearch.prior import LRPrior
from lrsearch.study import StudyHandle
from lrsearch.supervisor import MAX_RESTARTS, Supervisor
from lrsearch.trials import FAIL_REASON, WORKER
from tests.tiny_workloads import blobs

CONFIG = {"study": {"name": "sup", "workload": "tests.tiny_workloads:blobs", "n_trials": 2}}
PRIOR = LRPrior(center=0.1, sigma_decades=0.5, low=1e-3, high=1.0)
SLOT = Slot(label="cpu0", device="cpu", visible_gpu=None, threads=1)


class _Exiting(Supervisor):
    """Workers that exit with ``code``; the first one owns a RUNNING trial when it dies."""

    def __init__(self, handle: StudyHandle, code: int, lines: list[str]) -> None:
        super().__init__(handle, [SLOT], n_trials=2, timeout=None, recorder=None, echo=lines.append)
        self.code = code
        self.spawned: list[int] = []

    def _spawn(self, index: int, slot: Slot) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [sys.executable, "-c", f"import sys; sys.stdin.read(); sys.exit({self.code})"],
            stdin=subprocess.PIPE,
        )
        if not self.spawned:
            trial = self.handle.study.ask()
            trial.set_user_attr(WORKER, f"{self.host}:{process.pid}")
        self.spawned.append(process.pid)
        process.stdin.close()  # the trial is claimed: now it may die
        return process


@pytest.fixture(autouse=True)
def _fast_polls(monkeypatch) -> None:
    monkeypatch.setattr(supervisor, "POLL_S", 0.02)


def _handle() -> StudyHandle:
    return StudyHandle.in_memory(parse_study_config(CONFIG), PRIOR, blobs())


def test_a_dead_workers_trial_is_requeued_and_the_worker_replaced() -> None:
    handle, lines = _handle(), []
    sup = _Exiting(handle, 1, lines)
    sup.run()
    assert len(sup.spawned) == 1 + MAX_RESTARTS  # then it gives up on that slot
    trials = handle.study.get_trials()
    assert trials[0].state == TrialState.FAIL and "died" in trials[0].user_attrs[FAIL_REASON]
    assert trials[1].state == TrialState.WAITING  # the retry, for the next worker
    assert (
        lines[0] == f"worker cpu0 (pid {sup.spawned[0]}) exited with 1; 1 trial(s) re-queued: [0]"
    )
    assert all("0 trial(s) re-queued" in line for line in lines[1:])


def test_a_broken_workload_is_not_restarted() -> None:
    handle, lines = _handle(), []
    sup = _Exiting(handle, WorkloadError.exit_code, lines)
    with pytest.raises(WorkloadError, match="fix the workload"):
        sup.run()
    assert len(sup.spawned) == 1


def test_a_worker_that_finishes_is_left_alone() -> None:
    handle, lines = _handle(), []
    sup = _Exiting(handle, 0, lines)
    sup.run()
    assert len(sup.spawned) == 1 and lines == []


def test_a_workers_orders_carry_no_storage_url() -> None:
    """The URL (and its password) goes in the environment, never on the command line."""
    handle = _handle()
    sup = Supervisor(handle, [SLOT], n_trials=2, timeout=None, recorder=None, echo=print)
    orders = json.loads(sup._orders(SLOT))
    assert orders == {
        "study": handle.name,
        "device": "cpu",
        "n_trials": 2,
        "timeout": None,
        "workload": "tests.tiny_workloads:blobs",
        "tracking_uri": None,
    }
