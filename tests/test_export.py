"""``lrsearch best --format python``: a script that runs as it is and trains as the trial did."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from lrsearch.cli import cli
from lrsearch.schedules import schedule_from_dict
from tests.test_cli_study import TINY
from tests.tiny_workloads import blobs

STUDY = TINY.format(name="exported").replace(
    "tests.tiny_workloads:blobs", "tests.tiny_workloads:blobs_two_groups"
) + (
    "[tracking]\nenabled = false\n"
    "[space]\nweight_decay = [0.00123, 0.00123]\ndiv_factor = [12.5, 12.5]\n"
)


def _invoke(env: dict[str, str], *args: str):
    result = CliRunner().invoke(cli, list(args), obj={}, env=env)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "study.toml").write_text(STUDY)
    # the study names a test workload by import path: this process trusts the tests' own
    env = {"LRSEARCH_HOME": str(home), "LRSEARCH_ALLOW_WORKLOAD": "tests.*"}
    _invoke(env, "run", str(home / "study.toml"))
    record = json.loads(_invoke(env, "best", "--study", "exported", "--format", "json"))
    script = home / "best.py"
    script.write_text(_invoke(env, "best", "--study", "exported", "--format", "python"))
    return home, record, script


def test_the_record_replays_fixed_parameters(exported) -> None:
    _home, record, _script = exported
    params = record["params"]
    assert params["weight_decay"] == record["weight_decay"] == 0.00123
    assert params["div_factor"] == 12.5
    schedule = schedule_from_dict(record["schedule"])
    assert schedule.lr_at(0) == pytest.approx(params["max_lr"] / 12.5, rel=1e-12)


def test_the_script_runs_and_sets_the_trials_lr_and_momentum_every_step(exported) -> None:
    home, record, script = exported
    code = script.read_text()
    assert "lrsearch" not in code.split('"""', 2)[2]  # only the docstring names lrsearch
    assert "PLACEHOLDER" in code
    history = home / "steps.json"
    done = subprocess.run(
        [sys.executable, str(script), "--history", str(history)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )
    assert done.returncode == 0, done.stderr
    assert f"epoch {record['epochs']}/{record['epochs']}" in done.stdout
    steps = json.loads(history.read_text())
    total = record["epochs"] * record["steps_per_epoch"]
    schedule = schedule_from_dict(record["schedule"])
    assert len(steps) == total
    assert np.allclose([s["lr"] for s in steps], schedule.lrs(total), rtol=1e-9, atol=0)
    assert np.allclose([s["momentum"] for s in steps], schedule.momenta(total), rtol=1e-9, atol=0)


def test_the_script_builds_the_workloads_parameter_groups(exported) -> None:
    _home, _record, script = exported
    scope: dict = {"__name__": "exported_script"}
    exec(script.read_text(), scope)
    model = blobs().build_model()  # the workload's own model: its parameter names match
    optimizer = scope["make_optimizer"](model)
    decayed, rest = optimizer.param_groups
    assert decayed["weight_decay"] == 0.00123 and rest["weight_decay"] == 0.0
    assert rest["lr"] == pytest.approx(0.1 * decayed["lr"], rel=1e-12)
    assert decayed["lr"] == pytest.approx(scope["BUILD_LR"], rel=1e-12)
    assert [len(g["params"]) for g in optimizer.param_groups] == [2, 2]
    assert isinstance(optimizer, torch.optim.SGD)


def test_a_plateau_trial_says_what_the_script_leaves_out(exported) -> None:
    from lrsearch.export import _header
    from lrsearch.schedules import PlateauDecay

    _home, record, _script = exported
    header = _header({**record, "schedule": PlateauDecay(0.1, factor=0.2, patience=2).to_dict()})
    assert "ReduceLROnPlateau" in header and "factor=0.2, patience=2" in header
    assert "ReduceLROnPlateau" not in _header(record)
