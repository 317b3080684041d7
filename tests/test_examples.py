"""The examples/ folder runs, tiny: your own loop and the same task as a Workload."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from lrsearch.cli import cli
from tests.steps_record import check_steps

# Whole studies and a script in a subprocess: CI runs them with `make test-distributed`,
# which keeps the default suite under its time budget.
pytestmark = pytest.mark.process


def _run(study: str, home: Path, repo_root: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    # `examples.own_loop:train` imports from the working directory, as `lrsearch run` does
    monkeypatch.chdir(repo_root)
    result = CliRunner().invoke(
        cli,
        ["run", f"examples/{study}.toml", "--devices", "cpu"],
        obj={},
        env={"LRSEARCH_HOME": str(home)},
    )
    assert result.exit_code == 0, result.output
    return result.output


def _trial_runs(home: Path, study: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    experiment = client.get_experiment_by_name(study)
    runs = client.search_runs([experiment.experiment_id])
    return [r for r in runs if r.data.tags.get("lrsearch.role") == "trial"], client


def test_own_loop_study_runs_and_records_per_step_lr(tmp_path, repo_root, monkeypatch) -> None:
    output = _run("own_loop", tmp_path, repo_root, monkeypatch)
    assert "study 'own-loop-digits': 2 complete" in output
    runs, client = _trial_runs(tmp_path, "own-loop-digits")
    assert len(runs) == 2
    for run in runs:
        assert run.info.status == "FINISHED"
        check_steps(client, run.info.run_id, 2 * 22)  # the base param group's LR, every step
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2


def test_declarative_study_runs_and_retrains_exactly(tmp_path, repo_root, monkeypatch) -> None:
    output = _run("declarative", tmp_path, repo_root, monkeypatch)
    assert "study 'declarative-digits': 2 complete" in output
    runs, _ = _trial_runs(tmp_path, "declarative-digits")
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    # Its DataLoader has a generator of its own: reseeded per trial, so the best trial
    # retrains to its value to the decimal (it ran after another trial in the same worker).
    retrained = CliRunner().invoke(
        cli,
        ["train", "--from-study", "declarative-digits", "--allow-workload", "examples.*"],
        obj={},
        env={"LRSEARCH_HOME": str(tmp_path)},
    )
    assert retrained.exit_code == 0, retrained.output
    best = max(float(r.data.metrics["val_accuracy"]) for r in runs)
    assert f"val_accuracy={best:.2f}" in retrained.output


def test_own_loop_script_runs_standalone(repo_root) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "examples/own_loop.py"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "epoch 2: val accuracy" in done.stdout


@pytest.mark.slow  # two more whole studies; the integrations' own tests run in CI
@pytest.mark.parametrize(
    ("study", "name"), [("lightning_digits", "lightning-digits"), ("hf_tiny", "hf-tiny-digits")]
)
def test_integration_example_studies_run(study, name, tmp_path, repo_root, monkeypatch) -> None:
    pytest.importorskip("lightning" if study.startswith("lightning") else "accelerate")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    output = _run(study, tmp_path, repo_root, monkeypatch)
    assert f"study '{name}': 2 complete" in output
    runs, client = _trial_runs(tmp_path, name)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        check_steps(client, run.info.run_id, 2 * 22)
        assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 2
