from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from lrsearch.cli import cli


def _run(*args: str):
    return CliRunner().invoke(cli, list(args), obj={})


def test_train_json_reports_result() -> None:
    result = _run(
        "train",
        "--workload",
        "tests.tiny_workloads:blobs",
        "--epochs",
        "2",
        "--max-lr",
        "0.2",
        "--json",
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["epochs"] == 2 and record["diverged"] is False
    assert record["val_metric"] > 50 and record["val_loss"] > 0 and record["seconds"] > 0
    assert record["schedule"]["kind"] == "one-cycle"


def test_train_text_output() -> None:
    result = _run("train", "-w", "tests.tiny_workloads:blobs", "--epochs", "1")
    assert result.exit_code == 0
    assert "val_accuracy=" in result.output and "finished after 1 epochs" in result.output


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--workload", "nope"], "unknown workload 'nope'"),
        (["--epochs", "0"], "--epochs"),
        (["--epochs", "-3"], "--epochs"),
        (["--max-lr", "0"], "--max-lr"),
        (["--div-factor", "0.5"], "div-factor"),
        (["--cycle-frac", "1.5"], "cycle-frac"),
        (["--annihilation", "0.1"], "annihilation"),
        (["--device", "cuda:7"], "--device"),
        (["--device", "tpu"], "unknown device"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args: list[str], needle: str) -> None:
    result = _run("train", "-w", "tests.tiny_workloads:blobs", "--epochs", "1", *args)
    assert result.exit_code != 0
    text = result.output.strip()
    assert needle in text, text
    assert "Traceback" not in text
    assert len(text.splitlines()) == 1 and text.startswith("error: ")


def test_debug_shows_the_traceback_and_plain_runs_do_not(tmp_path) -> None:
    def stderr(*args: str) -> tuple[int, str]:
        command = [sys.executable, "-m", "lrsearch.cli", *args, "status", "--study", "ghost"]
        env = {**os.environ, "LRSEARCH_HOME": str(tmp_path)}
        done = subprocess.run(
            command, check=False, capture_output=True, text=True, timeout=120, env=env
        )
        return done.returncode, done.stderr

    code, text = stderr("--debug")
    assert code != 0 and "Traceback (most recent call last)" in text, text
    assert "ghost" in text
    code, text = stderr()
    assert code != 0 and "Traceback" not in text
    assert text.strip().startswith("error: ") and len(text.strip().splitlines()) == 1


def test_train_reports_the_test_split_next_to_validation() -> None:
    result = _run("train", "-w", "digits-mlp", "--epochs", "2", "--json")
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["val_metric"] > 50 and record["test_metric"] > 50 and record["test_loss"] > 0
    text = _run("train", "-w", "digits-mlp", "--epochs", "1")
    assert text.exit_code == 0 and "val_accuracy=" in text.output
    assert "test_accuracy=" in text.output


def test_train_without_a_test_split_reports_none() -> None:
    result = _run("train", "-w", "tests.tiny_workloads:blobs", "--epochs", "1", "--json")
    assert result.exit_code == 0
    assert "test_metric" not in json.loads(result.output)
    text = _run("train", "-w", "tests.tiny_workloads:blobs", "--epochs", "1")
    assert "test_" not in text.output


def test_several_seeds_report_the_test_mean_and_std() -> None:
    result = _run("train", "-w", "digits-mlp", "--epochs", "1", "--seeds", "2")
    assert result.exit_code == 0, result.output
    summary = result.output.strip().splitlines()[-1]
    assert summary.startswith("over 2 seeds: val_accuracy=") and " test_accuracy=" in summary
    assert summary.count("±") == 2
    record = json.loads(
        _run("train", "-w", "digits-mlp", "--epochs", "1", "--seeds", "2", "--json").output
    )
    assert len(record["test_metric"]) == 2 and math.isfinite(record["test_metric_std"])


def test_each_seed_is_named_in_its_line_and_its_json_record() -> None:
    args = ["train", "-w", "tests.tiny_workloads:blobs", "--epochs", "1", "--seed", "5"]
    text = _run(*args, "--seeds", "2")
    assert text.exit_code == 0, text.output
    first, second, summary = text.output.strip().splitlines()
    assert " seed 5: finished after 1 epochs" in first
    assert " seed 6: finished after 1 epochs" in second
    assert summary.startswith("over 2 seeds: ")
    record = json.loads(_run(*args, "--seeds", "2", "--json").output)
    assert record["seeds"] == [5, 6]
    assert [run["seed"] for run in record["runs"]] == [5, 6]
    assert [run["val_metric"] for run in record["runs"]] == record["val_metric"]
    assert all("history" not in run and "test_metric" not in run for run in record["runs"])
    # the first seed alone is that same run, and says which seed it was
    single = json.loads(_run(*args, "--json").output)
    assert single["seed"] == 5 and single["val_metric"] == record["runs"][0]["val_metric"]
