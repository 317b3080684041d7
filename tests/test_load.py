"""Load: 8 worker processes x many short trials on PostgreSQL with step logging on.

Not in the default suite (`make test-load`, about 10 minutes on 2 cores for 500 trials).
`LRSEARCH_LOAD_TRIALS` sets the trial count. Checks: no MLflow metric point lost (every
trial's `lr`/`momentum`/`train_loss` histories counted against its step budget), no trial
left RUNNING, no duplicate trial numbers, exactly the requested number of finished trials.
"""

from __future__ import annotations

import os
import time

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.tracking import local_tracking_uri
from tests.steps_record import check_steps, steps_csv
from tests.test_distributed import (  # noqa: F401
    _env,
    _load,
    _lrsearch,
    _study_file,
    forget,
    pg_url,
    start_run,
)

pytestmark = [pytest.mark.load, pytest.mark.postgres]


def test_eight_workers_many_trials_lose_nothing(tmp_path, pg_url) -> None:  # noqa: F811
    n_trials = int(os.environ.get("LRSEARCH_LOAD_TRIALS", "500"))
    f = _study_file(tmp_path, "load", n_trials=n_trials, epochs=1, n=128)
    started = time.monotonic()
    out = _lrsearch(
        "run",
        str(f),
        "--storage",
        pg_url,
        "--devices",
        "cpu",
        "--trials-per-device",
        "8",
        env=_env(tmp_path),
        timeout=3600,
    )
    seconds = time.monotonic() - started
    assert out.returncode == 0, out.stderr[-3000:]
    study = _load("load", pg_url)
    trials = study.trials
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == n_trials

    client = MlflowClient(local_tracking_uri(tmp_path)[0])
    steps = 96 // 32  # one epoch of the study's blobs
    expected = lost = 0
    for t in finished:
        run_id = t.user_attrs["mlflow_run_id"]
        rows = steps_csv(client, run_id)  # every step; MLflow's points: every few steps
        expected += steps
        lost += steps - len(rows)
        check_steps(client, run_id, steps)
    assert lost == 0, f"{lost} of {expected} metric points missing"
    print(
        f"\nload: {n_trials} trials by 8 workers in {seconds:.0f}s "
        f"({n_trials / seconds:.2f} trials/s), {expected} step points checked, 0 lost"
    )


def test_database_restarted_mid_study(tmp_path, pg_url) -> None:  # noqa: F811
    """Restart PostgreSQL while 2 workers run: the study carries on or stops with one clear
    line; afterwards a resume finishes it with exactly the requested trials and nothing RUNNING.

    Opt-in (it restarts the machine's PostgreSQL service): `make test-load`.
    """
    import shutil
    import subprocess

    if shutil.which("pg_ctlcluster") is None:
        pytest.skip("pg_ctlcluster not available to restart PostgreSQL")
    f = _study_file(tmp_path, "restart", n_trials=8, epochs=6, n=2048)
    env = _env(tmp_path)
    args = ["run", str(f), "--storage", pg_url, "--devices", "cpu", "--trials-per-device", "2"]
    run = start_run(f, pg_url, env, capture=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            if any(t.state == TrialState.COMPLETE for t in _load("restart", pg_url).trials):
                break
        except Exception:
            continue
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"], check=True
    )
    _, stderr = run.communicate(timeout=600)
    if run.returncode != 0:  # stopped: with one clear line, never a traceback
        assert "Traceback" not in stderr and "error: " in stderr, stderr[-2000:]
    out = _lrsearch(*args, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    study = _load("restart", pg_url)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 8
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]
    assert len({t.number for t in study.trials}) == len(study.trials)
