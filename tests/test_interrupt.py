"""Ctrl-C at any moment of `lrsearch run`: one line, non-zero exit, nothing left RUNNING, resumable.

Each interruption hits the same study (embedded SQLite + MLflow store), so every case also
checks that the study resumes after the one before. The default suite takes a few moments
(range test, mid-trial, between trials); the `slow` variant sweeps many. Both start real
processes for a minute or more, so they run with `make test-distributed` (marker `process`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.tracking import local_tracking_uri
from tests.test_proxy import lrsearch_taking_ctrl_c

pytestmark = pytest.mark.process

ROOT = Path(__file__).resolve().parents[1]
STUDY = """
[study]
name = "ctrlc"
workload = "tests.tiny_workloads:blobs"
workload_options = {{ n = 2048 }}
n_trials = {n_trials}
epochs = 4
[range_test]
repeats = 2
num_iter = 200
[pruner]
name = "none"
[tracking]
update_ratio_every = 0
"""


def _start(home: Path, f: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "LRSEARCH_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("LRSEARCH_STORAGE", None)
    return subprocess.Popen(
        lrsearch_taking_ctrl_c("run", str(f)),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _study(home: Path) -> optuna.Study | None:
    from lrsearch.storage import default_storage, open_storage

    try:
        return optuna.load_study(study_name="ctrlc", storage=open_storage(default_storage(home)))
    except KeyError:
        return None


def _wait_for(home: Path, moment: str, deadline_s: float = 240) -> None:
    """Block until the study is at ``moment``: range test, mid-trial, or between trials."""
    deadline = time.monotonic() + deadline_s
    done_before = None
    while time.monotonic() < deadline:
        time.sleep(0.05)
        study = _study(home) if (home / "optuna.journal").exists() else None
        if study is None:
            continue
        trials = study.get_trials(deepcopy=False)
        if moment == "range test" and "lrsearch.prior" not in study.user_attrs:
            return
        if moment == "mid-trial" and any(
            t.state == TrialState.RUNNING and t.last_step for t in trials
        ):
            return
        finished = sum(t.state == TrialState.COMPLETE for t in trials)
        if moment == "between trials":
            done_before = finished if done_before is None else done_before
            if finished > done_before:
                return
    raise AssertionError(f"the study never reached {moment!r}")


def _check_nothing_running(home: Path) -> None:
    study = _study(home)
    if study is not None:
        assert not study.get_trials(states=(TrialState.RUNNING,))
    client = MlflowClient(local_tracking_uri(home)[0])
    experiment = client.get_experiment_by_name("ctrlc")
    if experiment is not None:
        running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
        assert not running, [r.info.run_name for r in running]


def _interrupt(home: Path, f: Path, moment: str | float) -> None:
    run = _start(home, f)
    if isinstance(moment, str):
        _wait_for(home, moment)
    else:
        time.sleep(moment)
    run.send_signal(signal.SIGINT)
    _, stderr = run.communicate(timeout=120)
    if run.returncode == 0:  # the study finished before the signal: nothing to check
        return
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1 and lines[0].startswith("error: interrupted"), stderr
    _check_nothing_running(home)


def _resume_to_the_end(home: Path, f: Path, n_trials: int) -> None:
    run = _start(home, f)
    _, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    study = _study(home)
    assert study is not None
    finished = study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert len(finished) == n_trials
    assert len(study.user_attrs["lrsearch.range_test"]["repeats"]) == 2  # ran once, kept
    _check_nothing_running(home)


def test_ctrl_c_at_the_moments_that_matter(tmp_path) -> None:
    f = tmp_path / "ctrlc.toml"
    f.write_text(STUDY.format(n_trials=4))
    for moment in ("range test", "mid-trial", "between trials"):
        _interrupt(tmp_path, f, moment)
    _resume_to_the_end(tmp_path, f, 4)


@pytest.mark.slow
def test_ctrl_c_at_many_moments(tmp_path) -> None:
    f = tmp_path / "ctrlc.toml"
    f.write_text(STUDY.format(n_trials=12))
    for offset in (0.5, 2.0, 4.0, 5.5, 7.0, 8.5, 10.0, 12.0, 14.0, 17.0):
        _interrupt(tmp_path, f, offset)
    _resume_to_the_end(tmp_path, f, 12)
