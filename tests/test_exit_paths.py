"""Every way ``lrsearch run`` ends closes what it opened: the MLflow parent run gets the right
status, nothing stays RUNNING, and a study that never started leaves no empty study behind.
(Ctrl-C at the moments that matter: ``tests/test_interrupt.py``.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from lrsearch.errors import WorkloadError
from lrsearch.storage import list_studies, open_storage
from lrsearch.tracking import local_tracking_uri
from tests.test_hardening import STUDY, _invoke


def _home(tmp_path, workload: str, n_trials: int = 5):
    text = STUDY.format(name="s").replace("tests.tiny_workloads:blobs", workload)
    (tmp_path / "s.toml").write_text(text.replace("n_trials = 2", f"n_trials = {n_trials}"))
    return tmp_path / "s.toml", {"LRSEARCH_HOME": str(tmp_path)}


def _runs(home):
    client = MlflowClient(local_tracking_uri(home)[0])
    experiment = client.get_experiment_by_name("s")
    runs = client.search_runs([experiment.experiment_id])
    return {r.data.tags.get("lrsearch.role"): r for r in runs}, runs


def _one_line(result, needle: str) -> str:
    """The one error line, last (progress lines may come before it), and no traceback."""
    out = result.output.strip()
    assert result.exit_code != 0, out
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    # one error line, no traceback (a finished trial's plain progress line may follow it)
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in out, out
    assert "Traceback" not in out
    return errors[0]


def test_trials_failing_in_a_row_end_the_parent_run_failed(tmp_path) -> None:
    f, env = _home(tmp_path, "tests.tiny_workloads:fails_eval")
    result = _invoke(["run", f, "--devices", "cpu"], env)
    _one_line(result, "3 trials in a row failed; last: RuntimeError: boom in evaluation")
    by_role, runs = _runs(tmp_path)
    assert by_role["study"].info.status == "FAILED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    storage = open_storage(f"journal:{tmp_path / 'optuna.journal'}")
    trials = storage.get_all_trials(storage.get_study_id_from_name("s"))
    assert [t.state for t in trials] == [TrialState.FAIL] * 3
    # resumed (the workload still broken): the same parent run, ended FAILED again
    _one_line(_invoke(["run", f, "--devices", "cpu"], env), "3 trials in a row failed")
    by_role, runs = _runs(tmp_path)
    assert by_role["study"].info.status == "FAILED" and len(runs) == 1 + 6


@pytest.mark.parametrize("command", ["run", "train"])
def test_a_model_without_parameters_is_one_line_and_no_study(tmp_path, command) -> None:
    f, env = _home(tmp_path, "tests.tiny_workloads:no_params")
    args = (
        ["run", f, "--devices", "cpu"]
        if command == "run"
        else ["train", "-w", "tests.tiny_workloads:no_params"]
    )
    line = _one_line(_invoke(args, env), "has no trainable parameters")
    assert "'no-params'" in line and "Flatten" in line
    if command == "run":  # the range test failed: the study it created is gone
        assert list_studies(f"journal:{tmp_path / 'optuna.journal'}") == []
        _one_line(_invoke(["status"], env), "no studies in this storage yet")


def test_a_study_that_never_started_is_created_afresh(tmp_path) -> None:
    """After a failed range test the next run, with a fixed file, starts the study cleanly."""
    f, env = _home(tmp_path, "tests.tiny_workloads:no_params", n_trials=2)
    _one_line(_invoke(["run", f, "--devices", "cpu", "--no-tracking"], env), "no trainable")
    f.write_text(f.read_text().replace("no_params", "blobs"))
    result = _invoke(["run", f, "--devices", "cpu", "--no-tracking"], env)
    assert result.exit_code == 0, result.output
    # both trials finished (the bracketing startup may have pruned one that diverged)
    assert re.search(r"study 's': (\d+) complete, (\d+) pruned", result.output), result.output
    done = re.search(r"study 's': (\d+) complete, (\d+) pruned", result.output)
    assert int(done[1]) + int(done[2]) == 2 and int(done[1]) >= 1


@pytest.mark.process
def test_supervised_workers_whose_trials_keep_failing_stop_the_study(tmp_path) -> None:
    """Workers whose trials fail 3 in a row exit with the workload's code and are not
    restarted; `run` ends the parent run FAILED and exits with that code."""
    f, env = _home(tmp_path, "tests.tiny_workloads:fails_eval")
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])  # workers import `tests`
    result = _invoke(["run", f, "--devices", "cpu", "--trials-per-device", "2"], env)
    assert result.exit_code == WorkloadError.exit_code, result.output
    assert result.output.strip().splitlines()[-1].startswith("error: workers stopped because")
    assert "exited with 3; 0 trial(s) re-queued" in result.output
    by_role, runs = _runs(tmp_path)
    assert by_role["study"].info.status == "FAILED"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert len(runs) - 1 <= 2 * 3 + 1  # each worker's streak (and one trial in flight), no restarts
