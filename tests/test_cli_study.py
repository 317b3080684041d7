"""The study commands through click, on a tiny workload."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import numpy as np
import optuna
import pytest
import torch
from click.testing import CliRunner

from lrsearch.cli import cli
from lrsearch.schedules import schedule_from_dict
from lrsearch.storage import default_storage, open_storage

TINY = """
[study]
name = "{name}"
workload = "tests.tiny_workloads:blobs"
n_trials = 3
epochs = 2
[range_test]
repeats = 1
num_iter = 20
[prior]
n_startup_trials = 2
"""


def _invoke(*args: str, env=None):
    return CliRunner().invoke(cli, list(args), obj={}, env=env)


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    study_file = home / "tiny.toml"
    study_file.write_text(TINY.format(name="clitiny"))
    env = {"LRSEARCH_HOME": str(home)}
    result = _invoke("run", str(study_file), env=env)
    assert result.exit_code == 0, result.output
    return home, env, result.output


def test_run_prints_best_and_ui_hint(finished_study) -> None:
    _, _, output = finished_study
    assert "study 'clitiny': " in output and "best: trial" in output
    assert "lrsearch ui --study clitiny" in output


def test_status_json_and_table(finished_study) -> None:
    _, env, _ = finished_study
    result = _invoke("status", "--study", "clitiny", "--json", env=env)
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["trials"]["COMPLETE"] + data["trials"]["PRUNED"] == 3
    assert data["best"]["value"] > 0 and "max_lr" in data["best"]["params"]
    table = _invoke("status", env=env)
    assert table.exit_code == 0 and "clitiny" in table.output


def test_best_json_and_python_rebuild_the_schedule(finished_study) -> None:
    _, env, _ = finished_study
    trust = ("--allow-workload", "tests.*")  # the study names a test workload by import path
    result = _invoke("best", "--study", "clitiny", "--format", "json", *trust, env=env)
    assert result.exit_code == 0
    record = json.loads(result.output)
    schedule = schedule_from_dict(record["schedule"])
    total = record["epochs"] * record["steps_per_epoch"]

    code = _invoke("best", "--study", "clitiny", "--format", "python", *trust, env=env).output
    assert "lrsearch" not in code.replace("# lrsearch study", "")  # runs without lrsearch
    model = torch.nn.Linear(2, 2)
    scope: dict = {"model": model}
    exec(code, scope)
    optimizer, scheduler = scope["optimizer"], scope["scheduler"]
    lrs, momenta = [], []
    for step in range(total):
        scope["set_momentum"](step)
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
        optimizer.step()
        scheduler.step()
    assert np.allclose(lrs, schedule.lrs(total), rtol=1e-6)
    assert np.allclose(momenta, schedule.momenta(total), rtol=1e-5)
    assert optimizer.param_groups[0]["weight_decay"] == pytest.approx(record["weight_decay"])


def test_train_from_study(finished_study) -> None:
    _, env, _ = finished_study
    result = _invoke(
        "train", "--from-study", "clitiny", "--json", "--allow-workload", "tests.*", env=env
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["epochs"] == 2
    assert "retraining trial" in result.stderr


def _experiment(home):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{home}/mlflow.db").get_experiment_by_name("clitiny")


def test_ui_dry_run_uses_the_embedded_store(finished_study) -> None:
    home, env, _ = finished_study
    result = _invoke("ui", "--study", "clitiny", "--dry-run", "--port", "5123", env=env)
    assert result.exit_code == 0
    assert f"sqlite:///{home}/mlflow.db" in result.output and "5123" in result.output
    assert "--default-artifact-root" in result.output
    experiment_id = _experiment(home).experiment_id
    page = f"http://127.0.0.1:5123/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    assert page in result.output.splitlines()


def test_ui_without_a_study_shows_the_experiments(finished_study) -> None:
    _, env, _ = finished_study
    result = _invoke("ui", "--dry-run", env=env)
    assert result.exit_code == 0
    assert "http://127.0.0.1:5000/#/experiments?workflowType=machine_learning" in result.output


def test_ui_serves_the_study_runs_page(finished_study, monkeypatch) -> None:
    home, env, _ = finished_study
    servers: list[list[str]] = []
    real_run = subprocess.run

    def run(command, *args, **kwargs):
        if command[1:4] != ["-m", "mlflow", "server"]:
            return real_run(command, *args, **kwargs)
        servers.append(command)  # as if Ctrl-C stopped it at once
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", run)
    result = _invoke("ui", "--study", "clitiny", "--no-open", env=env)
    assert result.exit_code == 0, result.output
    assert len(servers) == 1 and f"sqlite:///{home}/mlflow.db" in servers[0]
    experiment = _experiment(home)
    assert f"/#/experiments/{experiment.experiment_id}/runs?" in result.output
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_status_fits_80_columns_with_a_long_study_name(finished_study, tmp_path) -> None:
    home, env, _ = finished_study
    name = "clitiny-copied-under-a-name-too-long-for-the-status-table"
    storage = f"sqlite:///{tmp_path}/optuna.db"
    optuna.copy_study(
        from_study_name="clitiny",
        from_storage=open_storage(default_storage(home)),
        to_storage=storage,
        to_study_name=name,
    )
    counts = json.loads(_invoke("status", "--storage", storage, "--json", env=env).output)[0]
    result = _invoke("status", "--storage", storage, env={**env, "COLUMNS": None})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80, result.output
    assert "…" not in result.output and name in {line.strip() for line in lines}
    row = next(line.split() for line in lines if line.startswith(name[:8]))
    trials = counts["trials"]
    states = [trials[k] for k in ("COMPLETE", "PRUNED")] + [counts["diverged"]]
    states += [trials[k] for k in ("FAIL", "RUNNING")] + [counts["n_trials_target"]]
    assert row[1:7] == [str(n) for n in states]
    assert "diverged" in result.output


def test_validate_ok(tmp_path) -> None:
    f = tmp_path / "ok.toml"
    f.write_text(TINY.format(name="ok"))
    result = _invoke("validate", str(f))
    assert result.exit_code == 0 and "ok (study 'ok'" in result.output


def test_shipped_study_files_validate(repo_root) -> None:
    files = sorted((repo_root / "studies").glob("*.toml"))
    assert {f.name for f in files} >= {"quickstart.toml", "mnist1d-cnn.toml", "digits-mlp.toml"}
    for f in files:
        result = _invoke("validate", str(f))
        assert result.exit_code == 0, (f, result.output)


BAD_FILES = [
    ("[study]\nname = 'x'\n", "study.workload: missing"),
    ("[study]\nworkload = 'digits-mlp'\n", "study.name: missing"),
    ("[study]\nname = 'x'\nworkload = 'digits-mlp'\nn_trials = 'ten'\n", "study.n_trials"),
    ("[study]\nname = 'x'\nworkload = 'digits-mlp'\nn_trials = 0\n", "study.n_trials"),
    (
        "[study]\nname = 'x'\nworkload = 'digits-mlp'\n[space]\ndiv_factor = [25, 4]\n",
        "space.div_factor: low must be <= high",
    ),
    (
        "[study]\nname = 'x'\nworkload = 'digits-mlp'\n[space]\ncycle_frac = [0.5, 1.5]\n",
        "cycle_frac",
    ),
    ("[study]\nname = 'x'\nworkload = 'nope-net'\n", "unknown workload 'nope-net'"),
    ("[study]\nname = 'x'\nworkload = 'digits-mlp'\n[pruner]\nname = 'fancy'\n", "pruner.name"),
    (
        "[study]\nname = 'x'\nworkload = 'digits-mlp'\n[space]\npolicies = ['sgdr']\n",
        "space.policies",
    ),
    ("[study]\nname = 'x'\nworkload = 'digits-mlp'\nepochz = 3\n", "study.epochz: unknown field"),
    ("[study\nname = 'x'\n", "not valid TOML"),
    (
        "[study]\nname = 'x'\nworkload = 'digits-mlp'\n[range_test]\nstart_lr = 1.0\nend_lr = 0.1\n",
        "start_lr must be < end_lr",
    ),
]


@pytest.mark.parametrize(("text", "needle"), BAD_FILES)
def test_bad_study_files_one_line_nothing_written(tmp_path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    db = tmp_path / "optuna.db"
    result = _invoke(
        "run", str(f), "--storage", f"sqlite:///{db}", env={"LRSEARCH_HOME": str(tmp_path)}
    )
    assert result.exit_code != 0
    out = result.output.strip()
    assert needle in out, out
    assert len(out.splitlines()) == 1 and "Traceback" not in out
    if db.exists():
        with sqlite3.connect(db) as conn:
            assert conn.execute("select count(*) from studies").fetchone()[0] == 0
    assert not (tmp_path / "mlflow.db").exists()
    validated = _invoke("validate", str(f))
    assert validated.exit_code != 0 and needle in validated.output


def test_unknown_study_name(tmp_path) -> None:
    result = _invoke("status", "--study", "ghost", env={"LRSEARCH_HOME": str(tmp_path)})
    assert result.exit_code != 0 and "no study named 'ghost'" in result.output
