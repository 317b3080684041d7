"""Two ``lrsearch run`` of one study started at once on a fresh home: both work, one range test.

Real processes: the MLflow store is created (and migrated) by one of them while the other
waits on its lock, and the study's range test runs once, the second run reusing its result.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from lrsearch.tracking import local_tracking_uri
from tests.test_cli_study import TINY

pytestmark = pytest.mark.process
ROOT = Path(__file__).resolve().parents[1]


def _lrsearch(home: Path, *args: str) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/bin:/bin", "LRSEARCH_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "lrsearch.cli", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_two_runs_at_once_on_a_fresh_home(tmp_path: Path) -> None:
    home = tmp_path / "home"  # does not exist yet: both create it
    study = tmp_path / "twice.toml"
    study.write_text(TINY.format(name="twice"))  # 3 trials
    runs = [_lrsearch(home, "run", str(study)) for _ in range(2)]
    outputs = [run.communicate(timeout=300)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output[-3000:]
        assert "Traceback" not in output
    assert sum("running the LR range test" in output for output in outputs) == 1

    status = _lrsearch(home, "status", "--study", "twice", "--json")
    counts = json.loads(status.communicate(timeout=120)[0])["trials"]
    assert counts["COMPLETE"] + counts["PRUNED"] == 3
    client = MlflowClient(local_tracking_uri(home)[0])
    experiment = client.get_experiment_by_name("twice")
    runs_by_role: dict[str, list[str]] = {}
    for run in client.search_runs([experiment.experiment_id], max_results=100):
        runs_by_role.setdefault(run.data.tags.get("lrsearch.role", ""), []).append(run.info.status)
    assert runs_by_role["study"] == ["FINISHED"]  # one parent run, both runs wrote to it
    assert runs_by_role["trial"].count("FINISHED") == 3
