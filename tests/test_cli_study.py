"""The study commands through click, on a tiny workload."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import optuna
import pytest
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
num_iter = 40
[prior]
n_startup_trials = 2
startup = "prior"  # every trial trains: no probe a decade out
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
    # Not a terminal: one plain line per finished trial, no live view.
    trial_lines = [line for line in output.splitlines() if line.startswith("trial ")]
    assert len(trial_lines) == 3 and trial_lines[-1].split(" · ")[1] == "3/3 finished", output


def test_status_json_and_table(finished_study) -> None:
    _, env, _ = finished_study
    result = _invoke("status", "--study", "clitiny", "--json", env=env)
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["trials"]["COMPLETE"] + data["trials"]["PRUNED"] == 3
    assert data["best"]["value"] > 0 and "max_lr" in data["best"]["params"]
    # optuna-dashboard opens a journal by its path; it refuses lrsearch's "journal:" prefix.
    assert data["storage"].startswith("journal:")
    assert data["dashboard"] == data["storage"].removeprefix("journal:")
    assert data["dashboard"].endswith("optuna.journal")
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
    scope: dict = {"__name__": "exported"}
    exec(code, scope)
    optimizer = scope["make_optimizer"](scope["build_model"]())
    lrs, momenta = [], []
    for step in range(total):
        scope["set_schedule"](optimizer, [1.0], step)
        lrs.append(optimizer.param_groups[0]["lr"])
        momenta.append(optimizer.param_groups[0]["momentum"])
    assert np.allclose(lrs, schedule.lrs(total), rtol=1e-9)
    assert np.allclose(momenta, schedule.momenta(total), rtol=1e-9)
    assert optimizer.param_groups[0]["weight_decay"] == record["weight_decay"]
    assert record["weight_decay"] == record["params"]["weight_decay"]


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


def _trial_runs(home):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{home}/mlflow.db")
    runs = client.search_runs([_experiment(home).experiment_id])
    return [r for r in runs if r.data.tags.get("lrsearch.role") == "trial"]


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
    from lrsearch.tracking import ui_server

    home, env, _ = finished_study
    served: list[tuple[list[str], str]] = []
    # The server itself is tested in test_cli_ui.py; here: what `ui` asks of it.
    monkeypatch.setattr(ui_server, "serve", lambda command, url, **_: served.append((command, url)))
    result = _invoke("ui", "--study", "clitiny", "--no-open", "--port", "5999", env=env)
    assert result.exit_code == 0, result.output
    assert len(served) == 1 and f"sqlite:///{home}/mlflow.db" in served[0][0]
    experiment = _experiment(home)
    url = served[0][1]
    assert f"/#/experiments/{experiment.experiment_id}/runs?viewStateShareKey=lrsearch&" in url
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(experiment.tags["mlflow.sharedViewState.lrsearch"])
    assert view["orderByKey"] == "metrics.`val_accuracy`" and view["orderByAsc"] is False
    assert view["selectedColumns"][:3] == [
        "metrics.`val_accuracy`",
        "tags.`lrsearch.state`",
        "params.`max_lr`",
    ]
    # every parameter column names a parameter the trial runs logged
    run = _trial_runs(home)[0]
    params = [c.removeprefix("params.`")[:-1] for c in view["selectedColumns"][2:]]
    assert set(params) <= set(run.data.params), (params, sorted(run.data.params))


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
    assert "workload blobs," in result.output


def test_validate_names_a_loop_a_loop(repo_root) -> None:
    result = _invoke("validate", str(repo_root / "examples" / "own_loop.toml"))
    assert result.exit_code == 0, result.output
    assert "loop examples.own_loop:" in result.output and "workload" not in result.output


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
