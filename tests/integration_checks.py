"""What the Lightning and Hugging Face study tests check alike, on a finished study's records."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.cli import cli
from lrsearch.reporting import trial_schedule
from lrsearch.study import load_study
from tests.steps_record import check_steps

STUDY = """
[study]
name = "{name}"
loop = "{loop}"
metric = "accuracy"
direction = "maximize"
epochs = 2
steps_per_epoch = {steps_per_epoch}
n_trials = 4
[range_test]
repeats = 1
num_iter = 12
[prior]
n_startup_trials = 4
startup = "prior"      # every trial trains: no probe a decade out
[pruner]               # trial 2 reports a trailing metric: the median pruner stops it
name = "median"
n_startup_trials = 2
n_warmup_steps = 0
"""


def run_study(
    home: Path, name: str, loop: str, steps_per_epoch: int, storage: str, mlflow_db: Path
) -> str:
    """``lrsearch run`` on a 4-trial study of ``loop`` (MLflow store: a copy of ``mlflow_db``)."""
    shutil.copy(mlflow_db, home / "mlflow.db")
    study_file = home / f"{name}.toml"
    study_file.write_text(STUDY.format(name=name, loop=loop, steps_per_epoch=steps_per_epoch))
    result = CliRunner().invoke(
        cli,
        ["run", str(study_file), "--devices", "cpu", "--storage", storage],
        obj={},
        env={"LRSEARCH_HOME": str(home), "HF_HUB_OFFLINE": "1"},
    )
    assert result.exit_code == 0, result.output
    return result.output


def check_study(
    home: Path,
    name: str,
    loop: str,
    storage: str,
    applied: dict[int, list[float]],
    total_steps: int,
) -> None:
    """Per-step ``lr`` of every complete trial is its schedule's, step for step, both as logged
    and as the optimizer ran (``applied``: trial number -> the LR of each optimizer step);
    trial 2 ends PRUNED with its run KILLED; the range test ran through the trainer."""
    handle = load_study(name, storage, allow_workloads=(loop,))
    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    trials = {t.number: t for t in handle.study.trials}
    assert trials[2].state == TrialState.PRUNED
    killed = client.get_run(trials[2].user_attrs["mlflow_run_id"])
    assert killed.info.status == "KILLED"
    complete = [t for t in trials.values() if t.state == TrialState.COMPLETE]
    assert len(complete) >= 2
    for trial in complete:
        schedule = trial_schedule(handle, trial)
        expected = [schedule.lr_at(step) for step in range(total_steps)]
        # every step in the run's steps.csv; MLflow points every few steps, at the same LRs
        check_steps(client, trial.user_attrs["mlflow_run_id"], total_steps, expected)
        assert applied[trial.number] == pytest.approx(expected, rel=1e-6)
    parent = client.get_run(handle.parent_run_id)
    assert parent.data.params["loop"] == loop
    ramp = client.get_metric_history(handle.parent_run_id, "loss_r0")
    assert len(ramp) == int(parent.data.params["steps"]) >= 10
