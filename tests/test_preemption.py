"""A worker SIGKILLed mid-trial: the retry resumes from the trial's checkpoint, not epoch 1.

Real processes on the embedded journal storage (its checkpoints beside it): ``lrsearch run``
trains trial 0 of a 14-epoch study and is killed in epoch 10; ``lrsearch worker`` then finds
the trial lost (lrsearch's heartbeat), runs its retry from the epoch-9 checkpoint, and ends
with the very value an uninterrupted run of the same trial reaches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.tracking import local_tracking_uri

pytestmark = pytest.mark.process
ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 14
WORKER = [sys.executable, "-m", "lrsearch.cli", "worker", "--study", "preempt", "--devices", "cpu"]

STUDY = f"""
[study]
name = "preempt"
workload = "tests.tiny_workloads:slow_blobs"
workload_options = {{ n = 512, step_ms = 8 }}  # epochs of 12 steps of >= 8 ms
n_trials = 2
epochs = {EPOCHS}
[range_test]
repeats = 1
num_iter = 30
[prior]
startup = "prior"
[pruner]
name = "none"
[tracking]
update_ratio_every = 0
"""


def _env(home: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "LRSEARCH_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "LRSEARCH_HEARTBEAT_S": "1",
        "LRSEARCH_GRACE_S": "3",
        "LRSEARCH_THREADS": "1",
        "LRSEARCH_QUIET": "1",
        "LRSEARCH_CHECKPOINT_SHARE": "1",  # every epoch (by default: within 1% of the time)
    }
    for key in ("LRSEARCH_STORAGE", "LRSEARCH_CHECKPOINT_DIR", "LRSEARCH_TRACKING_URI"):
        env.pop(key, None)
    return env


def _wait_for_epoch(directory: Path, epoch: int, proc: subprocess.Popen[bytes]) -> int:
    """Poll for a checkpoint of ``epoch`` or later (epoch + 1 has started); its epoch."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        names = os.listdir(directory) if directory.is_dir() else []
        done = [int(n[6:-3]) for n in names if n.startswith("epoch-") and n.endswith(".pt")]
        if done and max(done) >= epoch:
            return max(done)
        time.sleep(0.01)
    raise AssertionError(f"no checkpoint of epoch {epoch} (run exited {proc.poll()})")


def _uninterrupted_value(home: Path, trial: optuna.trial.FrozenTrial) -> float:
    """Trial 0 trained from start to end in one go, the way its worker trains it."""
    from lrsearch.study import load_study
    from lrsearch.training import train
    from lrsearch.trials import trial_schedule, trial_seed

    url = f"journal:{home / 'optuna.journal'}"
    handle = load_study("preempt", url, allow_workloads=("tests.tiny_workloads:*",))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the workers (LRSEARCH_THREADS)
    try:
        result = train(
            handle.plan.workload,
            trial_schedule(handle, trial),
            epochs=handle.plan.epochs,
            batch_size=handle.config.study.batch_size,
            weight_decay=trial.params["weight_decay"],
            seed=trial_seed(handle.config, 0),
        )
    finally:
        torch.set_num_threads(threads)
    return float(result.val_metric)


def _start_run(tmp_path: Path, env: dict[str, str], **popen: Any) -> subprocess.Popen[str]:
    """`lrsearch run` of the study in the background (its stderr kept)."""
    study_file = tmp_path / "preempt.toml"
    study_file.write_text(STUDY)
    command = [sys.executable, "-m", "lrsearch.cli", "run", str(study_file), "--devices", "cpu"]
    return subprocess.Popen(
        command,
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )


def test_a_trial_killed_in_epoch_10_resumes_and_ends_as_if_never_killed(tmp_path) -> None:
    env = _env(tmp_path)
    run = _start_run(tmp_path, env, start_new_session=True)
    trial_dir = tmp_path / "checkpoints" / "preempt" / "trial-0"
    try:
        killed_after = _wait_for_epoch(trial_dir, 9, run)
    finally:
        os.killpg(run.pid, signal.SIGKILL)  # the worker is preempted (in epoch 10)
        run.communicate()
    # Past the heartbeat's grace: the next worker's first budget check finds the trial lost and
    # queues its retry, which runs once that worker's fresh trial is done (otherwise two fresh
    # trials could fill the budget of 2 first and leave the retry WAITING).
    time.sleep(3.5)

    _worker_resumes(tmp_path, env, killed_after)


def _worker_resumes(tmp_path: Path, env: dict[str, str], killed_after: int) -> None:
    """A worker runs the lost trial's retry from its checkpoint and a fresh trial; checks."""
    trial_dir = tmp_path / "checkpoints" / "preempt" / "trial-0"
    worker = subprocess.run(
        [*WORKER, "--allow-workload", "tests.tiny_workloads:*"],
        check=False,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr[-3000:]

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="preempt", storage=storage).trials
    dead = trials[0]
    assert dead.state == TrialState.FAIL
    # lrsearch's claim lets the worker's fresh trial go ahead, then the retry: both finish
    (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert retry.state == TrialState.COMPLETE
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 2
    assert "resumed_from_epoch" in retry.user_attrs, worker.stderr[-3000:]
    resumed = retry.user_attrs["resumed_from_epoch"]
    assert 9 <= resumed <= killed_after + 1 < EPOCHS
    assert sorted(retry.intermediate_values) == list(range(1, EPOCHS + 1))  # history whole
    assert retry.user_attrs["training"]["checkpoints"] == EPOCHS - 1 - resumed
    assert not trial_dir.exists()  # removed once the trial ended

    client = MlflowClient(local_tracking_uri(tmp_path)[0])
    run_tags = client.get_run(retry.user_attrs["mlflow_run_id"]).data.tags
    assert run_tags["lrsearch.resumed_from_epoch"] == str(resumed)

    assert retry.value == _uninterrupted_value(tmp_path, dead)


def test_a_worker_preempted_by_sigterm_queues_its_trial_which_resumes(tmp_path) -> None:
    """SIGTERM (Kubernetes, Slurm): the trial ends at its next step, FAIL with the reason, and
    is queued again at once (no heartbeat wait); the next worker resumes it."""
    env = _env(tmp_path)
    run = _start_run(tmp_path, env)
    trial_dir = tmp_path / "checkpoints" / "preempt" / "trial-0"
    try:
        stopped_after = _wait_for_epoch(trial_dir, 9, run)
    finally:
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=60)
    assert "Traceback" not in err, err[-3000:]
    assert "preempted (SIGTERM); running trials were queued again" in err, err[-3000:]
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "optuna.journal"))
    )
    trials = optuna.load_study(study_name="preempt", storage=storage).trials
    assert trials[0].state == TrialState.FAIL
    assert trials[0].user_attrs["fail_reason"].startswith("preempted (SIGTERM)")
    assert [t.system_attrs.get("failed_trial") for t in trials[1:]] == [0]  # queued at once
    assert trial_dir.is_dir()  # kept for the retry
    # the trial may have finished the epoch it was in before it stopped: a later checkpoint
    last = max(int(n[6:-3]) for n in os.listdir(trial_dir) if n.endswith(".pt"))
    _worker_resumes(tmp_path, env, max(stopped_after, last))
